"""The engine's forward pass and KV cache (engine/model.py): the same numbers as transformers'
GPT2LMHeadModel loading the very same files, in every checkpoint layout."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2cli.engine import threads
from gpt2cli.engine.kernels import gelu_new
from gpt2cli.session import load_model
from tests.support import models as modelfactory
from tests.support.reference import load_reference

LAYOUTS = {
    "hub-fp32": dict(n_layer=2),
    "prefixed-fp32-lm_head": dict(n_layer=3, prefix=True, lm_head=True, mask_buffers=False),
    "hub-fp16": dict(n_layer=4, dtype="float16"),
    "prefixed-bf16": dict(n_layer=2, prefix=True, dtype="bfloat16"),
    "sharded": dict(n_layer=3, shards=3),
    "odd-shape": dict(n_layer=2, n_head=3, n_embd=48, n_positions=100),
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def pair(request, tmp_path_factory):
    folder = modelfactory.write_model(tmp_path_factory.mktemp(request.param) / "m", seed=7, **LAYOUTS[request.param])
    return load_model(folder), load_reference(folder)


def torch_logits(ref, ids, past=None):
    """transformers' logits and its cache: `cache` since 5.x renamed `past_key_values` (kept until 5.40)."""
    import inspect

    import torch

    renamed = "cache" in inspect.signature(type(ref).forward).parameters
    with torch.no_grad():
        out = ref(torch.tensor(ids), use_cache=True, **{"cache" if renamed else "past_key_values": past})
    return out.logits.numpy(), (out.cache if renamed else out.past_key_values)


@pytest.fixture(params=["split", "one-thread"])
def engine_threads(request):
    """The prompt's forward pass split over two threads, or all of it on the caller."""
    threads.set_workers(2 if request.param == "split" else 1)
    yield request.param
    threads.set_workers(None)


def test_prefill_and_cached_decode_match_transformers(pair, engine_threads):
    ours, ref = pair
    rng = np.random.default_rng(0)
    ids = rng.integers(0, ours.config.vocab_size, (2, 60))
    theirs, past = torch_logits(ref, ids)
    cache = ours.new_cache(2)
    logits = ours.forward(ids, cache, all_logits=True)
    assert logits.dtype == np.float32
    assert np.abs(logits - theirs).max() < 1e-4
    # the usual prefill: the last layer runs only the last position, plus the others' keys and values
    last_cache = ours.new_cache(2)
    last = ours.forward(ids, last_cache)
    assert last.shape == (2, ours.config.vocab_size)
    assert np.abs(last - theirs[:, -1]).max() < 1e-4
    for _ in range(30):
        step = rng.integers(0, ours.config.vocab_size, (2, 1))
        theirs, past = torch_logits(ref, step, past)
        for c in (cache, last_cache):
            logits = ours.forward(step, c)
            assert logits.shape == (2, ours.config.vocab_size)
            assert np.abs(logits - theirs[:, -1]).max() < 1e-4


def test_greedy_continuation_is_token_identical_over_50_tokens(pair):
    import torch

    ours, ref = pair
    prompt = np.random.default_rng(1).integers(0, ours.config.vocab_size, (1, 8))
    cache = ours.new_cache(1)
    logits = ours.forward(prompt, cache)
    mine = []
    for _ in range(50):
        token = int(np.argmax(logits[0]))
        mine.append(token)
        logits = ours.forward(np.array([[token]]), cache)
    with torch.no_grad():
        out = ref.generate(
            torch.tensor(prompt), max_new_tokens=50, min_new_tokens=50, do_sample=False,
            pad_token_id=ours.config.eos_token_id, eos_token_id=None,
        )
    assert mine == out[0, prompt.shape[1]:].tolist()


def test_kv_cache_decoding_equals_recomputing_the_whole_sequence(tiny_model):
    model = load_model(tiny_model)
    ids = np.random.default_rng(2).integers(0, model.config.vocab_size, (3, 40))
    cache = model.new_cache(3)
    model.forward(ids[:, :25], cache)
    stepped = [model.forward(ids[:, t : t + 1], cache) for t in range(25, 40)]
    full = model.forward(ids, model.new_cache(3), all_logits=True)
    for i, t in enumerate(range(25, 40)):
        np.testing.assert_allclose(stepped[i], full[:, t], atol=1e-5)


def test_activations_stay_float32(tiny_model):
    model = load_model(tiny_model)
    cache = model.new_cache(2)
    h = model.hidden_states(np.array([[1, 2, 3], [4, 5, 6]]), cache)
    assert h.dtype == np.float32
    assert cache.k.dtype == np.float32 and cache.v.dtype == np.float32
    assert model.forward(np.array([[7], [8]]), cache).dtype == np.float32
    assert gelu_new(np.ones(4, dtype=np.float32)).dtype == np.float32


@pytest.mark.parametrize("tanh_form", [True, False])
def test_gelu_is_gpt2s_tanh_gelu_with_no_overflow_at_any_value(tanh_form, monkeypatch):
    # Either form the kernel picks for the CPU (0.5 x (1 + tanh(z)), or x / (1 + exp(-2z))) is GPT-2's GELU
    # to float32 rounding, and a very negative x gives -0.0 (or a float32 that rounds to it), never inf,
    # NaN or a warning.
    from gpt2cli.engine import kernels

    monkeypatch.setattr(kernels, "_GELU_TANH", tanh_form)
    x = np.concatenate([np.linspace(-30, 30, 60001), np.random.default_rng(0).standard_normal(5000) * 4]).astype(np.float32)
    x64 = x.astype(np.float64)
    want = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = gelu_new(x.copy())
        extremes = gelu_new(np.array([-3e4, -1e3, -50.0, -10.0, 0.0, 10.0, 1e3, 3e4], dtype=np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(extremes, [0, 0, 0, 0, 0, 10, 1e3, 3e4], atol=1e-30, rtol=1e-7)
    bias = np.linspace(-1, 1, 7).astype(np.float32)
    rows = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_allclose(gelu_new(rows.copy(), bias), gelu_new(rows + bias), rtol=0, atol=0)


def test_lm_head_layout_is_wte_transposed_exactly(monkeypatch):
    from gpt2cli.engine import kernels

    monkeypatch.setattr(kernels, "_TRANSPOSE_ROWS", 7)  # several blocks and a short last one over 50 rows
    wte = np.random.default_rng(3).standard_normal((50, 12)).astype(np.float32)
    w = kernels.lm_head_layout(wte)
    assert w.shape == (12, 50) and w.dtype == np.float32 and w.flags.c_contiguous
    np.testing.assert_array_equal(w, wte.T)


@pytest.mark.parametrize("rows", [1, 2, 3, 9, 14])
def test_lm_head_gives_x_times_wte_transposed_at_every_row_count(rows):
    from gpt2cli.engine import kernels

    rng = np.random.default_rng(rows)
    wte = rng.standard_normal((300, 16)).astype(np.float32)
    x = rng.standard_normal((rows, 16)).astype(np.float32)
    out = kernels.lm_head(x, kernels.lm_head_layout(wte))
    assert out.dtype == np.float32 and out.shape == (rows, 300)
    np.testing.assert_allclose(out, x.astype(np.float64) @ wte.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_gemm_rows_pad_to_a_multiple_of_8_only_where_that_measured_faster():
    from gpt2cli.engine.kernels import gemm_rows

    assert [gemm_rows(n) for n in (1, 2, 3, 7, 8, 9, 10, 15, 16, 17, 18, 30, 32, 33, 127, 128, 130)] == [
        1, 8, 8, 8, 8, 9, 16, 16, 16, 17, 24, 32, 32, 33, 128, 128, 130]  # fmt: skip


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 9, 14, 31])
def test_every_product_route_gives_x_times_w_as_its_own_c_contiguous_rows(rows, monkeypatch):
    # 1 row: a gemv; 2: a gemv per row over row blocks of the weight, partial sums added; 3 on: a GEMM
    # over rows padded with zeros (gemm_rows): the caller gets exactly its rows, contiguous, and the
    # padding changes nothing.
    from gpt2cli.engine import kernels

    monkeypatch.setattr(kernels, "_BLOCK_FLOATS", 7 * 24)  # 2 rows: 6 blocks of 7 weight rows, a short last one

    rng = np.random.default_rng(rows)
    w = rng.standard_normal((40, 24)).astype(np.float32)
    x = rng.standard_normal((rows, 40)).astype(np.float32)
    kept = x.copy()
    out = kernels.matmul(x, w)
    assert out.dtype == np.float32 and out.shape == (rows, 24) and out.flags.c_contiguous
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.astype(np.float64), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, kept)  # the input is read, never padded in place
    out += 1.0  # the result is the caller's to change in place (the bias add), padding or not
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.astype(np.float64) + 1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 3, 9])
def test_the_transposed_product_route_gives_x_times_w_at_every_row_count(rows, monkeypatch):
    from gpt2cli.engine import kernels

    monkeypatch.setattr(kernels, "_BLOCK_FLOATS", 64)  # several row blocks at 2 rows, a short last one
    rng = np.random.default_rng(rows)
    w = rng.standard_normal((50, 20)).astype(np.float32)  # [n_in, n_out], the checkpoint's layout
    x = rng.standard_normal((rows, 50)).astype(np.float32)
    w_t = kernels.transposed(w)
    assert w_t.shape == (20, 50) and w_t.flags.c_contiguous and w_t.dtype == np.float32
    np.testing.assert_array_equal(w_t, w.T)
    out = kernels.matmul_t(x, w_t)
    assert out.shape == (rows, 20) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_the_mlp_proj_copy_is_made_only_by_a_pass_that_is_not_split(tiny_model, monkeypatch):
    from gpt2cli.engine import model as model_module

    model = load_model(tiny_model)
    monkeypatch.setattr(model_module, "_SPLIT_ROWS", 4)  # a 6-token prompt runs split here
    if not model.splits(6):
        pytest.skip("this machine runs no pass split (one core, or OpenBLAS without a thread control)")
    cache = model.new_cache(1)
    model.hidden_states(np.array([[1, 2, 3, 4, 5, 6]]), cache)  # a split prefill (score's kind of pass)
    assert model._mlp_proj_t is None
    model.forward(np.array([[7]]), cache)  # a decoding step
    copies = model._mlp_proj_t
    assert copies is not None and len(copies) == model.config.n_layer
    for blk, copy in zip(model.weights.blocks, copies):
        np.testing.assert_array_equal(copy, blk.mlp_c_proj_weight.T)
        assert not np.shares_memory(copy, blk.mlp_c_proj_weight)
    model.forward(np.array([[8]]), cache)
    assert model._mlp_proj_t is copies  # made once


def test_the_lm_head_copy_is_made_once_and_only_when_logits_are_asked_for(tiny_model):
    model = load_model(tiny_model)
    cache = model.new_cache(1)
    model.hidden_states(np.array([[1, 2, 3]]), cache)
    assert model._lm_head is None  # tokenizing, prefilling: no copy of wte yet
    first = model.forward(np.array([[4]]), cache)
    made = model._lm_head
    assert made is not None and not np.shares_memory(made, model.weights.wte)
    again = model.logits(np.zeros((1, model.config.n_embd), np.float32))
    assert model._lm_head is made and again.dtype == first.dtype == np.float32


def test_fp16_weights_are_upcast_and_fp32_weights_are_memory_mapped(tmp_path):
    fp16 = load_model(modelfactory.write_model(tmp_path / "h", dtype="float16"))
    assert fp16.weights.wte.dtype == np.float32
    fp32 = load_model(modelfactory.write_model(tmp_path / "f"))
    assert isinstance(fp32.weights.wte.base, np.memmap) or isinstance(fp32.weights.wte, np.memmap)
    assert not fp32.weights.wte.flags.writeable


def test_reorder_copies_only_the_positions_after_the_shared_prefix():
    from gpt2cli.engine.cache import KVCache
    from gpt2cli.spec import GPT2Config

    cfg = GPT2Config(vocab_size=10, n_positions=8, n_embd=4, n_layer=2, n_head=2)
    cache = KVCache(cfg, batch=4, capacity=8)
    cache.length = 6
    cache.k[:] = np.arange(4, dtype=np.float32)[None, :, None, None, None]  # row r holds r everywhere
    cache.v[:] = -cache.k
    # rows 0 and 1 swap (a cycle), row 2 takes row 0's old contents, row 3 stays
    cache.reorder(np.array([1, 0, 0, 3]), same_prefix=np.array([2, 3, 4, 0]))
    expect = {0: [0, 0, 1, 1, 1, 1], 1: [1, 1, 1, 0, 0, 0], 2: [2, 2, 2, 2, 0, 0], 3: [3] * 6}
    for row, values in expect.items():
        np.testing.assert_array_equal(cache.k[:, row, :, :6, :], np.broadcast_to(np.array(values, np.float32)[:, None], (2, 2, 6, 2)))
        np.testing.assert_array_equal(cache.v[:, row, :, :6, :], -cache.k[:, row, :, :6, :])
    # nothing past the length is touched
    np.testing.assert_array_equal(cache.k[:, :, :, 6:], np.broadcast_to(np.arange(4, dtype=np.float32)[None, :, None, None, None], (2, 4, 2, 2, 2)))


def test_repeat_and_reorder_make_rows_follow_their_parents(tiny_model):
    model = load_model(tiny_model)
    prompt = np.array([[5, 6, 7, 8]])
    one = model.new_cache(1)
    model.forward(prompt, one)
    many = one.repeat(3)
    steps = np.array([[1], [2], [3]])
    logits = model.forward(steps, many)
    many.reorder(np.array([2, 2, 0]))
    after = model.forward(np.array([[9], [9], [9]]), many)
    for row, parent in enumerate([2, 2, 0]):
        sequence = np.concatenate([prompt, steps[parent : parent + 1], [[9]]], axis=1)  # [1, 6]
        np.testing.assert_allclose(after[row], model.forward(sequence, model.new_cache(1))[0], atol=1e-5)
    assert logits.shape == (3, model.config.vocab_size)


@pytest.mark.parametrize("rows, vocab", [(1, 50257), (3, 1000), (17, 5), (2, 1)])
def test_token_logprobs_are_log_softmax_bit_for_bit(rows, vocab):
    # generate's and batch's per-token log-probabilities come from token_logprobs; score's, beams'
    # and everything else's from log_softmax: the same token must get the same bits either way.
    from gpt2cli.engine.kernels import log_softmax, token_logprobs

    rng = np.random.default_rng(rows * vocab)
    for scale in (0.1, 3.0, 40.0):
        logits = (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)
        tokens = rng.integers(0, vocab, size=rows)
        got = token_logprobs(logits, tokens)
        assert got.dtype == np.float32 and got.shape == (rows,)
        np.testing.assert_array_equal(got, log_softmax(logits)[np.arange(rows), tokens])

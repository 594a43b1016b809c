"""Keys and values take only the memory a run can reach, and a run that cannot fit is refused up front.

The refusal is tested with a patched available-memory figure and tiny models: no test allocates
more than a few megabytes.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpt2cli import request as request_module
from gpt2cli import session as session_module
from gpt2cli.decoding import beam as beam_module
from gpt2cli.decoding import generate as generate_module
from gpt2cli.decoding.beam import beam_search
from gpt2cli.decoding.generate import generate
from gpt2cli.decoding.sampling import Sampler, SamplingOptions
from gpt2cli.engine.cache import kv_cache_bytes
from gpt2cli.engine.model import layout_copy_bytes
from gpt2cli.session import Session, load_config, load_model
from gpt2cli.spec import GPT2Config
from tests.support import models
from tests.support.cli import assert_one_error_line, run_in_process

GPT2_SMALL = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


class Capacities:
    """Wraps a model's new_cache: records (batch, capacity) of every cache a run allocates."""

    def __init__(self, model, monkeypatch, force_full: bool = False):
        self.seen: list[tuple[int, int]] = []
        new_cache = model.new_cache

        def recording(batch=1, capacity=None):
            cache = new_cache(batch, None if force_full else capacity)
            self.seen.append((cache.batch, cache.capacity))
            return cache

        monkeypatch.setattr(model, "new_cache", recording)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return models.write_model(tmp_path_factory.mktemp("mem") / "m", n_layer=2, n_embd=64, n_positions=32, seed=4)


def _tokens(model, prompt, n, samples, monkeypatch, force_full=False):
    caches = Capacities(model, monkeypatch, force_full)
    sampler = Sampler(SamplingOptions(1.0, 0, 1.0), seed=3)
    steps = list(generate(model, prompt, sampler, n, num_samples=samples, ignore_eos=True))
    monkeypatch.undo()
    return np.stack([s.tokens for s in steps]), caches.seen


def test_the_cache_of_a_short_run_holds_prompt_plus_new_tokens_not_the_context(folder, monkeypatch):
    model = load_model(folder)
    _, seen = _tokens(model, [5, 6, 7, 8, 9], 4, 3, monkeypatch)
    assert seen == [(1, 5 + 4 - 1)]  # one prefill cache, shared by 3 rows
    caches = Capacities(model, monkeypatch)
    beam_search(model, [5, 6, 7, 8, 9], num_beams=3, max_new_tokens=4)
    assert caches.seen == [(1, 5 + 4 - 1)]


def test_a_slide_starts_a_cache_of_what_is_left_not_of_the_whole_context(folder, monkeypatch):
    model = load_model(folder)  # context 32: a 20-token prompt and 24 new tokens slide once, onto 16
    prompt = list(range(1, 21))
    tokens, seen = _tokens(model, prompt, 24, 2, monkeypatch)
    # full (20 + 12 fed back) when step 12 is chosen: it slides onto 16; steps 13..23 are left,
    # and all but the last feed a token back
    assert seen == [(1, 32), (2, 16 + 10)]
    same, _ = _tokens(model, prompt, 24, 2, monkeypatch, force_full=True)
    np.testing.assert_array_equal(tokens, same)


def test_the_estimate_is_two_tensors_of_n_embd_floats_per_layer_position_and_row():
    per_position = 2 * 12 * 768 * 4
    assert kv_cache_bytes(GPT2_SMALL, 1, 1) == per_position
    # the prompt once, each row's own new positions (the last token chosen is never fed back)
    assert generate_module.cache_bytes(GPT2_SMALL, 10, 5, 4) == (10 + 4 * 4) * per_position
    assert generate_module.cache_bytes(GPT2_SMALL, 10, 5, 1) == 14 * per_position
    assert beam_module.cache_bytes(GPT2_SMALL, 1000, 24, 256) == (1000 + 256 * 23) * per_position
    # -N 64 with a 1000-token prompt and -n 100 slides: then every row holds its own window
    assert generate_module.cache_bytes(GPT2_SMALL, 1000, 100, 64) == 64 * (512 + 100) * per_position


def test_samples_and_beams_hold_the_prompt_once(folder, monkeypatch):
    model = load_model(folder)
    prompt = [5, 6, 7, 8, 9, 10, 11, 12]
    for run in (
        lambda: list(generate(model, prompt, Sampler(SamplingOptions(1.0, 0, 1.0), seed=1), 6, num_samples=4)),
        lambda: beam_search(model, prompt, num_beams=4, max_new_tokens=6),
    ):
        caches = []
        forward = model.forward
        monkeypatch.setattr(model, "forward", lambda tokens, cache, **kw: (caches.append(cache), forward(tokens, cache, **kw))[1])
        run()
        monkeypatch.undo()
        rows = caches[-1]
        assert rows.batch == 4 and rows.prefix.k.shape[1] == 1 and rows.prefix.length == len(prompt)
        assert rows.own.k.shape[3] == 6 - 1  # each row's own new positions, nothing of the prompt


def test_shared_prompt_logits_equal_copied_prompt_logits_to_float_rounding(folder):
    model = load_model(folder)
    rng = np.random.default_rng(0)
    one = model.new_cache(1, 30)
    model.forward(rng.integers(0, 250, size=(1, 18)), one)
    copied, shared = one.repeat(5), one.share(5)
    for step in range(10):
        tokens = rng.integers(0, 250, size=(5, 1))
        a, b = model.forward(tokens, copied), model.forward(tokens, shared)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
        if step == 4:  # beam search moves rows between steps
            copied.reorder(np.array([2, 2, 0, 4, 1]))
            shared.reorder(np.array([2, 2, 0, 4, 1]), same_prefix=np.full(5, 18))  # rows agree on the prompt


@pytest.fixture
def little_memory(monkeypatch):
    """2 MB available, and loading weights fails the test: the refusal must come before."""
    monkeypatch.setattr(request_module, "available_memory", lambda: 2_000_000)

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the memory check")

    monkeypatch.setattr(session_module, "load_weights", no_weights)


@pytest.mark.parametrize(
    "args, flags",
    [
        (["generate", "-N", "256", "-n", "20"], ("--num-samples 256", "--max-tokens 20", "lower --num-samples or --max-tokens")),
        (["beam", "-b", "256", "-n", "20"], ("--beams 256", "--max-tokens 20", "lower --beams or --max-tokens")),
    ],
)
def test_a_run_that_cannot_fit_is_a_usage_error_before_the_weights_load(folder, little_memory, args, flags):
    r, _ = run_in_process([*args, "-m", folder, "a b c d"])
    line = assert_one_error_line(r, 2)
    for flag in flags:
        assert flag in line, line
    # 2 layers x 64 floats x 2 x 4 bytes = 1 KiB per position per row; "a b c d" is 7 tiny-BPE tokens
    assert "with a 7-token prompt" in line, line
    copies = layout_copy_bytes(load_config(folder))
    assert f"needs ~{(7 + 256 * 19) * 1024 / 1e6:.1f} MB for keys and values" in line, line
    assert f"(besides ~{copies / 1e6:.1f} MB for the engine's weight copies), {(2_000_000 - copies) / 1e6:.1f} MB available for them" in line, line


def test_the_copies_are_what_a_decoding_run_makes_and_are_counted_once(folder):
    session = Session.open(folder)
    expected = layout_copy_bytes(session.config)
    assert session.copies_to_come() == expected  # before the weights load
    model = session.model
    assert model.pending_copy_bytes() == expected
    list(session.generate([5, 6, 7], Sampler(SamplingOptions(0.0, 0, 1.0)), 2))
    made = model._lm_head.nbytes + sum(w.nbytes for w in model._mlp_proj_t)  # the copies themselves
    assert made == expected and model.pending_copy_bytes() == session.copies_to_come() == 0


@pytest.mark.parametrize("kind", ["generate", "beam"])
def test_keys_and_values_that_fit_only_without_the_copies_are_refused(folder, monkeypatch, kind):
    config = load_config(folder)
    copies = layout_copy_bytes(config)
    kv = (generate_module.cache_bytes(config, 7, 5, 4) if kind == "generate" else beam_module.cache_bytes(config, 7, 5, 4))
    args = ["generate", "-N", "4", "--seed", "1"] if kind == "generate" else ["beam", "-b", "4"]
    monkeypatch.setattr(request_module, "available_memory", lambda: kv + copies - 1)  # either alone fits
    r, _ = run_in_process([*args, "-n", "5", "-m", folder, "a b c d"])
    line = assert_one_error_line(r, 2)
    assert "for the engine's weight copies" in line and "lower" in line, line
    monkeypatch.setattr(request_module, "available_memory", lambda: kv + copies)  # both, exactly
    r, _ = run_in_process([*args, "-n", "5", "-m", folder, "a b c d"])
    assert r.code == 0, r.err


def test_copies_that_cannot_fit_by_themselves_are_an_error_no_option_can_fix(folder, monkeypatch):
    copies = layout_copy_bytes(load_config(folder))
    monkeypatch.setattr(request_module, "available_memory", lambda: copies - 1)
    r, _ = run_in_process(["generate", "-n", "1", "-m", folder, "a"])
    line = assert_one_error_line(r, 2)
    assert "free memory or use a smaller model" in line and "lower" not in line, line


def test_a_run_that_fits_goes_ahead(folder, monkeypatch):
    monkeypatch.setattr(request_module, "available_memory", lambda: 2_000_000)
    r, _ = run_in_process(["generate", "-m", folder, "-N", "4", "-n", "5", "--seed", "1", "a b c d"])
    assert r.code == 0, r.err


def test_unknown_available_memory_checks_nothing(folder, monkeypatch):
    monkeypatch.setattr(request_module, "available_memory", lambda: None)
    r, _ = run_in_process(["generate", "-m", folder, "-N", "64", "-n", "5", "--seed", "1", "a b c d"])
    assert r.code == 0, r.err


def test_available_memory_reads_memavailable():
    available = request_module.available_memory()
    try:
        text = open("/proc/meminfo").read()
    except OSError:
        assert available is None
        return
    line = next(x for x in text.splitlines() if x.startswith("MemAvailable:"))
    assert abs(available - int(line.split()[1]) * 1024) < 512 * 2**20  # read a moment apart

"""Continuous batching (gpt2cli.batch.engine): records decode together in slots at their own
positions, prompts starting together are prefilled in one pass; each record's result is the
one-at-a-time result (the same text and tokens, log-probabilities to rounding), whatever shares its batch.

The one-at-a-time path (--batch-size 1) is generate's own code: test_batch.py checks it against the
generate command bit for bit.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from gpt2cli.batch.engine import ContinuousBatch, Job
from gpt2cli.batch.local import job_for, results_of
from gpt2cli.batch.records import Record
from gpt2cli.engine.cache import SlotCache
from gpt2cli.engine.model import layout_copy_bytes
from gpt2cli.request import Request
from gpt2cli.session import Session
from tests.support import models as modelfactory
from tests.support.cli import assert_one_error_line, run
from tests.support.records import assert_same_record

DEFAULTS = Request(max_tokens=20)


@pytest.fixture(scope="module")
def eos_model(tmp_path_factory):
    """A model that often ends on <|endoftext|>, so rows finish at different steps."""
    return modelfactory.write_model(tmp_path_factory.mktemp("cb") / "eos", n_layer=2, seed=5, eos_bias=1.0)


def mixed_records(n: int, seed: int = 0) -> list[Record]:
    """Prompts of 1 to ~60 tokens, greedy and sampled, short and long, with stops and ignore_eos."""
    rng = random.Random(seed)
    words = ["the", "cat", "and", "world", "on", "is", "there", "x", "in", "or"]
    records = []
    for i in range(n):
        settings: dict = {"max_tokens": rng.choice([1, 2, 5, 17, 40])}
        kind = i % 5
        if kind == 0:
            settings["temperature"] = 0.0
        elif kind == 1:
            settings.update(seed=rng.randrange(1000), top_k=rng.choice([0, 5, 40]))
        elif kind == 2:
            settings.update(top_p=0.8, temperature=0.7)
        elif kind == 3:
            settings.update(seed=rng.randrange(1000), top_k=0, stop=list("etaoinshrd "), repetition_penalty=1.3, no_repeat_ngram=2)
        else:
            settings.update(ignore_eos=True, min_p=0.05)
        prompt = " ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 12, 30])))
        records.append(Record(i, prompt, settings, i + 1))
    return records


def run_all(session: Session, records, batch_size: int) -> dict:
    out = {}
    for index, result in results_of(session, records, DEFAULTS, 7, False, None, False, batch_size):
        assert index not in out
        out[index] = result
    return out


def test_rows_at_different_positions_match_single_rows(tiny_model):
    model = Session.open(tiny_model).model
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, 250, size=n)) for n in (3, 9, 1, 20, 2)]
    cache = SlotCache(model.config, 6, 64)
    singles, tokens = [], []
    for slot, prompt in enumerate(prompts):
        first = model.forward(np.asarray([prompt]), cache.slot(slot))[0]
        cache.lengths[slot] = len(prompt)
        single = model.new_cache(1, 64)
        assert np.array_equal(model.forward(np.asarray([prompt]), single)[0], first)  # the prefill is a single run's
        singles.append(single)
        tokens.append(int(first.argmax()))
    for _ in range(6):
        logits = model.forward(np.asarray(tokens)[:, None], cache)  # slots 0..4 step, slot 5 stays empty
        assert logits.dtype == np.float32 and logits.shape == (len(prompts), model.config.vocab_size)
        for row, single in enumerate(singles):
            alone = model.forward(np.asarray([[tokens[row]]]), single)[0]
            np.testing.assert_allclose(logits[row], alone, rtol=0, atol=1e-5)
        tokens = [int(x) for x in logits.argmax(axis=-1)]
    assert cache.lengths.tolist() == [len(p) + 6 for p in prompts] + [0]
    before = cache.lengths.copy()
    for bad in (np.zeros((2, 2), dtype=np.int64), np.zeros((7, 1), dtype=np.int64)):  # 2 tokens a row; 7 rows, 6 slots
        with pytest.raises(ValueError, match="one token per row"):
            model.forward(bad, cache)
    assert np.array_equal(cache.lengths, before) and cache.mask is None


def test_prompts_prefilled_together_equal_each_prefilled_alone(tiny_model):
    """Right-padded to the longest, in one pass: each row's own positions (hidden states, keys and
    values) are its single prefill's, to rounding (one GEMM over all rows rounds as a GEMM does)."""
    model = Session.open(tiny_model).model
    rng = np.random.default_rng(1)
    prompts = [list(rng.integers(0, 250, size=n)) for n in (7, 1, 30, 12)]
    cache = SlotCache(model.config, 6, 64)
    h, lengths = model.padded_hidden_states(prompts, cache.rows(1, 5))  # slots 1..4
    assert h.dtype == np.float32 and h.shape == (4, 30, model.config.n_embd) and lengths.tolist() == [7, 1, 30, 12]
    assert not cache.k[:, [0, 5]].any()  # the slots around them are untouched
    for row, prompt in enumerate(prompts):
        single = model.new_cache(1, 64)
        alone = model.hidden_states(np.asarray([prompt]), single)[0]  # [T, n_embd]
        np.testing.assert_allclose(h[row, : len(prompt)], alone, rtol=0, atol=1e-5)
        n = len(prompt)
        np.testing.assert_allclose(cache.k[:, 1 + row, :, :n], single.k[:, 0, :, :n], rtol=0, atol=1e-5)
        np.testing.assert_allclose(cache.v[:, 1 + row, :, :n], single.v[:, 0, :, :n], rtol=0, atol=1e-5)


def test_a_slot_cache_grows_to_what_is_asked_keeping_every_position_it_holds(tiny_model):
    model = Session.open(tiny_model).model
    rng = np.random.default_rng(2)
    cache = SlotCache(model.config, 3, 0, limit=200)
    assert cache.capacity == 0
    cache.reserve(10)
    assert cache.capacity == 64  # a step of positions, not the 200 it may reach
    prompts = [list(rng.integers(0, 250, size=n)) for n in (9, 4)]
    for slot, prompt in enumerate(prompts):
        model.forward(np.asarray([prompt]), cache.slot(slot))
        cache.lengths[slot] = len(prompt)
    for _ in range(3):
        model.forward(rng.integers(0, 250, size=(2, 1)), cache)
    k, v = cache.k[:, :2, :, :12].copy(), cache.v[:, :2, :, :12].copy()
    cache.reserve(64)
    assert cache.capacity == 64  # enough already: nothing moves
    cache.reserve(65)
    assert cache.capacity == 128  # doubled
    assert np.array_equal(cache.k[:, :2, :, :12], k) and np.array_equal(cache.v[:, :2, :, :12], v)
    assert not cache.k[:, :, :, 12:].any() and not cache.k[:, 2].any()
    cache.reserve(150)
    assert cache.capacity == 200  # doubling stops at the limit
    with pytest.raises(ValueError, match="at most 200"):
        cache.reserve(201)
    assert cache.capacity == 200 and np.array_equal(cache.k[:, :2, :, :12], k)


def test_a_batch_whose_later_records_need_more_positions_grows_its_cache_and_matches_single_runs(tiny_model, monkeypatch):
    """Short records first, then longer ones: the cache grows mid-run, between steps of rows still
    decoding, and every record still gives exactly its `-b 1` result (tokens and text)."""
    session = Session.open(tiny_model)
    records = [Record(i, " ".join(["the"] * n), {"max_tokens": m, "temperature": 0.0}, i + 1)
               for i, (n, m) in enumerate([(2, 20), (1, 3), (3, 5), (40, 30), (2, 60), (70, 40)])]  # fmt: skip
    seen = []
    original = SlotCache.reserve

    def recording(cache, positions):
        original(cache, positions)
        seen.append(cache.capacity)

    monkeypatch.setattr(SlotCache, "reserve", recording)
    batched = run_all(session, records, 2)
    monkeypatch.undo()
    assert seen[0] == 64 and max(seen) >= 128 and max(seen) < session.config.n_positions + 1
    single = run_all(session, records, 1)
    for i in range(len(records)):
        assert batched[i]["tokens"] == single[i]["tokens"] and batched[i]["text"] == single[i]["text"], i


def test_prefill_groups_bound_the_padding_and_the_pass_size():
    from gpt2cli.batch.engine import prefill_groups

    assert prefill_groups([]) == []
    assert prefill_groups([32] * 32) == [list(range(32))]  # 1024 positions, no padding: one pass
    lengths = [8, 64, 9, 60, 30, 33, 1000, 5, 31, 2]
    groups = prefill_groups(lengths, budget=2048, padding=0.25)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        longest, real = max(lengths[i] for i in g), sum(lengths[i] for i in g)
        assert len(g) == 1 or (longest * len(g) <= 2048 and longest * len(g) - real <= 0.25 * longest * len(g))
    assert [6] in groups  # the 1000-token prompt is not padded into anything
    assert len(prefill_groups([100] * 50, budget=1000)) == 5  # 10 rows of 100 per pass


@pytest.mark.parametrize("batch_size", [2, 3, 8, 32])
def test_records_of_very_different_lengths_each_equal_their_single_run(eos_model, batch_size):
    session = Session.open(eos_model)
    records = mixed_records(40)
    alone = run_all(session, records, 1)
    together = run_all(session, records, batch_size)
    assert set(together) == set(alone) == set(range(len(records)))
    reasons = {r["finish_reason"] for r in alone.values()}
    assert {"eos", "length", "stop"} <= reasons  # rows really finish at different steps, for each reason
    for index, expected in alone.items():
        assert_same_record(together[index], expected, label=index)


def test_a_records_tokens_do_not_depend_on_what_shares_its_batch(eos_model):
    session = Session.open(eos_model)
    records = mixed_records(30, seed=1)
    reference = {r.id: res for r, res in zip(records, (run_all(session, records, 4)[i] for i in range(30)))}
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    for batch_size, order in ((2, records), (5, shuffled), (16, shuffled[:11])):
        got = run_all(session, order, batch_size)
        for index, result in got.items():
            assert_same_record(result, reference[order[index].id], label=(batch_size, order[index].id))


def test_slots_are_refilled_and_compacted(tiny_model):
    """More records than slots, finishing at different steps: every record once, and the engine never
    steps an empty slot (the active rows stay in slots 0..n-1)."""
    session = Session.open(tiny_model)
    batch = ContinuousBatch(session, 3)
    stepped = []
    real_forward = batch.model.forward

    def forward(tokens, cache, **kw):
        if cache is batch.cache:  # a step of the slots (a prefill runs on a view of one or more slots)
            assert (cache.lengths[: len(tokens)] > 0).all() and (cache.lengths[len(tokens) :] == 0).all()
            stepped.append(len(tokens))
        return real_forward(tokens, cache, **kw)

    batch.model.forward = forward
    lengths = [9, 1, 4, 2, 7, 3, 1, 5]
    jobs = [Job(i, i, [5 + i, 6], 2, Request(max_tokens=n, temperature=0.0, ignore_eos=True)) for i, n in enumerate(lengths)]
    done = dict(batch.run(jobs))
    assert sorted(done) == list(range(len(lengths)))
    assert [done[i]["completion_tokens"] for i in range(len(lengths))] == lengths
    assert max(stepped) == 3 and stepped[-1] == 1
    assert sum(stepped) == sum(n - 1 for n in lengths)  # each token after the first is one row of one step


def test_prompts_that_start_together_are_prefilled_in_one_pass(tiny_model):
    """8 slots, 12 records of similar prompts: the first 8 prompts in one pass, the 4 that follow
    (their predecessors finish together) in another; each record still equals its single run."""
    session = Session.open(tiny_model)
    batch = ContinuousBatch(session, 8)
    passes = []
    real = batch.model.padded_hidden_states

    def padded(rows, cache):
        passes.append(len(rows))
        return real(rows, cache)

    batch.model.padded_hidden_states = padded
    records = [Record(i, "the cat sat " * (3 + i % 3), {"max_tokens": 4, "ignore_eos": True, "temperature": 0.0}, i + 1) for i in range(12)]
    jobs = [job_for(session, r, DEFAULTS, 7, False, i) for i, r in enumerate(records)]
    together = dict(batch.run(jobs))
    assert passes == [8, 4]
    alone = run_all(session, records, 1)
    for index, expected in alone.items():
        assert_same_record(together[index], expected, label=index)


def test_records_the_batch_cannot_hold_run_alone_bit_for_bit(tiny_model):
    """Contrastive search and a record that slides past the context (128 positions) run through the
    single-run code inside a batched run."""
    session = Session.open(tiny_model)
    records = [
        Record("c", "Once upon", {"penalty_alpha": 0.6, "top_k": 3, "max_tokens": 8}, 1),
        Record("slide", "the cat " * 20, {"max_tokens": 120, "temperature": 0.0}, 2),
        Record("plain", "hello", {"max_tokens": 6, "temperature": 0.0}, 3),
    ]
    alone, together = run_all(session, records, 1), run_all(session, records, 8)
    assert together[0] == alone[0] and together[1] == alone[1]
    assert_same_record(together[2], alone[2])


def test_ordered_holds_results_back_to_input_order(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [{"id": "long", "prompt": "a", "max_tokens": 40, "ignore_eos": True}]
    lines += [{"id": f"short{i}", "prompt": "b", "max_tokens": 2, "ignore_eos": True} for i in range(5)]
    source.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    finish_order = run("batch", source, "-m", tiny_model, "-b", "4")
    assert finish_order.code == 0, finish_order.err
    ids = [json.loads(x)["id"] for x in finish_order.stdout.splitlines()]
    assert sorted(ids) == sorted(x["id"] for x in lines) and ids[0] != "long"  # written as they finish
    ordered = run("batch", source, "-m", tiny_model, "-b", "4", "--ordered")
    assert ordered.code == 0, ordered.err
    assert [json.loads(x)["id"] for x in ordered.stdout.splitlines()] == [x["id"] for x in lines]


def test_a_batch_size_that_cannot_fit_in_memory_is_refused_up_front(tiny_model):
    r = run("batch", "-", "-m", tiny_model, "-b", "100000000", stdin='{"prompt": "x"}\n')
    message = assert_one_error_line(r, 2)
    assert "--batch-size" in message and "GB" in message and "available" in message
    bad = run("batch", "-", "-m", tiny_model, "-b", "0", stdin='{"prompt": "x"}\n')
    assert "--batch-size" in assert_one_error_line(bad, 2)


def test_on_a_terminal_progress_shows_what_is_left_and_the_memory_reserved(tiny_model, tmp_path):
    from tests.support.cli import run_in_terminal

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"p {i}", "max_tokens": 3}) + "\n" for i in range(12)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    shown, code = run_in_terminal("batch", str(source), "-m", str(tiny_model), "-b", "4", "-o", str(out), columns=120)
    assert code == 0, shown
    assert "up to 4 records decode together" in shown and "GB" in shown
    assert "12 done" in shown and "0 left, ETA" in shown and "tokens/s" in shown
    assert len(out.read_text(encoding="utf-8").splitlines()) == 12  # results in the file, progress on the terminal only


def test_the_default_batch_size_leaves_half_the_memory_free(tiny_model, monkeypatch):
    from gpt2cli.batch import engine
    from gpt2cli.engine.cache import kv_cache_bytes

    config = Session.open(tiny_model).config
    per_slot = kv_cache_bytes(config, 1, config.n_positions)
    copies = layout_copy_bytes(config)  # not for keys and values: the engine makes them at the first step
    monkeypatch.setattr(engine, "available_memory", lambda: None)
    assert engine.default_batch_size(config) == engine.DEFAULT_SLOTS == 32
    monkeypatch.setattr(engine, "available_memory", lambda: copies + 64 * per_slot)
    assert engine.default_batch_size(config) == 32
    monkeypatch.setattr(engine, "available_memory", lambda: copies + 64 * per_slot - 1)  # the copies count
    assert engine.default_batch_size(config) == 16
    monkeypatch.setattr(engine, "available_memory", lambda: copies + 20 * per_slot)  # 32 slots would take more than half
    assert engine.default_batch_size(config) == 8
    monkeypatch.setattr(engine, "available_memory", lambda: copies + per_slot)
    assert engine.default_batch_size(config) == 1


def test_a_batch_size_is_checked_with_the_engines_weight_copies_beside_it(tiny_model, monkeypatch):
    from gpt2cli.batch import engine
    from gpt2cli.engine.cache import kv_cache_bytes
    from gpt2cli.errors import OptionError, UsageError

    config = Session.open(tiny_model).config
    kv, copies = kv_cache_bytes(config, 8, config.n_positions), layout_copy_bytes(config)
    monkeypatch.setattr(engine, "available_memory", lambda: kv + copies)
    assert engine.check_slots(config, 8) == kv
    monkeypatch.setattr(engine, "available_memory", lambda: kv + copies - 1)  # the keys and values alone would fit
    with pytest.raises(OptionError, match="besides ~.* GB for the engine's weight copies"):
        engine.check_slots(config, 8)
    assert engine.check_slots(config, 1) == kv_cache_bytes(config, 1, config.n_positions)  # -b 1: generate checks its own
    monkeypatch.setattr(engine, "available_memory", lambda: copies - 1)
    with pytest.raises(UsageError, match="free memory or use a smaller model"):
        engine.check_slots(config, 1)

"""`compare` prefills the prompt once and every row continues it: each decoding started from a shared
prefill is bit for bit the same decoding started alone, no row changes what the others start from,
and the whole table runs the prompt through the model once per kind of prefill (issue 13)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2cli.cli import render
from gpt2cli.decoding.beam import beam_search
from gpt2cli.decoding.contrastive import contrastive_search
from gpt2cli.decoding.generate import generate
from gpt2cli.decoding.prefix import Prefills, Prefix
from gpt2cli.decoding.group_beam import group_beam_search
from gpt2cli.decoding.sampling import Penalties, Sampler, SamplingOptions
from gpt2cli.decoding.strategies import DEFAULT_SET, parse
from gpt2cli.engine import threads
from gpt2cli.engine.model import GPT2Model
from gpt2cli.session import Session
from tests.support import models as modelfactory
from tests.support.cli import run, run_quick

# Beyond the default set: beam with no_repeat_ngram and its length settings, contrastive with other
# settings, diverse beam with 3 groups, nucleus sampling with a temperature, pure sampling.
EXTRA = (
    "beam:beams=3,no_repeat_ngram=3,length_penalty=2,early_stopping=true",
    "contrastive:alpha=0.4,k=3,repetition_penalty=1.1",
    "diverse-beam:beams=6,groups=3,penalty=1.0,no_repeat_ngram=2",
    "top-p:p=0.9,temperature=0.7",
    "sample:temperature=1.3",
)
SPECS = DEFAULT_SET + EXTRA
ONE_TOKEN = ""  # the empty prompt is <|endoftext|> alone
# 37 tokens of the tiny byte-level tokenizer: past the 32 rows from which a prefill is split over threads.
LONG = "She was walking home with a basket of apples."


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return modelfactory.write_model(tmp_path_factory.mktemp("prefill") / "m", seed=43, n_positions=96)


@pytest.fixture(scope="module")
def session(folder):
    return Session.open(folder)


@pytest.fixture(params=["1 token", "split prompt"])
def ids(request, session):
    if request.param == "1 token":
        ids = session.prompt_ids(ONE_TOKEN)
        assert len(ids) == 1
        return ids
    threads.set_workers(2)  # the long prompt's prefill split over two threads (where OpenBLAS can be pinned)
    request.addfinalizer(lambda: threads.set_workers(None))
    ids = session.prompt_ids(LONG)
    assert len(ids) >= 32 and (GPT2Model.splits(len(ids)) or not threads.can_pin_blas())
    return ids


def _snapshot(prefix) -> dict:
    arrays = {"k": prefix.cache.k, "v": prefix.cache.v, "logits": prefix.logits, "hidden": prefix.hidden}
    return {name: None if a is None else a.copy() for name, a in arrays.items()} | {"length": prefix.cache.length}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[n] == b[n] if not isinstance(a[n], np.ndarray) else np.array_equal(a[n], b[n]) for n in a
    )


@pytest.mark.parametrize("spec", SPECS)
def test_a_row_from_the_shared_prefill_equals_the_row_from_scratch(session, ids, spec):
    strategy = parse(spec).check()
    alone = session.compare(ids, strategy, 14, seed=5)
    shared = session.compare(ids, strategy, 14, seed=5, prefills=session.prefills(ids, 14))
    assert (shared.tokens, shared.text, shared.finish_reason) == (alone.tokens, alone.text, alone.finish_reason)
    assert shared.logprobs == alone.logprobs  # exact floats
    assert len(shared.tokens) == len(shared.logprobs) >= 1


def test_the_row_is_the_standalone_decoding_and_its_logprobs_within_rounding_of_a_whole_pass(session, ids):
    """The row's tokens are the standalone command's; its log-probabilities continue the prompt's prefill,
    so they differ from one pass over prompt + continuation only by float32 rounding (a few ulps)."""
    row = session.compare(ids, parse("greedy"), 14, prefills=session.prefills(ids, 14))
    run_ = session.generate(ids, Sampler(SamplingOptions(0.0, 0, 1.0)), 14)
    for _ in run_:
        pass
    alone = run_.rows[0]
    assert row.tokens == alone.tokens + ([session.eos] if alone.finish_reason == "eos" else [])
    seq = np.asarray([ids + row.tokens[:-1]])
    logits = session.model.forward(seq, session.model.new_cache(1, seq.shape[1]), all_logits=True)[0, len(ids) - 1 :]
    whole = logits - logits.max(axis=-1, keepdims=True)
    whole = (whole - np.log(np.exp(whole).sum(axis=-1, keepdims=True)))[np.arange(len(row.tokens)), row.tokens]
    np.testing.assert_allclose(row.logprobs, whole, rtol=1e-5, atol=1e-5)


def _steps(steps) -> list[tuple]:
    return [(s.tokens.tolist(), None if s.logprobs is None else s.logprobs.tolist(), s.eos.tolist()) for s in steps]


def test_each_decoding_function_gives_the_same_steps_and_scores_from_a_prefix(session, ids):
    """Below Session: every step's tokens and raw log-probabilities, every hypothesis' score, exactly."""
    model, n = session.model, 12
    shared = session.prefills(ids, n)
    last, every = shared.last_position(), shared.every_position()
    before = (_snapshot(last), _snapshot(every))
    for samples in (1, 3):
        for opts in (SamplingOptions(0.0, 0, 1.0), SamplingOptions(0.8, 20, 0.9)):
            runs = [
                _steps(generate(model, ids, Sampler(opts, 9), n, num_samples=samples, eos_token_id=session.eos,
                                logprobs=True, penalties=Penalties(1.2, 2), prefix=prefix))
                for prefix in (None, last)
            ]  # fmt: skip
            assert runs[0] == runs[1], (samples, opts)
    searches = [
        lambda prefix: beam_search(model, ids, num_beams=4, max_new_tokens=n, no_repeat_ngram_size=2, prefix=prefix),
        lambda prefix: group_beam_search(
            model, ids, num_beams=4, num_groups=2, diversity_penalty=0.5, max_new_tokens=n, prefix=prefix
        ),
    ]
    for search in searches:
        assert search(None) == search(last)  # Hypothesis: tokens, score, logprob, finish_reason, exact
    contrastive = [
        _steps(contrastive_search(model, ids, penalty_alpha=0.6, top_k=4, max_new_tokens=n, logprobs=True, prefix=prefix))
        for prefix in (None, every)
    ]
    assert contrastive[0] == contrastive[1]
    assert _same(_snapshot(last), before[0]) and _same(_snapshot(every), before[1])


def test_no_row_changes_the_prefill_the_others_start_from(session, ids):
    shared = session.prefills(ids, 10)
    last, every = shared.last_position(), shared.every_position()
    before = (_snapshot(last), _snapshot(every))
    for spec in SPECS:
        session.compare(ids, parse(spec), 10, seed=3, prefills=shared)
        assert _same(_snapshot(last), before[0]) and _same(_snapshot(every), before[1]), spec
    assert shared.last_position() is last and shared.every_position() is every  # computed once each
    assert not last.cache.k.flags.writeable and not every.hidden.flags.writeable  # a write would raise


def test_a_prefix_of_another_prompt_or_too_small_is_refused(session):
    ids = session.prompt_ids("Hello")
    shared = session.prefills(ids, 4)
    sampler = Sampler(SamplingOptions(0.0, 0, 1.0))
    with pytest.raises(ValueError, match="another prompt"):
        generate(session.model, ids + [5], sampler, 3, prefix=shared.last_position())
    with pytest.raises(ValueError, match="positions"):
        beam_search(session.model, ids, num_beams=2, max_new_tokens=9, prefix=shared.last_position())
    with pytest.raises(ValueError, match="every position"):
        contrastive_search(session.model, ids, penalty_alpha=0.6, top_k=4, max_new_tokens=4, prefix=shared.last_position())


@pytest.fixture
def prompt_passes(monkeypatch):
    """The token counts of every pass that starts at position 0, i.e. that reads the prompt (GPT2Model's
    real _run_layers, which every pass over tokens goes through (forward, hidden_states,
    prefill_two_ways), wrapped in a counter)."""
    passes: list[int] = []
    real = GPT2Model._run_layers

    def counted(self, tokens, cache, *args, **kwargs):
        if cache.length == 0:
            passes.append(np.asarray(tokens).shape[1])
        return real(self, tokens, cache, *args, **kwargs)

    monkeypatch.setattr(GPT2Model, "_run_layers", counted)
    return passes


@pytest.mark.parametrize(
    "specs, passes",
    [
        # one pass: the last-position prefill that generate and beam search start from, and the rows'
        # log-probabilities continue
        (["greedy", "beam:beams=3,no_repeat_ngram=2", "top-p:p=0.9,temperature=0.7", "diverse-beam"], 1),
        # contrastive search compares candidates to every position's hidden state: the layers below the
        # last run once for both kinds of prefill, only the last layer twice (GPT2Model.prefill_two_ways)
        (list(DEFAULT_SET) + ["contrastive:alpha=0.4,k=3"], 1),
    ],
)
def test_compare_reads_the_prompt_once_for_the_whole_table(folder, prompt_passes, specs, passes):
    r = run_quick("compare", "-m", folder, "-n", "8", "--json", *[a for s in specs for a in ("-s", s)], LONG)
    assert r.code == 0, r.err
    prompt_tokens = json.loads(r.out)["prompt_tokens"]
    assert len(json.loads(r.out)["rows"]) == len(specs)
    assert prompt_passes == [prompt_tokens] * passes  # before: two per row (the decoding, then its logprobs)


def test_compare_prints_what_the_rows_from_scratch_give(folder, session):
    """The command's output (JSON and piped) for a fixed seed, against each row decoded alone."""
    ids = session.prompt_ids(LONG)
    specs = list(SPECS)
    args = ("compare", "-m", folder, "-n", "12", "--seed", "4", *[a for s in specs for a in ("-s", s)], LONG)
    alone = [session.compare(ids, parse(spec), 12, seed=4) for spec in specs]
    r = run(*args, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {"prompt_tokens": len(ids), "rows": [render.compared_record(c) for c in alone]}
    piped = run(*args)
    assert piped.code == 0, piped.err
    assert piped.stdout == "".join(f"{render.compared_heading(c)}\n{c.text}\n" for c in alone)


@pytest.mark.parametrize("length", [1, 5, 40])  # 40: a prompt long enough to be prefilled split over threads
def test_both_prefills_from_one_pass_equal_each_made_alone(session, length):
    model = session.model
    prompt = [(7 * i + 3) % 250 for i in range(length)]
    capacity = length + 4
    last_alone = Prefix.last_position(model, prompt, capacity)
    every_alone = Prefix.every_position(model, prompt, capacity)
    both = Prefills(model, prompt, capacity, both=True)
    for alone, shared in ((last_alone, both.last_position()), (every_alone, both.every_position())):
        assert np.array_equal(shared.logits, alone.logits) and shared.cache.length == alone.cache.length == length
        assert np.array_equal(shared.cache.k, alone.cache.k) and np.array_equal(shared.cache.v, alone.cache.v)
    assert np.array_equal(both.every_position().hidden, every_alone.hidden)

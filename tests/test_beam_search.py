"""Beam search (the library): hypotheses and scores identical to transformers' generate(num_beams=...)
on the very same random checkpoints, one batch per step, and its own checks of its options."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpt2cli.decoding import beam
from gpt2cli.decoding.beam import Hypothesis, beam_search, top_k
from gpt2cli.errors import UsageError
from gpt2cli.session import load_model
from tests.support.reference import greedy, load_reference

MAX_NEW = 12


@pytest.fixture(scope="module")
def models(beam_folders):
    """name -> (our model, transformers' model), both loaded from the same folder."""
    return {name: (load_model(folder), load_reference(folder)) for name, folder in beam_folders.items()}


def prompt_for(model, seed: int, length: int = 5) -> list[int]:
    return np.random.default_rng(seed).integers(0, model.config.eos_token_id, length).tolist()


def reference_beams(ref, prompt, *, num_beams, num_return, max_new_tokens, length_penalty, early_stopping, ngram):
    """transformers' hypotheses as (generated tokens up to and with the first eos, sequences_scores or None)."""
    import torch

    eos = ref.config.eos_token_id
    kwargs = {}
    if num_beams > 1:  # generate() runs greedy search for one beam and warns that these flags are unused
        kwargs = dict(length_penalty=length_penalty, early_stopping=early_stopping)
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            num_beams=num_beams,
            num_return_sequences=num_return,
            max_new_tokens=max_new_tokens,
            no_repeat_ngram_size=ngram,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=eos,
            eos_token_id=eos,
            **kwargs,
        )
    tokens = []
    for row in out.sequences[:, len(prompt) :].tolist():
        # Finished hypotheses are padded with pad_token_id (= eos here): keep up to the first eos.
        tokens.append(row[: row.index(eos) + 1] if eos in row else row)
    scores = getattr(out, "sequences_scores", None)  # greedy output has none
    return tokens, None if scores is None else scores.tolist()


@pytest.mark.parametrize(
    "num_beams,length_penalty,early_stopping,ngram",
    list(itertools.product([1, 2, 3, 4, 5, 6], [0.0, 1.0, 2.0], [True, False, "never"], [0, 3])),
)
@pytest.mark.parametrize("model_name", ["plain", "eos-biased"])
def test_beams_and_scores_match_transformers(models, model_name, num_beams, length_penalty, early_stopping, ngram):
    ours, ref = models[model_name]
    prompt = prompt_for(ours, seed=num_beams * 7 + ngram)
    opts = dict(max_new_tokens=MAX_NEW, length_penalty=length_penalty, early_stopping=early_stopping)
    hyps = beam_search(ours, prompt, num_beams=num_beams, no_repeat_ngram_size=ngram, num_return=num_beams, **opts)
    tokens, scores = reference_beams(
        ref, prompt, num_beams=num_beams, num_return=num_beams, ngram=ngram, **opts
    )
    assert [h.tokens for h in hyps] == tokens
    if scores is not None:
        np.testing.assert_allclose([h.score for h in hyps], scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("num_beams,early_stopping,ngram", [(2, False, 0), (4, "never", 0), (4, False, 2), (6, True, 3)])
def test_wide_vocabulary_beams_match_transformers(models, num_beams, early_stopping, ngram):
    # 4096 x beams scores a step: top_k searches only the groups that can hold a winner.
    ours, ref = models["wide-vocab"]
    assert ours.config.vocab_size * num_beams // beam._GROUP > 2 * (2 * num_beams)  # the grouped path (k = 2 x beams)
    prompt = prompt_for(ours, seed=40 + num_beams, length=6)
    opts = dict(max_new_tokens=16, length_penalty=1.0, early_stopping=early_stopping)
    hyps = beam_search(ours, prompt, num_beams=num_beams, no_repeat_ngram_size=ngram, num_return=num_beams, **opts)
    tokens, scores = reference_beams(ref, prompt, num_beams=num_beams, num_return=num_beams, ngram=ngram, **opts)
    assert [h.tokens for h in hyps] == tokens
    np.testing.assert_allclose([h.score for h in hyps], scores, atol=1e-4, rtol=0)


def reference_top_k(values: np.ndarray, k: int) -> list[int]:
    """The k largest by a full sort: value descending, then index ascending."""
    return np.lexsort((np.arange(len(values)), -values))[:k].tolist()


@pytest.mark.parametrize("n", [1, 7, 128, 300, 2048, 4 * 4096 + 37, 4 * 50257])
@pytest.mark.parametrize("k", [1, 2, 8, 12])
def test_top_k_is_a_full_sorts_first_k_with_ties_in_index_order(n, k):
    rng = np.random.default_rng(n * 31 + k)
    cases = {
        "distinct": rng.standard_normal(n).astype(np.float32),
        "few values": rng.integers(0, 5, n).astype(np.float32),  # ties at and around the k-th place
        "one value": np.full(n, -3.5, np.float32),
        "banned": np.where(rng.random(n) < 0.9, -np.inf, rng.standard_normal(n)).astype(np.float32),
        "all banned": np.full(n, -np.inf, np.float32),
        "late winners": np.concatenate([np.zeros(n - min(n, 40), np.float32), np.arange(min(n, 40), dtype=np.float32)]),
    }
    for name, values in cases.items():
        got = top_k(values, k)
        assert got.tolist() == reference_top_k(values, k), name
        assert np.all(values[got][:-1] >= values[got][1:]), name  # best first


def test_top_k_takes_winners_from_the_tail_past_the_last_whole_group():
    values = np.zeros(4 * 50257, np.float32)
    values[-3:] = [5.0, 7.0, 6.0]  # 50257 * 4 is not a multiple of the group size: these sit in the tail
    values[1000] = 6.0
    assert top_k(values, 4).tolist() == [len(values) - 2, 1000, len(values) - 1, len(values) - 3]


def test_eos_biased_model_finishes_hypotheses_early_like_transformers(models):
    # Guards the parity test against being vacuous: hypotheses must end on <|endoftext|> before the limit.
    ours, ref = models["eos-biased"]
    eos = ours.config.eos_token_id
    reasons = []
    for seed in range(4):
        prompt = prompt_for(ours, seed=100 + seed)
        hyps = beam_search(ours, prompt, num_beams=4, max_new_tokens=MAX_NEW, early_stopping="never")
        tokens, scores = reference_beams(
            ref, prompt, num_beams=4, num_return=4, max_new_tokens=MAX_NEW, length_penalty=1.0,
            early_stopping="never", ngram=0,
        )
        assert [h.tokens for h in hyps] == tokens
        np.testing.assert_allclose([h.score for h in hyps], scores, atol=1e-4, rtol=0)
        for h in hyps:
            assert (h.finish_reason == "eos") == (h.tokens[-1] == eos)
            assert h.finish_reason == "eos" or len(h.tokens) == MAX_NEW
            assert eos not in h.tokens[:-1]
        reasons += [(h.finish_reason, len(h.tokens)) for h in hyps]
    assert any(reason == "eos" and n < MAX_NEW for reason, n in reasons)
    assert any(reason == "length" for reason, _ in reasons)


def test_long_generation_follows_parents_through_the_cache(models):
    # 40 steps of reordering: a wrong cache row would change the beams long before the end.
    ours, ref = models["plain"]
    prompt = prompt_for(ours, seed=11, length=9)
    opts = dict(max_new_tokens=40, length_penalty=1.0, early_stopping="never")
    hyps = beam_search(ours, prompt, num_beams=4, no_repeat_ngram_size=2, num_return=4, **opts)
    tokens, scores = reference_beams(ref, prompt, num_beams=4, num_return=4, ngram=2, **opts)
    assert [h.tokens for h in hyps] == tokens
    np.testing.assert_allclose([h.score for h in hyps], scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("num_return", [1, 2, 3])
def test_num_return_gives_the_best_hypotheses_first(models, num_return):
    ours, ref = models["eos-biased"]
    prompt = prompt_for(ours, seed=5)
    opts = dict(max_new_tokens=MAX_NEW, length_penalty=1.0, early_stopping=False)
    every = beam_search(ours, prompt, num_beams=3, **opts)
    hyps = beam_search(ours, prompt, num_beams=3, num_return=num_return, **opts)
    assert hyps == every[:num_return]
    assert [h.score for h in every] == sorted((h.score for h in every), reverse=True)
    tokens, scores = reference_beams(ref, prompt, num_beams=3, num_return=num_return, ngram=0, **opts)
    assert [h.tokens for h in hyps] == tokens
    np.testing.assert_allclose([h.score for h in hyps], scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("early_stopping,length_penalty", [(False, 1.0), (True, 0.0), ("never", 2.0)])
@pytest.mark.parametrize("model_name", ["plain", "eos-biased"])
def test_one_beam_is_greedy_decoding(models, model_name, early_stopping, length_penalty):
    ours, _ = models[model_name]
    for seed in range(3):
        prompt = prompt_for(ours, seed=seed)
        [hyp] = beam_search(
            ours, prompt, num_beams=1, max_new_tokens=20, early_stopping=early_stopping, length_penalty=length_penalty
        )
        assert hyp.tokens == greedy(ours, prompt, 20)


def test_score_is_logprob_over_generated_length_to_the_penalty(models):
    ours, _ = models["eos-biased"]
    for lp in (0.0, 0.5, 2.0):
        for h in beam_search(ours, prompt_for(ours, 9), num_beams=4, max_new_tokens=MAX_NEW, length_penalty=lp):
            assert h.score == pytest.approx(h.logprob / len(h.tokens) ** lp, rel=1e-6)
            assert h.logprob < 0


class RecordingModel:
    """Wraps a model; records every forward batch shape and every cache reorder."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.forwards: list[tuple[int, int]] = []
        self.reorders: list[list[int]] = []
        self.copied_positions: list[int] = []  # per reorder: positions copied, summed over rows
        self.caches: list = []

    def new_cache(self, batch=1, capacity=None):
        cache = self.model.new_cache(batch, capacity)
        self.caches.append(cache)
        return cache

    def forward(self, tokens, cache, **kw):
        self.forwards.append(tokens.shape)
        if cache.batch > 1 and not hasattr(cache, "_recorded"):
            reorder = cache.reorder

            def recorded(rows, same_prefix=None):
                self.reorders.append(np.asarray(rows).tolist())
                moved = [r for r, p in enumerate(self.reorders[-1]) if p != r]
                first = np.zeros(cache.batch, int) if same_prefix is None else np.asarray(same_prefix)
                self.copied_positions.append(sum(cache.length - int(first[r]) for r in moved))
                return reorder(rows, same_prefix=same_prefix)

            cache.reorder = recorded
            cache._recorded = True
        return self.model.forward(tokens, cache, **kw)


def test_beams_decode_as_one_batch_and_reorder_only_when_parents_move(models):
    ours, _ = models["plain"]
    spy = RecordingModel(ours)
    prompt = prompt_for(ours, seed=2, length=7)
    hyps = beam_search(spy, prompt, num_beams=4, max_new_tokens=20, early_stopping="never")
    assert hyps == beam_search(ours, prompt, num_beams=4, max_new_tokens=20, early_stopping="never")
    assert len(spy.caches) == 1 and spy.caches[0].batch == 1  # prompt prefilled once...
    assert spy.forwards[0] == (1, 7)
    assert set(spy.forwards[1:]) == {(4, 1)}  # ...then every step is one batch of all beams
    assert len(spy.forwards) == 20  # the final step's choices need no forward pass
    assert spy.reorders, "parents never moved: the test proves nothing"
    assert all(rows != list(range(4)) for rows in spy.reorders)
    # only what differs from the parent is copied: never the 7 prompt positions
    moved_rows = sum(sum(p != r for r, p in enumerate(rows)) for rows in spy.reorders)
    assert sum(spy.copied_positions) <= moved_rows * (20 - 1)


@pytest.mark.parametrize(
    "kwargs,option",
    [
        (dict(num_beams=0), "num_beams"),
        (dict(num_beams=2.5), "num_beams"),
        (dict(num_beams=2, num_return=3), "num_return"),
        (dict(num_return=0), "num_return"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
        (dict(early_stopping="always"), "early_stopping"),
        (dict(early_stopping=1), "early_stopping"),
        (dict(length_penalty=float("nan")), "length_penalty"),
    ],
)
def test_bad_options_raise_usage_errors_naming_the_option(models, kwargs, option):
    ours, _ = models["plain"]
    args = dict(num_beams=4, max_new_tokens=5) | kwargs
    with pytest.raises(UsageError, match=option):
        beam_search(ours, [1, 2, 3], **args)


def test_prompt_plus_new_tokens_beyond_the_context_is_a_usage_error(models):
    ours, _ = models["plain"]
    n_pos = ours.config.n_positions
    with pytest.raises(UsageError, match=rf"\(100 tokens\).*\(29\).*129 tokens.*{n_pos}"):
        beam_search(ours, [1] * 100, num_beams=2, max_new_tokens=29)
    hyps = beam_search(ours, [1] * 100, num_beams=2, max_new_tokens=28)  # exactly fits
    assert len(hyps) == 2 and all(len(h.tokens) <= 28 for h in hyps)


def test_hypotheses_are_frozen():
    h = Hypothesis(tokens=[1], score=-1.0, logprob=-1.0, finish_reason="eos")
    with pytest.raises(AttributeError):
        h.score = 0.0

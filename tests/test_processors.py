"""Logits processors: repetition penalty, no-repeat n-grams, min-p and typical-p against transformers'
own processors (5.x), and greedy/beam decoding with penalties token for token against its generate()."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpt2cli.decoding.beam import beam_search
from gpt2cli.decoding.generate import generate
from gpt2cli.decoding.sampling import Penalties, Sampler, SamplingOptions, candidates, penalize_repetitions
from gpt2cli.errors import InvalidValue
from gpt2cli.session import load_model
from tests.support import models as modelfactory
from tests.support.reference import load_reference

torch = pytest.importorskip("torch", reason="the reference stack (torch==2.13.0, transformers) is not installed")
lp = pytest.importorskip("transformers.generation.logits_process", reason="transformers is not installed")


def logits_rows(seed: int, vocab: int = 300) -> np.ndarray:
    """Random rows, one with ties at the top and in the middle, one with -inf entries."""
    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((4, vocab)) * 3).astype(np.float32)
    rows[1, [3, 7, 11]] = rows[1].max() + 1.0  # a three-way tie at the top
    rows[1, 20:40] = 0.5  # a block of equal values
    rows[2, rng.choice(vocab, vocab // 3, replace=False)] = -np.inf
    return rows


def reference_distribution(row: np.ndarray, opts: SamplingOptions) -> np.ndarray:
    """transformers' warpers in its order (temperature, top-k, top-p, min-p, typical), then softmax."""
    warpers = []
    if opts.temperature != 1.0:
        warpers.append(lp.TemperatureLogitsWarper(opts.temperature))
    if opts.top_k:
        warpers.append(lp.TopKLogitsWarper(opts.top_k))
    if opts.top_p < 1.0:
        warpers.append(lp.TopPLogitsWarper(opts.top_p))
    if opts.min_p > 0.0:
        warpers.append(lp.MinPLogitsWarper(opts.min_p))
    if opts.typical_p < 1.0:
        warpers.append(lp.TypicalLogitsWarper(opts.typical_p))
    scores = torch.tensor(row[None])
    ids = torch.zeros((1, 1), dtype=torch.long)
    for w in warpers:
        scores = w(ids, scores)
    return torch.softmax(scores, dim=-1)[0].numpy()


def our_distribution(row: np.ndarray, opts: SamplingOptions) -> np.ndarray:
    ids, probs = candidates(row, opts)
    out = np.zeros(len(row), dtype=np.float64)
    out[ids] = probs
    return out


WARPERS = [
    SamplingOptions(1.0, 0, 1.0, min_p=0.05),
    SamplingOptions(1.0, 0, 1.0, min_p=0.3),
    SamplingOptions(0.7, 0, 1.0, min_p=0.1),
    SamplingOptions(1.0, 0, 1.0, typical_p=0.95),
    SamplingOptions(1.0, 0, 1.0, typical_p=0.5),
    SamplingOptions(1.3, 0, 1.0, typical_p=0.2),
    SamplingOptions(0.7, 50, 0.92, min_p=0.05),
    SamplingOptions(1.0, 50, 0.95, min_p=0.02, typical_p=0.9),
    SamplingOptions(1.0, 5, 1.0, typical_p=0.7),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("opts", WARPERS, ids=str)
def test_warped_distribution_equals_transformers_warpers(opts, seed):
    for row in logits_rows(seed):
        np.testing.assert_allclose(our_distribution(row, opts), reference_distribution(row, opts), atol=1e-6)


@pytest.mark.parametrize("opts", WARPERS[:6], ids=str)
def test_warped_distribution_on_a_models_logits_equals_transformers(tiny_model, opts):
    model = load_model(tiny_model)
    logits = model.forward(np.array([[5, 9, 14, 3]]), model.new_cache(1))[0]
    np.testing.assert_allclose(our_distribution(logits, opts), reference_distribution(logits, opts), atol=1e-6)


@pytest.mark.parametrize("penalty", [1.2, 0.8, 3.0])
def test_repetition_penalty_equals_transformers_processor(penalty):
    rng = np.random.default_rng(int(penalty * 10))
    scores = logits_rows(4)
    sequences = rng.integers(0, 320, (4, 30))  # some ids past the 300 scores: no effect, as in transformers
    sequences[0, :5] = sequences[0, 5]  # repeats count once
    ours = scores.copy()
    penalize_repetitions(ours, sequences, penalty)
    ref = lp.RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor(sequences), torch.tensor(scores)).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_no_repeat_ngram_equals_transformers_processor():
    rng = np.random.default_rng(7)
    sequences = rng.integers(0, 6, (3, 40))  # a small alphabet, so n-grams repeat
    for n in (1, 2, 3, 4):
        ours = logits_rows(5)[:3].copy()
        Penalties(no_repeat_ngram_size=n).apply(ours, sequences)
        ref = lp.NoRepeatNGramLogitsProcessor(n)(torch.tensor(sequences), torch.tensor(logits_rows(5)[:3])).numpy()
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("opts", [SamplingOptions(1.0, 0, 1.0, min_p=0.2), SamplingOptions(1.0, 0, 1.0, typical_p=0.6)], ids=str)
def test_seeded_sampling_follows_the_warped_distribution(opts):
    """Chi-square of 20,000 seeded draws against the warped distribution (p > 0.001)."""
    row = (np.random.default_rng(3).standard_normal(40) * 0.4).astype(np.float32)
    expected = our_distribution(row, opts)
    first = Sampler(opts, seed=11)
    draws = np.array([first(row[None])[0] for _ in range(20000)])
    again = Sampler(opts, seed=11)
    assert all(again(row[None])[0] == d for d in draws[:200])  # same seed, same draws
    support = np.flatnonzero(expected > 0)
    assert set(np.unique(draws)) <= set(support.tolist())
    counts = np.bincount(draws, minlength=len(row))[support]
    statistic = float((((counts - 20000 * expected[support]) ** 2) / (20000 * expected[support])).sum())
    dof = len(support) - 1
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(statistic / 2, dtype=torch.float64)))
    assert dof >= 5 and p_value > 0.001, (statistic, dof)


@pytest.mark.parametrize("bad", [dict(repetition_penalty=0.0), dict(repetition_penalty=float("inf")), dict(no_repeat_ngram_size=-2)])
def test_bad_penalties_name_the_parameter(bad):
    with pytest.raises(InvalidValue, match=next(iter(bad))):
        Penalties(**bad).validate()


@pytest.mark.parametrize("bad", [dict(min_p=-0.1), dict(min_p=1.5), dict(typical_p=0.0), dict(typical_p=1.2)])
def test_bad_warpers_name_the_parameter(bad):
    with pytest.raises(InvalidValue, match=next(iter(bad))):
        SamplingOptions(1.0, 0, 1.0, **bad).validate()


# --- whole decodings against generate() ---


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = modelfactory.write_model(tmp_path_factory.mktemp("proc") / "m", seed=21)
    return load_model(folder), load_reference(folder)


def reference_generate(ref, prompt, **kwargs):
    eos = ref.config.eos_token_id
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), do_sample=False,
            pad_token_id=eos, eos_token_id=eos, output_scores=True, return_dict_in_generate=True, **kwargs,
        )  # fmt: skip
    return out


def strip_after_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.mark.parametrize("penalty,ngram", [(1.2, 0), (1.5, 0), (0.8, 0), (1.0, 2), (1.0, 3), (1.3, 2)])
def test_greedy_with_penalties_is_token_identical_to_transformers(pair, penalty, ngram):
    ours, ref = pair
    eos = ours.config.eos_token_id
    for seed in range(3):
        prompt = np.random.default_rng(seed).integers(0, eos, 6).tolist()
        steps = generate(
            ours, prompt, Sampler(SamplingOptions(0.0, 0, 1.0)), 30, eos_token_id=eos,
            penalties=Penalties(penalty, ngram),
        )  # fmt: skip
        tokens = [int(s.tokens[0]) for s in steps]
        out = reference_generate(ref, prompt, max_new_tokens=30, repetition_penalty=penalty, no_repeat_ngram_size=ngram)
        assert tokens == strip_after_eos(out.sequences[0, len(prompt) :].tolist(), eos)


@pytest.mark.parametrize("num_beams,penalty,ngram", list(itertools.product([2, 4], [1.2, 0.7], [0, 2])))
def test_beam_with_repetition_penalty_matches_transformers(pair, num_beams, penalty, ngram):
    ours, ref = pair
    eos = ours.config.eos_token_id
    prompt = np.random.default_rng(num_beams).integers(0, eos, 5).tolist()
    hyps = beam_search(
        ours, prompt, num_beams=num_beams, max_new_tokens=12, repetition_penalty=penalty, no_repeat_ngram_size=ngram
    )
    out = reference_generate(
        ref, prompt, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=12,
        repetition_penalty=penalty, no_repeat_ngram_size=ngram, early_stopping=False, length_penalty=1.0,
    )  # fmt: skip
    assert [h.tokens for h in hyps] == [strip_after_eos(r, eos) for r in out.sequences[:, len(prompt) :].tolist()]
    np.testing.assert_allclose([h.score for h in hyps], out.sequences_scores.tolist(), atol=1e-4, rtol=0)

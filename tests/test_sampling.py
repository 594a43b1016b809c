"""Sampling (decoding/sampling.py): top-k/top-p masks against brute force, greedy
limits, seeds, and the sampled distribution."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2cli.decoding.sampling import Sampler, SamplingOptions, candidates
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.errors import UsageError


def brute_force_keep(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> set[int]:
    """transformers' TopK then TopP warpers, written the slow obvious way."""
    scaled = logits / temperature
    keep = set(range(len(scaled)))
    if top_k:
        kth = sorted(scaled, reverse=True)[min(top_k, len(scaled)) - 1]
        keep = {i for i in keep if scaled[i] >= kth}
    if top_p < 1.0:
        probs = {i: np.exp(scaled[i] - max(scaled)) for i in keep}
        total = sum(probs.values())
        ascending = sorted(keep, key=lambda i: (probs[i], -i))
        cumulative, removed = 0.0, set()
        for i in ascending[:-1]:  # transformers always keeps at least one token
            cumulative += probs[i] / total
            if cumulative <= 1.0 - top_p:
                removed.add(i)
        keep -= removed
    return keep


@pytest.mark.parametrize("top_k", [0, 1, 5, 40])
@pytest.mark.parametrize("top_p", [1.0, 0.95, 0.5, 0.1])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.5])
def test_top_k_and_top_p_keep_exactly_the_brute_force_set(top_k, top_p, temperature):
    rng = np.random.default_rng(top_k * 100 + int(top_p * 10))
    logits = (rng.standard_normal(200) * 3).astype(np.float32)
    ids, probs = candidates(logits, SamplingOptions(temperature, top_k, top_p))
    assert set(ids.tolist()) == brute_force_keep(logits, temperature, top_k, top_p)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_top_k_keeps_ties_with_the_kth_value():
    logits = np.array([3.0, 2.0, 2.0, 2.0, 1.0], dtype=np.float32)
    ids, _ = candidates(logits, SamplingOptions(1.0, 2, 1.0))
    assert set(ids.tolist()) == {0, 1, 2, 3}


def test_temperature_zero_is_greedy_argmax():
    logits = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32)
    assert (Sampler(SamplingOptions(0.0, 50, 1.0))(logits) == logits.argmax(axis=1)).all()


def test_temperature_near_zero_matches_greedy():
    logits = np.random.default_rng(1).standard_normal((8, 300)).astype(np.float32)
    sampler = Sampler(SamplingOptions(1e-4, 0, 1.0), seed=3)
    for _ in range(20):
        assert (sampler(logits) == logits.argmax(axis=1)).all()


def test_same_seed_gives_same_tokens_and_another_seed_differs():
    logits = np.random.default_rng(2).standard_normal((3, 300)).astype(np.float32)
    opts = SamplingOptions(1.0, 0, 0.9)
    a, b = Sampler(opts, seed=5), Sampler(opts, seed=5)
    seq_a = [a(logits).tolist() for _ in range(30)]
    seq_b = [b(logits).tolist() for _ in range(30)]
    c = Sampler(opts, seed=6)
    seq_c = [c(logits).tolist() for _ in range(30)]
    assert seq_a == seq_b
    assert seq_a != seq_c


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_frequencies_match_softmax_of_logits_over_temperature(temperature):
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], dtype=np.float32)
    sampler = Sampler(SamplingOptions(temperature, 0, 1.0), seed=123)
    n = 20000
    rows = np.broadcast_to(logits, (1000, logits.size))
    counts = np.bincount(np.concatenate([sampler(rows) for _ in range(n // 1000)]), minlength=logits.size)
    expected = np.exp(logits / temperature - (logits / temperature).max())
    expected = expected / expected.sum() * n
    chi2 = float((((counts - expected) ** 2) / expected).sum())
    # 5 degrees of freedom: P(chi2 > 20.5) = 0.001
    assert chi2 < 20.5, (counts, expected)


def test_sampling_never_picks_a_token_outside_top_k():
    logits = np.random.default_rng(4).standard_normal((64, 500)).astype(np.float32)
    sampler = Sampler(SamplingOptions(2.0, 3, 1.0), seed=0)
    top3 = np.argsort(-logits, axis=1)[:, :3]
    for _ in range(10):
        picks = sampler(logits)
        assert all(p in row for p, row in zip(picks, top3))


def test_log_softmax_is_float32_and_normalised():
    logits = np.random.default_rng(5).standard_normal((2, 1000)).astype(np.float32) * 10
    lp = log_softmax(logits)
    assert lp.dtype == np.float32
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "opts, option",
    [
        (SamplingOptions(-0.1, 50, 1.0), "temperature"),
        (SamplingOptions(float("nan"), 50, 1.0), "temperature"),
        (SamplingOptions(1.0, -1, 1.0), "top_k"),
        (SamplingOptions(1.0, 50, 0.0), "top_p"),
        (SamplingOptions(1.0, 50, 1.01), "top_p"),
    ],
)
def test_invalid_options_name_the_parameter(opts, option):
    with pytest.raises(UsageError, match=option):
        Sampler(opts)

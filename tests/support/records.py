"""Comparing batch result lines: everything equal, log-probabilities to a tolerance.

A record decoded in a continuous batch shares its matrix products with other rows, and an n-row
product rounds differently from a one-row one, so its log-probabilities agree with a single run's
(or another batch's) to about 1e-6; its text, tokens and the rest are the same. Texts scored
together (batch --score) likewise: their log-probabilities, and so their totals and perplexities.
"""

from __future__ import annotations

import json

# Rounding of shared products, carried through the layers of the small test models.
LOGPROB_TOLERANCE = 1e-5


def assert_same_record(got: dict, expected: dict, *, exact: bool = False, label: object = None) -> None:
    got, expected = dict(got), dict(expected)
    got_lp, expected_lp = got.pop("logprobs", None), expected.pop("logprobs", None)
    if not exact and "total_logprob" in expected:  # a score line: its sums carry its terms' rounding
        _assert_same_sums(got, expected, len(expected_lp or ()), label)
    assert got == expected, label
    if exact or got_lp is None or expected_lp is None:
        assert got_lp == expected_lp, label
        return
    assert len(got_lp) == len(expected_lp), label
    worst = max((abs(a - b) for a, b in zip(got_lp, expected_lp)), default=0.0)
    assert worst <= LOGPROB_TOLERANCE, (label, worst)


def _assert_same_sums(got: dict, expected: dict, n: int, label: object) -> None:
    """A score line's total_logprob to the tolerance per term (a float32 sum near 300 already has an
    ulp of 3e-5) and its perplexity to the tolerance relatively; both popped from got and expected."""
    total, want = got.pop("total_logprob", None), expected.pop("total_logprob")
    assert total is not None and abs(total - want) <= LOGPROB_TOLERANCE * max(n, 1), (label, total, want)
    ppl, want = got.pop("perplexity", None), expected.pop("perplexity")
    assert ppl is not None and (ppl == want or abs(ppl - want) <= LOGPROB_TOLERANCE * want), (label, ppl, want)


def assert_same_lines(got: dict[str, str], expected: dict[str, str], *, exact: bool = False) -> None:
    """got/expected: id (as JSON spells it) -> result line."""
    assert set(got) == set(expected)
    for key, line in expected.items():
        assert_same_record(json.loads(got[key]), json.loads(line), exact=exact, label=key)

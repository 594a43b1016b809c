"""What scoring a text gives (Scored), how `score --json` and `batch --score` print it, and the
checks both make: plain data and arithmetic, shared by Session.score, score_strided and batch scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpt2cli.errors import InvalidValue, OptionError, UsageError


@dataclass(frozen=True)
class Scored:
    tokens: list[int]
    logprobs: np.ndarray  # [T] float32: each token's log-probability given everything before it
    total: float
    perplexity: float

    @classmethod
    def of(cls, tokens: list[int], logprobs: np.ndarray) -> "Scored":
        """Every token scored: the total and perplexity from its float32 log-probabilities [T]."""
        total = float(logprobs.sum())
        return cls(tokens, logprobs, total, perplexity(total, len(tokens)))


def score_record(s: Scored) -> dict:
    """What `score --json` and `batch --score` print."""
    return {"tokens": s.tokens, "logprobs": [float(x) for x in s.logprobs], "total_logprob": s.total, "perplexity": s.perplexity}


# score and score_strided say the same: a text with no tokens has nothing to score.
EMPTY_TEXT = "nothing to score: the text is empty; give a text of at least one character"


def check_scorable(ids: list[int], n_ctx: int) -> None:
    """Raises UsageError unless `score` can score ids in one pass: 1 to n_ctx tokens."""
    if not ids:
        raise UsageError(EMPTY_TEXT)
    if len(ids) > n_ctx:
        raise OptionError(
            f"the text has {len(ids)} tokens but the model's context scores at most {n_ctx} at once; "
            f"score it in sliding windows with {{stride}} {max(n_ctx // 2, 1)}, or split it",
            "stride",
        )


def check_stride(n_ctx: int, stride: int) -> int:
    """Raises InvalidValue unless 1 <= stride <= n_ctx (score_strided's windows); returns n_ctx."""
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= n_ctx:
        raise InvalidValue("stride", f"must be an integer from 1 to the model's context ({n_ctx})", stride)
    return n_ctx


def perplexity(total: float, n: int) -> float:
    try:
        return math.exp(-total / n)
    except OverflowError:  # a model so sure and so wrong that the perplexity is beyond float
        return math.inf

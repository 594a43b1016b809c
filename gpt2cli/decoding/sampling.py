"""Sampler: logits -> next tokens (temperature, top-k, top-p, greedy), with its own seeded RNG.

It sees only logit rows, never the model. Order of the warpers is transformers': temperature,
then top-k, then top-p.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpt2cli.engine.kernels import softmax
from gpt2cli.errors import InvalidValue


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # 0 = greedy argmax
    top_k: int = 50  # 0 = off
    top_p: float = 1.0  # 1 = off

    def validate(self) -> "SamplingOptions":
        if not (self.temperature >= 0.0 and np.isfinite(self.temperature)):
            raise InvalidValue("temperature", "must be a number >= 0 (0 = greedy)", self.temperature)
        if self.top_k < 0:
            raise InvalidValue("top_k", "must be >= 0 (0 = off)", self.top_k)
        if not (0.0 < self.top_p <= 1.0):
            raise InvalidValue("top_p", "must be in (0, 1] (1 = off)", self.top_p)
        return self


def candidates(row: np.ndarray, opts: SamplingOptions) -> tuple[np.ndarray, np.ndarray]:
    """The tokens that survive top-k and top-p for one logits row, and their probabilities.

    row: [V] logits. Returns (ids [n], probs [n]) with probs summing to 1 (by descending probability
    when top-p needed the order).
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scaled = row / np.float32(opts.temperature)  # [V]
    if not np.isfinite(scaled).all():
        # A temperature so close to 0 that logits overflow float32: that is greedy (ties shared).
        top = np.flatnonzero(row == row.max())
        return top, np.full(len(top), 1.0 / len(top), dtype=np.float32)
    k = opts.top_k
    if 0 < k < scaled.shape[0]:
        # transformers keeps every token whose logit ties the k-th largest.
        kth = np.partition(scaled, -k)[-k]
        ids = np.flatnonzero(scaled >= kth)  # [>=k]
    else:
        ids = np.arange(scaled.shape[0])
    vals = scaled[ids]
    if opts.top_p < 1.0:
        order = np.argsort(-vals, kind="stable")
        ids, vals = ids[order], vals[order]
    probs = softmax(vals, inplace=True)  # vals is a fresh array (fancy indexing)
    if opts.top_p < 1.0:
        # transformers drops tokens whose ascending cumulative probability is <= 1 - top_p, i.e. keeps
        # the smallest prefix (by descending probability) whose mass reaches top_p; at least one.
        ascending = np.cumsum(probs[::-1], dtype=np.float64)
        removed = ascending <= 1.0 - opts.top_p
        n_keep = max(1, len(probs) - int(removed.sum()))
        ids, probs = ids[:n_keep], probs[:n_keep] / probs[:n_keep].sum()
    return ids, probs


class Sampler:
    """Chooses one next token per logits row; same seed and options give the same choices."""

    def __init__(self, opts: SamplingOptions, seed: int | None = None):
        self.opts = opts.validate()
        self.rng = np.random.default_rng(seed)

    @property
    def greedy(self) -> bool:
        return self.opts.temperature == 0.0

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        # [B, V] -> [B] token ids
        if self.greedy:
            return logits.argmax(axis=-1)
        out = np.empty(logits.shape[0], dtype=np.int64)
        for b, row in enumerate(logits):  # a few rows (-N samples); the work per row is vectorized
            ids, probs = candidates(row, self.opts)
            cumulative = np.cumsum(probs, dtype=np.float64)
            pick = np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right")
            out[b] = ids[min(pick, len(ids) - 1)]
        return out

"""Logits processors and the Sampler: logits -> next tokens, with its own seeded RNG.

Penalties (repetition penalty, no-repeat n-grams) see the sequences so far and apply to every
decoding; the Sampler's warpers apply when sampling. Both see only logit rows, never the model, in
transformers' order: penalties first; then temperature, top-k, top-p, min-p, typical-p.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gpt2cli.engine.kernels import softmax
from gpt2cli.errors import InvalidValue


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Penalties:
    """Processors that look at each row's sequence so far (prompt included), as transformers' are."""

    repetition_penalty: float = 1.0  # 1 = off: a seen token's score is divided by it (multiplied if negative)
    no_repeat_ngram_size: int = 0  # 0 = off: no n-gram of this size appears twice

    def validate(self) -> "Penalties":
        if not (np.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            raise InvalidValue("repetition_penalty", "must be a number > 0 (1 = off)", self.repetition_penalty)
        if not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0:
            raise InvalidValue("no_repeat_ngram_size", "must be an integer >= 0 (0 = off)", self.no_repeat_ngram_size)
        return self

    @property
    def active(self) -> bool:
        return self.repetition_penalty != 1.0 or self.no_repeat_ngram_size > 0

    def apply(self, scores: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """scores [B, V] (logits, or log-probabilities in beam search), changed in place; sequences [B, L]."""
        if self.repetition_penalty != 1.0:
            penalize_repetitions(scores, sequences, self.repetition_penalty)
        if self.no_repeat_ngram_size:
            ban_repeated_ngrams(scores, sequences, self.no_repeat_ngram_size)
        return scores


def penalize_repetitions(scores: np.ndarray, sequences: np.ndarray, penalty: float) -> None:
    """transformers' RepetitionPenaltyLogitsProcessor, in place: every token id in a row's sequence has
    its score divided by penalty where positive, multiplied by it where negative."""
    b, v = scores.shape
    seen = np.zeros((b, v + 1), dtype=bool)  # [B, V+1]: ids past the LM head land in the spare column
    seen[np.arange(b)[:, None], np.minimum(sequences, v)] = True
    seen = seen[:, :v]
    p = np.float32(penalty)
    picked = scores[seen]  # [n]
    scores[seen] = np.where(picked < 0, picked * p, picked / p)


def ban_repeated_ngrams(scores: np.ndarray, sequences: np.ndarray, n: int) -> None:
    """Sets -inf, in place, for every token that would complete an n-gram already in its row.

    scores [B, V]; sequences [B, L] (prompt + generated so far). Like transformers'
    NoRepeatNGramLogitsProcessor: each row's last n-1 tokens are matched against every window of n.
    """
    b, length = sequences.shape
    if n <= 0 or length < n:
        return
    windows = sliding_window_view(sequences, n, axis=1)  # [B, L-n+1, n]
    prefix = sequences[:, length - n + 1 :]  # [B, n-1]
    matches = (windows[:, :, :-1] == prefix[:, None, :]).all(axis=-1)  # [B, L-n+1]
    rows, cols = np.nonzero(matches)  # [m], [m]
    banned = windows[rows, cols, -1]  # [m]
    inside = banned < scores.shape[1]  # a prompt id past the LM head cannot be generated anyway
    scores[rows[inside], banned[inside]] = -np.inf


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # 0 = greedy argmax
    top_k: int = 50  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off: drop tokens below min_p x the top token's probability
    typical_p: float = 1.0  # 1 = off: keep the most typical tokens up to this mass

    def validate(self) -> "SamplingOptions":
        if not (self.temperature >= 0.0 and np.isfinite(self.temperature)):
            raise InvalidValue("temperature", "must be a number >= 0 (0 = greedy)", self.temperature)
        if self.top_k < 0:
            raise InvalidValue("top_k", "must be >= 0 (0 = off)", self.top_k)
        if not (0.0 < self.top_p <= 1.0):
            raise InvalidValue("top_p", "must be in (0, 1] (1 = off)", self.top_p)
        if not (0.0 <= self.min_p <= 1.0):
            raise InvalidValue("min_p", "must be in [0, 1] (0 = off)", self.min_p)
        if not (0.0 < self.typical_p <= 1.0):
            raise InvalidValue("typical_p", "must be in (0, 1] (1 = off)", self.typical_p)
        return self


def candidates(row: np.ndarray, opts: SamplingOptions) -> tuple[np.ndarray, np.ndarray]:
    """The tokens that survive top-k, top-p, min-p and typical-p for one logits row, and their probabilities.

    row: [V] logits. Returns (ids [n], probs [n]) with probs summing to 1 (by descending probability
    when top-p needed the order).
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scaled = row / np.float32(opts.temperature)  # [V]
    if not np.isfinite(scaled.max()):
        # A temperature so close to 0 that logits overflow float32: that is greedy (ties shared).
        # (-inf alone is a banned token, e.g. by --no-repeat-ngram, and samples as probability 0.)
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
    if opts.min_p > 0.0:
        keep = probs >= np.float32(opts.min_p) * probs.max()  # the top token always reaches it
        ids, probs = ids[keep], probs[keep] / probs[keep].sum()
    if opts.typical_p < 1.0:
        ids, probs = _typical(ids, probs, opts.typical_p)
    return ids, probs


def _typical(ids: np.ndarray, probs: np.ndarray, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """transformers' TypicalLogitsWarper on the surviving tokens: keep those whose surprise is closest
    to the entropy, in that order, until their mass reaches `mass` (at least one)."""
    with np.errstate(divide="ignore"):
        logp = np.log(probs)  # [n]
    nonzero = probs > 0
    entropy = -np.sum(logp[nonzero] * probs[nonzero])
    shifted = np.abs(-logp - entropy)  # [n]
    order = np.argsort(shifted, kind="stable")
    cumulative = np.cumsum(probs[order], dtype=np.float64)
    last = min(int((cumulative < mass).sum()), len(order) - 1)
    keep = shifted <= shifted[order[last]]
    keep[order[0]] = True
    return ids[keep], probs[keep] / probs[keep].sum()


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

"""Beam search over the NumPy engine, step for step the algorithm of transformers' beam search.

Every beam decodes in one batch; after each step the KV cache follows the chosen parents in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpt2cli.decoding.generate import check_logits
from gpt2cli.decoding.prefix import Prefix
from gpt2cli.decoding.sampling import Penalties
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.engine.cache import kv_cache_bytes
from gpt2cli.errors import ContextOverflowError, InvalidValue, UsageError

F32 = np.float32
# transformers' stand-in for "impossible": the start score of beams 1.. (so step 1 expands beam 0 only).
_NEG = F32(-1.0e9)
# The most beams one search runs (beam's --beams, compare's beams=): each beam's logits row is the
# vocabulary wide, so beyond this a search outgrows memory before its keys and values do.
MAX_BEAMS = 256


@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: its generated tokens (with the final <|endoftext|> if it ended on one)."""

    tokens: list[int]
    score: float  # logprob / len(tokens) ** length_penalty: transformers' `sequences_scores`
    logprob: float  # sum of the (processed) log-probabilities of `tokens`
    finish_reason: str  # "eos" or "length"


# top_k() splits its input into groups of this many values and looks at their maxima first.
_GROUP = 128


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of values [N] (no NaN), best first; equal values in index order.

    Exact, and ~7x faster than an argpartition over a beam step's 4 x 50257 scores (30 vs 207 us):
    the k-th largest group maximum is a threshold no winner is below (k distinct values reach it),
    so only the few groups whose maximum reaches it are searched. A group is every C-th value
    (values viewed as [_GROUP, C], one column each): a max over axis 0 runs vectorized across
    columns, where a max over contiguous rows of 128 takes ~9x as long.
    """
    values = np.asarray(values)
    n = values.shape[0]
    k = min(k, n)
    n_groups = n // _GROUP
    if n_groups <= 2 * k:  # too few groups to skip any: every value is a candidate
        candidates = np.arange(n)
    else:
        maxima = values[: _GROUP * n_groups].reshape(_GROUP, n_groups).max(axis=0)  # [n_groups]
        threshold = np.partition(maxima, n_groups - k)[n_groups - k]
        groups = np.flatnonzero(maxima >= threshold)  # [>= k]
        members = (np.arange(_GROUP)[:, None] * n_groups + groups).ravel()  # every value of those groups
        candidates = np.concatenate([members, np.arange(_GROUP * n_groups, n)])  # and the tail
        candidates = candidates[values[candidates] >= threshold]
    order = np.lexsort((candidates, -values[candidates]))  # by value, descending; then by index
    return candidates[order[:k]]


def validate_options(
    *,
    num_beams: int,
    num_return: int,
    max_new_tokens: int,
    no_repeat_ngram_size: int,
    early_stopping: object,
    length_penalty: float = 1.0,
    repetition_penalty: float = 1.0,
) -> None:
    """Raises InvalidValue naming the parameter for any value outside its range."""

    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(num_beams) or num_beams < 1:
        raise InvalidValue("num_beams", "must be an integer >= 1", num_beams)
    if num_beams > MAX_BEAMS:
        raise InvalidValue("num_beams", f"must be at most {MAX_BEAMS} (as beam's --beams)", num_beams)
    if not is_int(num_return) or not 1 <= num_return <= num_beams:
        raise InvalidValue(
            "num_return", f"must be between 1 and {{num_beams}} ({num_beams})", num_return, "num_beams",
            remedy="lower {num_return} or raise {num_beams}",
        )
    if not is_int(max_new_tokens) or max_new_tokens < 1:
        raise InvalidValue("max_new_tokens", "must be an integer >= 1", max_new_tokens)
    Penalties(repetition_penalty, no_repeat_ngram_size).validate()
    if not (early_stopping is True or early_stopping is False or early_stopping == "never"):
        raise InvalidValue("early_stopping", "must be true, false or never", early_stopping)
    if not (np.isfinite(length_penalty) and abs(length_penalty) <= 100):  # len ** 1e300 overflows
        raise InvalidValue("length_penalty", "must be a finite number from -100 to 100", length_penalty)


def cache_bytes(config, prompt_tokens: int, max_new_tokens: int, num_beams: int) -> int:
    """The most memory beam_search() fills with keys and values: the prompt once, each beam's new tokens
    (but the last, never fed back) after it."""
    prompt = max(prompt_tokens, 1)
    return kv_cache_bytes(config, 1, prompt + num_beams * max(min(max_new_tokens - 1, config.n_positions - prompt), 0))


def beam_search(
    model,
    prompt_ids: list[int],
    *,
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    num_return: int | None = None,
    prefill_progress=None,
    prefix: Prefix | None = None,
) -> list[Hypothesis]:
    """The best `num_return` finished hypotheses, best first, as transformers' generate(num_beams=...) finds them.

    eos_token_id defaults to the model's. early_stopping: True stops once `num_beams` hypotheses are
    finished; False also stops once the best running beam, scored at its current length, cannot beat
    the worst finished one; "never" judges that at max_new_tokens when length_penalty > 0.
    num_beams=1 is greedy decoding, as generate() does it. Raises UsageError for bad options and for
    prompt + max_new_tokens beyond the context (beam search does not slide). prefix: prompt_ids
    already prefilled by Prefix.last_position (shared with other decodings: read, never written).
    """
    num_return = num_beams if num_return is None else num_return
    validate_options(
        num_beams=num_beams, num_return=num_return, max_new_tokens=max_new_tokens,
        no_repeat_ngram_size=no_repeat_ngram_size, early_stopping=early_stopping, length_penalty=length_penalty,
        repetition_penalty=repetition_penalty,
    )  # fmt: skip
    if len(prompt_ids) == 0:
        raise UsageError("beam search needs at least one prompt token (pass [eos] for an empty prompt)")
    total = len(prompt_ids) + max_new_tokens
    if total > model.config.n_positions:
        raise ContextOverflowError(
            f"prompt ({len(prompt_ids)} token{'s' if len(prompt_ids) != 1 else ''}) + {{max_new_tokens}} ({max_new_tokens}) = {total} tokens exceeds the "
            f"model's context of {model.config.n_positions}; beam search does not slide, so shorten one of them",
            "max_new_tokens",
        )
    # transformers' generate() runs greedy search for num_beams=1: the first finished hypothesis ends
    # it, whatever early_stopping says.
    search = _Search(
        model, prompt_ids, num_beams, max_new_tokens, length_penalty, True if num_beams == 1 else early_stopping,
        Penalties(repetition_penalty, no_repeat_ngram_size), model.config.eos_token_id if eos_token_id is None else eos_token_id,
    )  # fmt: skip
    capacity = total - 1  # the last token chosen is never fed back
    if prefix is None:
        prefix = Prefix.last_position(model, prompt_ids, capacity, prefill_progress)
    else:
        prefix.check(prompt_ids, capacity)
    return search.run(prefix)[:num_return]


class _Search:
    """One beam search's state: the beams' sequences, their running scores, the finished hypotheses."""

    def __init__(self, model, prompt_ids, num_beams, max_new_tokens, length_penalty, early_stopping, penalties, eos):
        self.model, self.num_beams, self.max_new_tokens = model, num_beams, max_new_tokens
        self.length_penalty, self.early_stopping, self.penalties, self.eos = length_penalty, early_stopping, penalties, eos
        self.n_prompt = len(prompt_ids)
        self.sequences = np.empty((num_beams, self.n_prompt + max_new_tokens), dtype=np.int64)  # [beams, prompt + new]
        self.sequences[:, : self.n_prompt] = prompt_ids
        self.running = np.full(num_beams, _NEG, dtype=F32)  # [beams] running sums of log-probs
        self.running[0] = 0.0
        self.finished: list[Hypothesis] = []  # best first, at most num_beams (transformers' beam_scores slots)

    def run(self, prefix: Prefix) -> list[Hypothesis]:
        """The search from the prompt's prefill, step by step (one batched forward pass of every beam per step)."""
        model, n_prompt, beams = self.model, self.n_prompt, self.num_beams
        logits = prefix.logits.copy()  # [1, V] (_step takes its log-softmax in place)
        # The prompt's keys and values held once for every beam (reorder moves only the beams' own positions);
        # each beam adds its new positions only.
        cache = prefix.cache.share(beams)
        identity = np.arange(beams)
        for step in range(1, self.max_new_tokens + 1):
            cur = n_prompt + step - 1  # tokens in each running sequence
            chosen = self._step(logits, step, cur)
            if chosen is None:
                break
            parents, tokens = chosen
            # At step 1 every cache row holds the same prompt, so the parents need no copying.
            if step > 1 and not np.array_equal(parents, identity):
                same = self.sequences[:, :cur] == self.sequences[parents, :cur]  # [beams, cur]
                cache.reorder(parents, same_prefix=np.where(same.all(axis=1), cur, same.argmin(axis=1)))
                self.sequences = self.sequences[parents]
            self.sequences[:, cur] = tokens
            logits = model.forward(tokens[:, None], cache)  # [beams, V]
        return self.finished

    def _step(self, logits: np.ndarray, step: int, cur: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Scores one step's candidates, finishes the hypotheses that end here, and returns the running
        beams' (parents, tokens) for the next step, or None when the search is over."""
        logprobs = log_softmax(check_logits(logits), inplace=True)  # [beams, V] ([1, V] at step 1: every beam is the prompt)
        if self.penalties.active:  # on the log-probabilities, as transformers' beam search applies its processors
            self.penalties.apply(logprobs, self.sequences[: logprobs.shape[0], :cur])
        vocab = logprobs.shape[1]
        totals = (logprobs + self.running[:, None]).ravel()  # [beams * V]
        # transformers keeps (1 + number of eos ids) * num_beams candidates: enough that num_beams of them
        # are still running even when every parent's best continuation is <|endoftext|>.
        top = top_k(totals, 2 * self.num_beams)  # [k], best first
        top_scores = totals[top]  # [k] float32
        parents, tokens = np.divmod(top, vocab)  # [k], [k]
        # MaxLengthCriteria and EosTokenCriteria of transformers' stopping criteria.
        hits = (tokens == self.eos) | (step == self.max_new_tokens)  # [k]
        self._finish(parents, tokens, top_scores, hits, step, cur)
        if hits.all():
            return None
        # _get_running_beams_for_next_iteration: the best num_beams candidates that did not finish.
        keep = np.flatnonzero(~hits)[: self.num_beams]  # [beams]
        self.running = top_scores[keep]  # [beams], best first
        return (None if self._done(step) else (parents[keep], tokens[keep]))

    def _finish(self, parents, tokens, top_scores, hits, step: int, cur: int) -> None:
        """_update_finished_beams: only the first num_beams candidates may finish; the rest are spares."""
        new = [
            Hypothesis(
                tokens=self.sequences[parents[i], self.n_prompt : cur].tolist() + [int(tokens[i])],
                score=float(top_scores[i] / (step**self.length_penalty)),
                logprob=float(top_scores[i]),
                finish_reason="eos" if tokens[i] == self.eos else "length",
            )
            for i in np.flatnonzero(hits[: self.num_beams])
        ]
        if new:  # sorted is stable: older hypotheses first on ties
            self.finished = sorted(self.finished + new, key=lambda h: -h.score)[: self.num_beams]

    def _done(self, step: int) -> bool:
        """_check_early_stop_heuristic / _beam_search_has_unfinished_sequences."""
        if len(self.finished) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        hypothetical = self.max_new_tokens if (self.early_stopping == "never" and self.length_penalty > 0) else step
        return not self.running[0] / (hypothetical**self.length_penalty) > self.finished[-1].score

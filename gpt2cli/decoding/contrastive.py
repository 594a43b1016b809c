"""Contrastive search (Su et al. 2022), step for step as transformers 4.55.4's generate(penalty_alpha=...,
top_k=...) does it: deterministic, and much less repetitive than greedy decoding.

Each step takes the k most likely next tokens, runs them through the model as k rows of one batched
pass, and picks the one with the best (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j), h being the
last layer's output (after ln_f) and j every earlier position, prompt included.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from gpt2cli.decoding.generate import Step, check_logits
from gpt2cli.decoding.prefix import Prefix
from gpt2cli.decoding.sampling import Penalties
from gpt2cli.engine.kernels import F32, log_softmax, softmax
from gpt2cli.engine.model import GPT2Model, Progress
from gpt2cli.errors import ContextOverflowError, InvalidValue


def check_options(penalty_alpha: float, top_k: int) -> None:
    if not (np.isfinite(penalty_alpha) and 0.0 <= penalty_alpha <= 1.0):
        raise InvalidValue("penalty_alpha", "must be a number from 0 to 1", penalty_alpha)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InvalidValue("top_k", "must be an integer >= 1 (the candidates contrastive search compares)", top_k)


def _unit_rows(h: np.ndarray) -> np.ndarray:
    # [N, n_embd] -> [N, n_embd], each row divided by its norm (float32, as transformers computes it)
    return h / np.sqrt(np.einsum("ij,ij->i", h, h))[:, None]


def contrastive_search(
    model: GPT2Model,
    prompt: list[int],
    *,
    penalty_alpha: float,
    top_k: int,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    penalties: Penalties = Penalties(),
    logprobs: bool = False,
    prefill_progress: Progress | None = None,
    prefix: Prefix | None = None,
) -> Iterator[Step]:
    """One Step per new token (one row), until max_new_tokens or eos. Options and the prompt's fit are
    checked now; contrastive search does not slide, so prompt + max_new_tokens must fit the context.
    prefix: the prompt already prefilled by Prefix.every_position (shared: read, never written)."""
    check_options(penalty_alpha, top_k)
    penalties.validate()
    if max_new_tokens < 1:
        raise InvalidValue("max_new_tokens", "must be >= 1", max_new_tokens)
    n_ctx = model.config.n_positions
    total = len(prompt) + max_new_tokens
    if total > n_ctx:
        raise ContextOverflowError(
            f"prompt ({len(prompt)} tokens) + {{max_new_tokens}} ({max_new_tokens}) = {total} tokens exceeds the "
            f"model's context of {n_ctx}; contrastive search does not slide, so shorten one of them",
            "max_new_tokens",
        )
    k = min(top_k, model.config.vocab_size)
    if prefix is not None:
        prefix.check(prompt, total, every_position=True)
    return _steps(model, prompt, float(penalty_alpha), k, max_new_tokens, eos_token_id, penalties, logprobs, prefill_progress, prefix)


def _steps(model, prompt, alpha, k, max_new_tokens, eos_token_id, penalties, logprobs, progress, prefix) -> Iterator[Step]:
    n_prompt = len(prompt)
    total = n_prompt + max_new_tokens
    sequence = np.empty(total, dtype=np.int64)  # [prompt + new]
    sequence[:n_prompt] = prompt
    if prefix is None:
        prefix = Prefix.every_position(model, prompt, total, progress)
    logits = prefix.logits  # [1, V] (read only)
    context = np.empty((total, prefix.hidden.shape[1]), F32)  # [prompt + new, n_embd]: unit hidden states so far
    context[:n_prompt] = _unit_rows(prefix.hidden)
    cache = prefix.cache.repeat(k)  # every row holds the same sequence; row i tries candidate i
    prefix = None  # a prefill of our own goes once copied
    alpha_f = F32(alpha)
    for step in range(max_new_tokens):
        cur = n_prompt + step
        scores = check_logits(logits)  # [1, V]
        if penalties.active:
            scores = penalties.apply(scores.copy(), sequence[None, :cur])
        probs = softmax(scores[0])  # [V]
        candidates = _top_k(probs, k)  # [k], most likely first
        h = model.hidden_states(candidates[:, None], cache)[:, 0]  # [k, n_embd]: one batched pass for all k
        similarity = context[:cur] @ _unit_rows(h).T  # [cur, k]
        ranking = (F32(1.0) - alpha_f) * probs[candidates] - alpha_f * similarity.max(axis=0)  # [k]
        best = int(np.argmax(ranking))  # the first of equal scores, as torch's max
        token = int(candidates[best])
        lp = np.array([log_softmax(logits[0])[token]]) if logprobs else None
        sequence[cur] = token
        context[cur] = _unit_rows(h[best : best + 1])[0]
        done = eos_token_id is not None and token == eos_token_id
        yield Step(tokens=np.array([token]), logprobs=lp, eos=np.array([done]))
        if done or step == max_new_tokens - 1:
            return
        # Every row continues from the chosen candidate: its keys and values at position cur go to all rows
        # (the rows agree on every earlier position), and only its logits are needed.
        cache.k[:, :, :, cur] = cache.k[:, best : best + 1, :, cur]
        cache.v[:, :, :, cur] = cache.v[:, best : best + 1, :, cur]
        logits = model.logits(h[best : best + 1])  # [1, V]


def _top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest probabilities, largest first (equal ones in index order)."""
    top = np.argpartition(-probs, k - 1)[:k]
    return top[np.lexsort((top, -probs[top]))]

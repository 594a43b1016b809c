"""generate(): the token loop for greedy and sampled decoding of one or more rows, with the
context-overflow policies.

Nothing here prints or touches files: warnings go through a callback the caller provides.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator

import numpy as np

from gpt2cli.decoding.prefix import Prefix
from gpt2cli.decoding.sampling import Penalties, Sampler
from gpt2cli.engine.kernels import token_logprobs
from gpt2cli.engine.cache import kv_cache_bytes
from gpt2cli.engine.model import GPT2Model, Progress
from gpt2cli.errors import CheckpointError, ContextOverflowError, InvalidValue, UsageError
from gpt2cli.spec import GPT2Config


class Overflow(str, Enum):
    """What to do when prompt + new tokens exceed the model's context."""

    SLIDE = "slide"  # keep going on the most recent window
    TRUNCATE = "truncate"  # drop the prompt's start so that everything fits
    ERROR = "error"  # refuse

    @classmethod
    def of(cls, mode: "Overflow | str") -> "Overflow":
        try:
            return cls(mode)
        except ValueError:
            raise InvalidValue("on_overflow", f"must be one of {', '.join(m.value for m in cls)}", mode) from None


@dataclass(frozen=True)
class Step:
    tokens: np.ndarray  # [B] the token each row chose
    logprobs: np.ndarray | None  # [B] its log-probability under the raw (unwarped) distribution
    eos: np.ndarray  # [B] bool: the row has ended with <|endoftext|> (at this step or before)


class NonFiniteLogits(CheckpointError):
    """The model computed NaN or infinite logits: its weights are broken (the caller knows which files)."""


def check_logits(logits: np.ndarray) -> np.ndarray:
    """Returns logits unchanged; NaN or infinite ones mean broken weights, which no decoding can use."""
    if not np.isfinite(logits).all():
        raise NonFiniteLogits(
            "the model's logits are NaN or infinite: the weights hold NaN/inf values; re-download the model"
        )
    return logits


def cache_bytes(config: GPT2Config, prompt_tokens: int, max_new_tokens: int, num_samples: int = 1) -> int:
    """The most memory generate() fills with keys and values (an upper bound under every overflow mode).

    Until the context fills: the prompt once and each row's own new positions. After a slide the
    rows' windows differ, so each row holds its own window plus the steps left.
    """
    n_ctx = config.n_positions
    prompt = min(max(prompt_tokens, 1), n_ctx - 1)  # what a slide's prompt cut keeps at most
    reached = min(n_ctx, prompt + max_new_tokens - 1)  # the last token chosen is never fed back
    positions = prompt + num_samples * (reached - prompt) if num_samples > 1 else reached
    if prompt + max_new_tokens - 1 > n_ctx:  # it slides
        positions = max(positions, num_samples * min(n_ctx, n_ctx // 2 + max_new_tokens))
    return kv_cache_bytes(config, 1, positions)


def check_options(max_new_tokens: int, num_samples: int = 1, on_overflow: Overflow | str = Overflow.SLIDE) -> None:
    """Raises InvalidValue for options generate() cannot take (callers check early, before loading a model)."""
    if max_new_tokens < 1:
        raise InvalidValue("max_new_tokens", "must be >= 1", max_new_tokens)
    if num_samples < 1:
        raise InvalidValue("num_samples", "must be >= 1", num_samples)
    Overflow.of(on_overflow)


def fit_prompt(
    prompt: list[int], n_ctx: int, max_new_tokens: int, mode: Overflow | str, warn: Callable[[str], None],
    slides: bool = True,
) -> list[int]:
    """The prompt as the model will see it under the overflow mode; raises for `error` mode.

    slides: whether the decoding can slide at all (contrastive search and compare cannot), so that
    the errors suggest `slide` only where it helps."""
    mode = Overflow.of(mode)
    n = len(prompt)
    if mode is Overflow.ERROR:
        if n + max_new_tokens > n_ctx:
            other = "slide" if slides else "truncate" if max_new_tokens < n_ctx else None
            remedy = f"shorten the prompt, lower {{max_new_tokens}}, or use {{on_overflow}} {other}" if other else (
                f"lower {{max_new_tokens}} below {n_ctx}"
            )  # fmt: skip
            raise ContextOverflowError(
                f"the prompt ({n} token{'s' if n != 1 else ''}) plus {{max_new_tokens}} ({max_new_tokens}) exceed the model's context of "
                f"{n_ctx} tokens; {remedy}",
                "max_new_tokens", "on_overflow",
            )
        return prompt
    if mode is Overflow.TRUNCATE:
        if max_new_tokens >= n_ctx:
            remedy = "or use {on_overflow} slide" if slides else f"below {n_ctx}"
            raise ContextOverflowError(
                f"{{max_new_tokens}} {max_new_tokens} leaves no room for the prompt in the model's context of "
                f"{n_ctx} tokens; lower {{max_new_tokens}} {remedy}",
                "max_new_tokens", "on_overflow",
            )
        keep = n_ctx - max_new_tokens
        if n > keep:
            warn(f"prompt truncated: kept its last {keep} of {n} tokens so {max_new_tokens} new tokens fit the context of {n_ctx}")
            return prompt[-keep:]
        return prompt
    if n > n_ctx - 1:
        warn(f"prompt of {n} tokens is longer than the context of {n_ctx}: the model sees its last {n_ctx - 1}")
        return prompt[-(n_ctx - 1) :]
    return prompt


def generate(
    model: GPT2Model,
    prompt: list[int],
    sampler: Sampler,
    max_new_tokens: int,
    *,
    num_samples: int = 1,
    eos_token_id: int | None = None,
    ignore_eos: bool = False,
    logprobs: bool = False,
    on_overflow: Overflow | str = Overflow.SLIDE,
    penalties: Penalties = Penalties(),
    warn: Callable[[str], None] = lambda message: None,
    prefill_progress: Progress | None = None,
    prefix: Prefix | None = None,
) -> Iterator[Step]:
    """Decodes num_samples rows together, one Step per new token, until max_new_tokens or every row's eos.

    penalties (repetition penalty, no-repeat n-grams) apply to the logits before the sampler, over
    each row's whole sequence, prompt included; Step.logprobs stay those of the raw distribution.
    The prompt is prefilled once and shared by every row. With on_overflow="slide", a full context
    is re-encoded from the most recent half window of each row, so generation can go on forever.
    Arguments and the prompt's fit are checked here, before the first step is asked for, so a
    caller learns of an error before it prints anything. prefix: the prompt (as fitted) already
    prefilled by Prefix.last_position, shared with other decodings: read, never written.
    """
    check_options(max_new_tokens, num_samples, on_overflow)
    penalties.validate()
    if not prompt:
        raise UsageError("the prompt is empty; pass text, or let the caller start from <|endoftext|>")
    notes: list[str] = []
    prompt = fit_prompt(prompt, model.config.n_positions, max_new_tokens, on_overflow, notes.append)
    for message in notes:
        warn(message)
    # Sized to what the run can reach (the last token chosen is never fed back), not the context.
    capacity = min(model.config.n_positions, len(prompt) + max_new_tokens - 1)
    if prefix is not None:
        prefix.check(prompt, capacity)
    stop_on_eos = None if ignore_eos else eos_token_id
    return _steps(
        model, prompt, sampler, max_new_tokens, num_samples, stop_on_eos, logprobs, penalties, warn, bool(notes),
        prefill_progress, prefix, capacity,
    )  # fmt: skip


def _steps(
    model, prompt, sampler, max_new_tokens, num_samples, eos_token_id, logprobs, penalties, warn, warned, prefill_progress,
    prefix, capacity,
) -> Iterator[Step]:
    n_ctx = model.config.n_positions
    shared = prefix is not None
    if not shared:
        prefix = Prefix.last_position(model, prompt, capacity, prefill_progress)
    if num_samples > 1:
        cache = prefix.cache.share(num_samples)  # the prompt's keys and values held once for every row
    else:
        # One row writes its new positions after the prompt's: into the prefill's cache when it is ours,
        # else into a copy (the prompt's positions copied; a SharedPrefixCache of one row would round
        # its attention differently from the cache it has alone).
        cache = prefix.cache.repeat(1) if shared else prefix.cache
    logits = np.repeat(prefix.logits, num_samples, axis=0)  # [B, V]
    prefix = None  # only through cache from here, so a slide lets the prompt's keys and values go
    # [B, prompt + new]: reserved for a context's worth of new tokens and doubled when they outgrow it,
    # since -n may ask for far more tokens (a slide goes on forever) than one array could hold at once.
    sequences = np.empty((num_samples, len(prompt) + min(max_new_tokens, n_ctx)), dtype=np.int64)
    sequences[:, : len(prompt)] = prompt
    length = len(prompt)  # of every row in sequences
    eos = np.zeros(num_samples, dtype=bool)
    for i in range(max_new_tokens):
        scores = check_logits(logits)  # [B, V]
        if penalties.active:
            scores = penalties.apply(scores.copy(), sequences[:, :length])
        tokens = sampler(scores)  # [B]
        lp = token_logprobs(logits, tokens) if logprobs else None  # [B]
        if eos_token_id is not None:
            tokens = np.where(eos, eos_token_id, tokens)
            eos = eos | (tokens == eos_token_id)
        yield Step(tokens=tokens, logprobs=lp, eos=eos.copy())
        if eos.all() or i == max_new_tokens - 1:
            return
        if length == sequences.shape[1]:
            sequences = np.concatenate([sequences, np.empty_like(sequences)], axis=1)  # [B, 2 * held]
        sequences[:, length] = tokens
        length += 1
        if cache.length == n_ctx:  # (a cache sized below n_ctx is never filled before the last step)
            window = n_ctx // 2
            if not warned:
                warn(f"reached the model's context of {n_ctx} tokens: sliding on, the model now sees only the last {window}")
                warned = True
            recent = sequences[:, length - window : length]  # [B, window]
            # steps i+1 .. max_new_tokens-1 are left, and all but the last feed a token back
            cache = None  # let the full cache go before the next one is filled
            cache = model.new_cache(num_samples, min(n_ctx, window + max_new_tokens - i - 2))
            logits = model.forward(recent, cache, progress=prefill_progress)
        else:
            logits = model.forward(tokens[:, None], cache)  # [B, V]

"""A prompt run through the model once, for the decodings that continue it (`compare`'s rows).

A Prefix holds the prompt's keys and values (a batch-1 KVCache), the logits of its last position
and, for contrastive search, every position's last hidden state. A decoding handed one starts from
it instead of prefilling, by the same code it prefills with alone, so its result is bitwise the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpt2cli.engine.cache import KVCache
from gpt2cli.engine.model import GPT2Model, Progress


@dataclass(frozen=True)
class Prefix:
    """One prefill pass over a prompt. Decodings that continue a shared Prefix read it and never write it."""

    tokens: tuple[int, ...]
    cache: KVCache  # batch 1, the prompt's positions filled; capacity: the most positions a continuation may reach
    logits: np.ndarray  # [1, V] the last position's
    hidden: np.ndarray | None = None  # [T, n_embd] every position's last-layer output (after ln_f), or None

    @classmethod
    def last_position(cls, model: GPT2Model, prompt: list[int], capacity: int, progress: Progress | None = None) -> "Prefix":
        """The pass generate and (group) beam search prefill with: only the last position goes through the
        last layer whole (GPT2Model.forward), so there are no hidden states of the other positions."""
        cache = model.new_cache(1, capacity)
        logits = model.forward(np.asarray([prompt]), cache, progress=progress)  # [1, V]
        return cls(tuple(int(t) for t in prompt), cache, logits)

    @classmethod
    def every_position(cls, model: GPT2Model, prompt: list[int], capacity: int, progress: Progress | None = None) -> "Prefix":
        """The pass contrastive search prefills with: every position's hidden state, which it compares candidates to."""
        cache = model.new_cache(1, capacity)
        hidden = model.hidden_states(np.asarray([prompt]), cache, progress)[0]  # [T, n_embd]
        return cls(tuple(int(t) for t in prompt), cache, model.logits(hidden[-1:]), hidden)  # logits [1, V]

    def check(self, prompt, capacity: int, *, every_position: bool = False) -> None:
        """Raises ValueError unless this prefix is prompt's, with room for capacity positions (our own invariants)."""
        if tuple(int(t) for t in prompt) != self.tokens:
            raise ValueError("the prefix was prefilled from another prompt")
        if self.cache.capacity < capacity:
            raise ValueError(f"the prefix's cache holds {self.cache.capacity} positions; the decoding needs {capacity}")
        if every_position and self.hidden is None:
            raise ValueError("contrastive search needs a prefix of every position's hidden states (Prefix.every_position)")

    def freeze(self) -> "Prefix":
        """Makes its arrays read-only, so a decoding that would write into a shared prefix fails instead."""
        for array in (self.cache.k, self.cache.v, self.logits, self.hidden):
            if array is not None:
                array.setflags(write=False)
        return self


class Prefills:
    """One prompt's prefills for several decodings, each frozen so that no decoding changes what the next
    one starts from.

    Two kinds, because contrastive search's prefill (every position through the last layer) and the
    others' (the last position only, GPT2Model.forward's shortcut) round differently at the last
    layer, and every decoding must give exactly what it gives alone. With both=True (a set that
    includes contrastive search) the first request makes both from one pass over the layers below the
    last (GPT2Model.prefill_two_ways); otherwise each kind is made when first asked for. Either way the
    prompt goes through the model once. Memory: each kind's keys and values once (capacity positions,
    of which the prompt's are written).
    """

    def __init__(
        self, model: GPT2Model, prompt: list[int], capacity: int, progress: Progress | None = None, *, both: bool = False
    ):
        self.model, self.prompt, self.capacity, self.progress, self.both = model, list(prompt), capacity, progress, both
        self._last: Prefix | None = None
        self._every: Prefix | None = None

    def last_position(self) -> Prefix:
        if self._last is None:
            if self.both:
                self._make_both()
            else:
                self._last = Prefix.last_position(self.model, self.prompt, self.capacity, self.progress).freeze()
        return self._last

    def every_position(self) -> Prefix:
        if self._every is None:
            if self.both:
                self._make_both()
            else:
                self._every = Prefix.every_position(self.model, self.prompt, self.capacity, self.progress).freeze()
        return self._every

    def _make_both(self) -> None:
        tokens = tuple(int(t) for t in self.prompt)
        last, every = self.model.new_cache(1, self.capacity), self.model.new_cache(1, self.capacity)
        h_last, h_every = self.model.prefill_two_ways(np.asarray([self.prompt]), last, every, self.progress)
        self._last = Prefix(tokens, last, self.model.logits(h_last[:, -1])).freeze()  # as GPT2Model.forward: [1, V]
        hidden = h_every[0]  # [T, n_embd]
        self._every = Prefix(tokens, every, self.model.logits(hidden[-1:]), hidden).freeze()

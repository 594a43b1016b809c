"""Where the forward pass keeps keys and values: one sequence per row (KVCache), rows continuing one
shared prompt (SharedPrefixCache), and independent sequences at their own positions (SlotCache, for
continuous batching). A KVCache is allocated once at the capacity its run can reach, a SlotCache
grows as its records ask (reserve); nothing here computes or prints.
"""

from __future__ import annotations

import numpy as np

from gpt2cli.engine.kernels import F32
from gpt2cli.spec import GPT2Config


def kv_cache_bytes(config: GPT2Config, rows: int, positions: int) -> int:
    """Bytes of keys and values once `positions` positions of `rows` rows are written: a key and a
    value (2) of n_embd float32s (4 bytes) in each of n_layer layers, per position per row."""
    return 2 * config.n_layer * config.n_embd * 4 * rows * positions


class KVCache:
    """Keys and values of every layer for a batch of sequences that share one length.

    Allocated once at full capacity (zero pages cost no memory until written); decoding writes
    each new position in place, beam search reorders rows in place.
    """

    def __init__(self, config: GPT2Config, batch: int, capacity: int):
        shape = (config.n_layer, batch, config.n_head, capacity, config.head_dim)
        self.k = np.zeros(shape, dtype=F32)  # [n_layer, B, n_head, capacity, head_dim]
        self.v = np.zeros(shape, dtype=F32)  # [n_layer, B, n_head, capacity, head_dim]
        self.length = 0

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def start(self, b: int, t: int, n_positions: int) -> slice:
        """Opens a pass of t new positions for each of b rows (all at self.length): the positions, as
        an index into the position embeddings. Raises ValueError if they do not fit."""
        if b != self.batch:
            raise ValueError(f"batch of {b} rows for a cache of {self.batch}")
        if self.length + t > min(self.capacity, n_positions):
            raise ValueError(f"{self.length + t} positions exceed the context of {min(self.capacity, n_positions)}")
        return slice(self.length, self.length + t)

    def advance(self, t: int) -> None:
        """Closes a pass: the rows now hold t more positions."""
        self.length += t

    def repeat(self, n: int) -> "KVCache":
        """A batch-n cache whose every row is a copy of this batch-1 cache (one prefill, many rows)."""
        assert self.batch == 1, "repeat() expands a batch-1 cache"
        out = KVCache.__new__(KVCache)
        n_layer, _, n_head, capacity, head_dim = self.k.shape
        out.k = np.zeros((n_layer, n, n_head, capacity, head_dim), dtype=F32)
        out.v = np.zeros_like(out.k)
        out.k[:, :, :, : self.length] = self.k[:, :, :, : self.length]
        out.v[:, :, :, : self.length] = self.v[:, :, :, : self.length]
        out.length = self.length
        return out

    def share(self, n: int) -> "SharedPrefixCache":
        """n rows that all continue this batch-1 cache's sequence, which is held once, not copied n times."""
        assert self.batch == 1, "share() continues a batch-1 cache"
        return SharedPrefixCache(self, n)

    def reorder(self, rows: np.ndarray, same_prefix: np.ndarray | None = None) -> None:
        """Row b becomes the old row rows[b] (beam search following the chosen parents), in place.

        same_prefix[b]: how many leading positions row b already holds exactly as its parent does (a
        position's keys and values depend only on the tokens up to it, so rows whose sequences agree
        there agree there too); only the positions after that are copied. Beams mostly share all
        but their last few tokens, so most of the cache stays where it is.
        """
        n = self.length
        start = {row: 0 for row in range(self.batch)} if same_prefix is None else dict(enumerate(np.asarray(same_prefix).tolist()))
        # Copies row by row, each straight from its parent: a row is overwritten only once no other row
        # still needs its old contents, and a cycle (rows swapping parents) parks one row in a copy.
        # Rows that keep their own parent are not touched.
        parent_of = {row: int(p) for row, p in enumerate(np.asarray(rows).tolist()) if p != row and start[row] < n}
        parked: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        while parent_of:
            still_read = set(parent_of.values())
            ready = [row for row in parent_of if row not in still_read] or [next(iter(parent_of))]
            for row in ready:
                if row in still_read:  # only cycles are left: keep this row's old contents first
                    parked[row] = (self.k[:, row, :, :n].copy(), self.v[:, row, :, :n].copy())
                p = parent_of.pop(row)
                k, v = parked[p] if p in parked else (self.k[:, p, :, :n], self.v[:, p, :, :n])
                first = start[row]
                self.k[:, row, :, first:n] = k[:, :, first:n]
                self.v[:, row, :, first:n] = v[:, :, first:n]


class SharedPrefixCache:
    """Rows that continue one prompt: the prompt's keys and values once, each row's new positions after them.

    Exact: a position's keys and values depend only on the tokens up to it, so the prompt's are the
    same in every row. With 64 samples of a 1000-token prompt, the cache holds 1000 + 64 x n
    positions instead of 64 x (1000 + n), and a decoding step reads the prompt's keys once for all
    rows. Decoding steps only (one new position per row); beam search reorders the rows' own parts.
    """

    def __init__(self, prefix: KVCache, batch: int):
        self.prefix = prefix  # batch 1, filled to prefix.length
        n_layer, _, n_head, capacity, head_dim = prefix.k.shape
        self.own = KVCache.__new__(KVCache)
        shape = (n_layer, batch, n_head, capacity - prefix.length, head_dim)
        self.own.k = np.zeros(shape, dtype=F32)  # [n_layer, B, n_head, capacity - P, head_dim]
        self.own.v = np.zeros(shape, dtype=F32)
        self.own.length = 0

    @property
    def batch(self) -> int:
        return self.own.batch

    @property
    def capacity(self) -> int:
        return self.prefix.length + self.own.capacity

    @property
    def length(self) -> int:
        return self.prefix.length + self.own.length

    @length.setter
    def length(self, value: int) -> None:
        self.own.length = value - self.prefix.length

    def start(self, b: int, t: int, n_positions: int) -> slice:
        """As KVCache.start; decoding steps only (one new position per row)."""
        if t > 1:
            raise ValueError("a shared-prompt cache takes decoding steps (one token per row) only")
        return KVCache.start(self, b, t, n_positions)  # type: ignore[arg-type]

    def advance(self, t: int) -> None:
        self.length += t

    def reorder(self, rows: np.ndarray, same_prefix: np.ndarray | None = None) -> None:
        """As KVCache.reorder (same_prefix counts from the prompt's start); the shared prompt never moves."""
        if same_prefix is not None:
            same_prefix = np.maximum(np.asarray(same_prefix) - self.prefix.length, 0)
        self.own.reorder(rows, same_prefix)



# A SlotCache grows its capacity in steps of this many positions (or doubles, whichever is more).
_GROW_POSITIONS = 64


class SlotCache:
    """Keys and values of independent sequences, one per slot, each at its own length.

    Continuous batching (gpt2cli.batch.engine): slots 0..n-1 decode together, each at its own
    position; a finished slot is refilled by prefilling the next prompt into it (slot() is a batch-1
    KVCache view onto it) while the others wait one step. Its capacity (positions per slot) is what
    its records have asked for so far (reserve()), not the whole context: each slot's positions of
    one head lie together, so a cache sized for the context spreads a short record's keys over every
    2 MB huge page of it, and the kernel zeroes and keeps all of them (GPT-2 small, 64 slots: 4.8 GB
    and ~1.2 s of a batch run for 32-token prompts and 64 new tokens, which need 96 positions).
    """

    def __init__(self, config: GPT2Config, slots: int, capacity: int, *, limit: int | None = None):
        shape = (config.n_layer, slots, config.n_head, capacity, config.head_dim)
        self.k = np.zeros(shape, dtype=F32)  # [n_layer, S, n_head, capacity, head_dim]
        self.v = np.zeros(shape, dtype=F32)  # [n_layer, S, n_head, capacity, head_dim]
        self.limit = max(capacity, limit or 0)  # the most reserve() grows it to: the context
        self.lengths = np.zeros(slots, dtype=np.int64)  # [S] positions each slot holds
        self.mask: np.ndarray | None = None  # [n, 1, 1, span] for the step being run (start..advance)
        self.length = None  # no one length: each slot has its own (a KVCache's `length`, for the forward pass)

    def reserve(self, positions: int) -> None:
        """Capacity for at least `positions` positions per slot (at most the limit): a larger cache,
        doubled or grown by _GROW_POSITIONS, whichever is more, into which the slots' keys and values
        move. Positions already held keep their exact values; views from slot()/rows() made before
        a reserve() no longer see the cache."""
        if positions <= self.capacity:
            return
        if positions > self.limit:
            raise ValueError(f"a slot cache holds at most {self.limit} positions per slot, not {positions}")
        step = -(-positions // _GROW_POSITIONS) * _GROW_POSITIONS
        capacity = min(self.limit, max(step, 2 * self.capacity))
        held = int(self.lengths.max(initial=0))  # the most positions any slot holds
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.zeros((*old.shape[:3], capacity, old.shape[4]), dtype=F32)
            new[:, :, :, :held] = old[:, :, :, :held]
            setattr(self, name, new)

    @property
    def slots(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def start(self, b: int, t: int, n_positions: int) -> np.ndarray:
        """Opens a decoding step of slots 0..b-1, each appending one position at its own length: their
        positions [b, 1] (an index into the position embeddings); the step's attention mask hides
        each slot's positions past its own."""
        positions = self.lengths[:b]  # [b]
        if t != 1 or b > self.slots or (positions >= min(self.capacity, n_positions)).any():
            raise ValueError("slots take one token per row, a row per slot, while no slot is full")
        span = int(positions.max()) + 1
        visible = np.arange(span)[None, :] <= positions[:, None]  # [b, span]
        self.mask = np.where(visible, F32(0.0), F32(-np.inf))[:, None, None, :]  # [b, 1, 1, span]
        return positions[:, None]

    def advance(self, t: int) -> None:
        """Closes the step: the slots that took part hold one more position each."""
        self.lengths[: self.mask.shape[0]] += t
        self.mask = None

    def slot(self, s: int) -> KVCache:
        """An empty batch-1 KVCache whose storage is slot s: a prompt prefilled into it lands in the slot
        (by the very code a single run's prefill runs). Set lengths[s] afterwards."""
        return self.rows(s, s + 1)

    def rows(self, start: int, stop: int) -> KVCache:
        """An empty batch KVCache whose rows are slots start..stop-1: prompts prefilled into it together
        (GPT2Model.padded_hidden_states) land in those slots. Set their lengths afterwards."""
        view = KVCache.__new__(KVCache)
        view.k, view.v, view.length = self.k[:, start:stop], self.v[:, start:stop], 0
        return view

    def move(self, source: int, target: int) -> None:
        """Slot target takes over slot source's sequence (keeping the active slots contiguous)."""
        n = int(self.lengths[source])
        self.k[:, target, :, :n] = self.k[:, source, :, :n]
        self.v[:, target, :, :n] = self.v[:, source, :, :n]
        self.lengths[target] = n
        self.lengths[source] = 0

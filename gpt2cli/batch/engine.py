"""Continuous batching: up to `slots` records decode together, each in its own slot of one SlotCache.

Each step runs one forward pass for every active row (GPT2Model.step_slots: one GEMM per weight for
all rows, each row at its own position), then each row chooses its token exactly as `generate` does
for one row (penalties, its own seeded Sampler, eos, stop strings, max_tokens). When a row finishes,
its result is handed back at once and the next record's prompt is prefilled into the freed slot (by
the same prefill code a single run uses) while the other rows wait one step. Once no records are
left, finished rows' slots are filled by moving the last active row down, so the active rows always
are slots 0..n-1 and a step never computes an idle row.

A record's first token comes from exactly the computation `generate` runs. Later tokens come from
products that several rows share, and a matrix product over n rows rounds differently from a
one-row product (OpenBLAS picks its kernels and tiles by shape), so a record's log-probabilities
agree with `generate`'s to about 1e-6 rather than bit for bit; its tokens are the same unless two
candidates tie to within that rounding. `--batch-size 1` runs each record through generate's own
code, bit for bit.

Records the batch cannot hold run alone, through the session, as before: contrastive search (its k
candidates are a batch of their own) and records whose prompt and max_tokens pass the context
(they slide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from gpt2cli.decoding.generate import check_logits, fit_prompt
from gpt2cli.decoding.sampling import Sampler
from gpt2cli.decoding.text import Completion
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.engine.cache import SlotCache, kv_cache_bytes
from gpt2cli.errors import InvalidValue, OptionError
from gpt2cli.request import Request, available_memory
from gpt2cli.session import Session, completion_record
from gpt2cli.spec import GPT2Config


def check_slots(config: GPT2Config, slots: int) -> int:
    """Raises a usage error, before anything is allocated, unless `slots` rows of a whole context's keys
    and values fit in memory; returns the bytes they take at most."""
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise InvalidValue("batch_size", "must be an integer >= 1", slots)
    needed = kv_cache_bytes(config, slots, config.n_positions)
    available = available_memory()
    if available is not None and slots > 1 and needed > available:
        raise OptionError(
            f"{{batch_size}} {slots} needs up to ~{needed / 1e9:.1f} GB for keys and values ({slots} rows of up to "
            f"{config.n_positions} positions), {available / 1e9:.1f} GB available; lower {{batch_size}}",
            "batch_size",
        )
    return needed


# Records decoding together by default. Measured on GPT-2 small (benchmarks/README.md, "Batch"): 64
# rows gave ~10% more tokens/s than 32 but hold twice the keys and values; 32 keeps most of the
# throughput. For bigger models the default halves until the slots' keys and values take at most
# half the memory available (gpt2-xl: 32 slots would reserve 20 GB), see default_batch_size.
DEFAULT_SLOTS = 32


def default_batch_size(config: GPT2Config, preferred: int = DEFAULT_SLOTS) -> int:
    """preferred, halved until the slots' keys and values (a whole context each) take at most half the
    memory available: a default that never crowds out the rest of the machine."""
    available = available_memory()
    slots = preferred
    while available is not None and slots > 1 and kv_cache_bytes(config, slots, config.n_positions) > available // 2:
        slots //= 2
    return slots


# Prompts prefilled together take at most this many padded positions per pass (rows x the longest):
# a pass's activations stay ~100 MB on GPT-2 small's MLP, and its products are long GEMMs already.
PREFILL_TOKENS = 2048
# ... and at most this share of a pass may be padding: prompts are grouped by length, so a short
# prompt does not pay for a long one's positions.
PREFILL_PADDING = 0.25


def prefill_groups(lengths: list[int], budget: int = PREFILL_TOKENS, padding: float = PREFILL_PADDING) -> list[list[int]]:
    """Indices into lengths, in groups to run through the model together (right-padded to the group's
    longest): in order of length, a group grows while its padded size stays within budget (a longer
    prompt runs alone) and padding within that share of it. Every index appears once."""
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        padded = lengths[i] * (len(group) + 1)  # i is the group's longest so far
        if group and (padded > budget or padded - (real + lengths[i]) > padding * padded):
            groups.append(group)
            group, real = [], 0
        group.append(i)
        real += lengths[i]
    if group:
        groups.append(group)
    return groups


@dataclass
class Job:
    """A record ready to decode in a slot: its prompt as the model reads it, and its Request."""

    key: object  # what the caller knows the record by (handed back with its result)
    rid: str | int  # the record's id, for its result line
    ids: list[int]  # the prompt after --on-overflow's cut
    prompt_tokens: int  # the prompt's length as given (what generate --json reports)
    request: Request


@dataclass
class Done:
    """A record's result known without decoding it in the batch (an error, or a record run alone)."""

    key: object
    result: dict


def batchable(config: GPT2Config, ids: list[int], request: Request) -> list[int] | None:
    """The prompt a slot would decode (after the overflow policy's cut), or None when the record must
    run alone: contrastive search, several samples, or a run that would slide past the context.
    Raises what generate raises for a prompt that cannot fit (--on-overflow error)."""
    if request.contrastive is not None or request.num_samples != 1:
        return None
    n_ctx = config.n_positions
    seen = fit_prompt(ids, n_ctx, request.max_tokens, request.on_overflow, lambda message: None)
    if len(seen) + request.max_tokens - 1 > n_ctx:
        return None  # slides: the single-run path re-encodes its window
    return seen


class _Row:
    """One record decoding in a slot: generate's per-row choice, step by step."""

    def __init__(self, job: Job, session: Session):
        r = job.request
        self.job = job
        self.sampler = Sampler(r.sampling, r.seed)
        self.penalties = r.penalties
        self.eos = None if r.ignore_eos else session.eos
        self.completion = Completion.start(session.tokenizer.token_bytes, r.stop)
        self.sequence = np.empty((1, len(job.ids) + r.max_tokens), dtype=np.int64)  # [1, prompt + new]
        self.sequence[0, : len(job.ids)] = job.ids
        self.length = len(job.ids)
        self.produced = 0
        self.token = -1  # the token to feed back next step

    def choose(self, logits: np.ndarray, logprobs: np.ndarray | None = None) -> bool:
        """Takes the next token from this row's logits [1, V] (checked finite; logprobs [V]: their
        log_softmax, if already computed); True when the record has finished."""
        scores = logits
        if self.penalties.active:
            scores = self.penalties.apply(scores.copy(), self.sequence[:, : self.length])
        token = int(self.sampler(scores)[0])
        self.produced += 1
        if self.eos is not None and token == self.eos:
            self.completion.finish_reason = "eos"
            return True
        self.completion.add(token, float(log_softmax(logits)[0, token] if logprobs is None else logprobs[token]))
        if self.completion.finish_reason:  # a stop string
            return True
        if self.produced == self.job.request.max_tokens:
            self.completion.finish_reason = "length"
            return True
        self.sequence[0, self.length] = token
        self.length += 1
        self.token = token
        return False

    def result(self) -> dict:
        return {"id": self.job.rid, **completion_record(self.completion, self.job.prompt_tokens)}


class ContinuousBatch:
    """Decodes Jobs `slots` at a time, refilling each slot as its record finishes."""

    def __init__(self, session: Session, slots: int):
        self.session = session
        self.slots = slots
        self.model = session.model
        self.cache = SlotCache(session.config, slots, session.config.n_positions)

    def run(self, jobs: Iterable["Job | Done"]) -> Iterator[tuple[object, dict]]:
        """(key, result line) for every job, as each finishes (not in order); a Done passes straight through."""
        pending = iter(jobs)
        rows: list[_Row | None] = []  # rows[i] decodes in slot i; None: a slot to refill
        with self.session._weights_named():
            while True:
                for slot in [i for i, row in enumerate(rows) if row is None] + list(range(len(rows), self.slots)):
                    while pending is not None:  # this slot's next record (one may finish at its first token)
                        job = next(pending, None)
                        if job is None:
                            pending = None
                            break
                        if isinstance(job, Done):
                            yield job.key, job.result
                            continue
                        row = self._start(job, slot)
                        if row.token >= 0:
                            if slot < len(rows):
                                rows[slot] = row
                            else:  # slots past the end are filled in order, so this is slot len(rows)
                                rows.append(row)
                            break
                        yield job.key, row.result()
                    if pending is None:
                        break
                rows = self._compact(rows)
                if not rows:
                    return
                logits = check_logits(self.model.step_slots(np.asarray([row.token for row in rows]), self.cache))  # [n, V]
                logprobs = log_softmax(logits)  # [n, V]: row by row, as one row's own
                for i, row in enumerate(rows):
                    if row.choose(logits[i : i + 1], logprobs[i]):
                        yield row.job.key, row.result()
                        rows[i] = None
                        self.cache.lengths[i] = 0

    def _start(self, job: Job, slot: int) -> _Row:
        """Prefills the job's prompt into the slot and chooses its first token (row.token < 0: it has
        already finished)."""
        row = _Row(job, self.session)
        logits = check_logits(self.model.forward(np.asarray([job.ids]), self.cache.slot(slot)))  # [1, V], as generate's prefill
        self.cache.lengths[slot] = len(job.ids)
        if row.choose(logits):  # finished at once: its token stays -1 and the slot is free again
            self.cache.lengths[slot] = 0
        return row

    def _compact(self, rows: list["_Row | None"]) -> list[_Row]:
        """The active rows in slots 0..n-1: each empty slot below n takes the last active row (its keys
        and values move down), so a step never computes an empty slot."""
        alive = [i for i, row in enumerate(rows) if row is not None]
        n = len(alive)
        holes = [i for i in range(n) if rows[i] is None]
        for hole, source in zip(holes, [i for i in alive if i >= n]):
            self.cache.move(source, hole)
            rows[hole] = rows[source]
        return rows[:n]  # type: ignore[return-value]

"""Continuous batching: up to `slots` records decode together, each in its own slot of one SlotCache.

Each step runs one forward pass for every active row (GPT2Model.forward over the SlotCache: one GEMM per
weight for all rows, each row at its own position), then each row chooses its token exactly as `generate` does
for one row (penalties, its own seeded Sampler, eos, stop strings, max_tokens). When rows finish,
their results are handed back at once, the remaining rows move down into slots 0..n-1 (a step never
computes an idle row), and the next records' prompts are prefilled into the free slots after them:
together, right-padded, in groups of similar length (prefill_groups; one prompt alone runs generate's
own prefill), since a few dozen prompts in one pass run their products as long GEMMs (32 prompts of
32 tokens: ~2.4 s together, ~9 s one by one).

Shared products round differently from one row's (OpenBLAS picks its kernels and tiles by shape:
an n-row product differs from a one-row product in the last bits), so a record's log-probabilities
agree with `generate`'s to about 1e-6 rather than bit for bit; its tokens are the same unless two
candidates tie to within that rounding. `--batch-size 1` runs each record through generate's own
code, bit for bit.

Records the batch cannot hold run alone, through the session, as before: contrastive search (its k
candidates are a batch of their own) and records whose prompt and max_tokens pass the context
(they slide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from gpt2cli.decoding.generate import check_logits, fit_prompt
from gpt2cli.decoding.sampling import Sampler
from gpt2cli.decoding.text import Completion
from gpt2cli.engine.kernels import token_logprobs
from gpt2cli.engine.cache import SlotCache, kv_cache_bytes
from gpt2cli.engine.model import layout_copy_bytes
from gpt2cli.errors import InvalidValue, OptionError
from gpt2cli.request import Request, available_memory, check_copies
from gpt2cli.session import Session, completion_record
from gpt2cli.spec import GPT2Config


def check_slots(config: GPT2Config, slots: int, engines: int = 1) -> int:
    """Raises an error, before anything is allocated, unless `engines` engines on this machine (a local
    Ray's actors; 1 otherwise), each with `slots` rows of a whole context's keys and values, fit in memory
    beside their weight copies (engine.model.layout_copy_bytes, each made at its engine's first step);
    returns the bytes the keys and values take at most, all engines together."""
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise InvalidValue("batch_size", "must be an integer >= 1", slots)
    one_copy = layout_copy_bytes(config)  # one engine's
    needed, copies = engines * kv_cache_bytes(config, slots, config.n_positions), engines * one_copy
    available = available_memory()
    if available is not None and needed + copies > available:
        check_copies(one_copy, available)  # not even one engine's copies fit
        if copies > available:
            raise OptionError(
                f"{engines} actors on this machine need ~{copies / 1e9:.1f} GB beyond the weights for their copies of the "
                f"LM head and MLP weights (~{one_copy / 1e9:.1f} GB each), {available / 1e9:.1f} GB available; lower {{ray_actors}}",
                "ray_actors",
            )
        if slots > 1:
            rows, whose, lower = (
                (f"{engines} actors x {slots} rows", "their", "{batch_size} or {ray_actors}") if engines > 1
                else (f"{slots} rows", "the engine's", "{batch_size}")
            )  # fmt: skip
            raise OptionError(
                f"{{batch_size}} {slots} needs up to ~{needed / 1e9:.1f} GB for keys and values ({rows} of up to "
                f"{config.n_positions} positions; besides ~{copies / 1e9:.1f} GB for {whose} weight copies), "
                f"{(available - copies) / 1e9:.1f} GB available for them; lower {lower}",
                "batch_size", "ray_actors",
            )
    return needed


# Records decoding together by default. Measured on GPT-2 small (benchmarks/README.md, "Batch"): 64
# rows gave ~10% more tokens/s than 32 but hold twice the keys and values; 32 keeps most of the
# throughput. For bigger models the default halves until the slots' keys and values take at most
# half the memory available (gpt2-xl: 32 slots would reserve 20 GB), see default_batch_size.
DEFAULT_SLOTS = 32


def default_batch_size(config: GPT2Config, preferred: int = DEFAULT_SLOTS, engines: int = 1) -> int:
    """preferred, halved until the slots' keys and values (a whole context each, in each of `engines`
    engines on this machine) take at most half the memory left beside the engines' weight copies: a
    default that never crowds out the rest of the machine."""
    available = available_memory()
    if available is not None:
        available -= engines * layout_copy_bytes(config)
    slots = preferred
    while available is not None and slots > 1 and engines * kv_cache_bytes(config, slots, config.n_positions) > available // 2:
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

    def choose(self, logits: np.ndarray) -> bool:
        """Takes the next token from this row's logits [1, V] (checked finite); True when the record has finished."""
        scores = logits
        if self.penalties.active:
            scores = self.penalties.apply(scores.copy(), self.sequence[:, : self.length])
        token = int(self.sampler(scores)[0])
        self.produced += 1
        if self.eos is not None and token == self.eos:
            self.completion.finish_reason = "eos"
            return True
        self.completion.add(token, float(token_logprobs(logits, np.array([token]))[0]))
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
    """Decodes Jobs `slots` at a time, refilling the free slots as records finish."""

    def __init__(self, session: Session, slots: int):
        self.session = session
        self.slots = slots
        self.model = session.model
        self.cache = SlotCache(session.config, slots, 0, limit=session.config.n_positions)  # grows as jobs start
        self._pending: Iterator[Job | Done] | None = None
        self._ready: Callable[[], bool] = lambda: True

    def run(self, jobs: Iterable["Job | Done"], ready: Callable[[], bool] = lambda: True) -> Iterator[tuple[object, dict]]:
        """(key, result line) for every job, as each finishes (not in order); a Done passes straight
        through. ready() says whether the next job can be had without waiting for input: while rows
        decode, only the jobs already come join them, so no result waits on a slow input."""
        self._pending = iter(jobs)
        self._ready = ready
        rows: list[_Row] = []  # rows[i] decodes in slot i
        with self.session.naming_weights():
            while True:
                yield from self._fill(rows)
                if not rows:
                    if self._pending is None:
                        return
                    continue  # every record started has finished: wait for the next
                logits = check_logits(self.model.forward(np.asarray([[row.token] for row in rows]), self.cache))  # [n, V]
                finished = []
                for i, row in enumerate(rows):
                    if row.choose(logits[i : i + 1]):
                        yield row.job.key, row.result()
                        finished.append(i)
                rows[:] = self._compact(rows, finished)

    def _fill(self, rows: list[_Row]) -> Iterator[tuple[object, dict]]:
        """Starts the next jobs in the free slots after rows (appending them to rows) until every slot
        is taken, no job is left, or (with rows to decode) no more has come yet; yields the results
        known without a step (a Done, or a record that finished at its first token). Waits for input
        only when there is nothing else to do."""
        waiting = False
        while self._pending is not None and len(rows) < self.slots and not waiting:
            jobs: list[Job] = []
            while len(jobs) < self.slots - len(rows):
                if (rows or jobs) and not self._ready():
                    waiting = True
                    break
                job = next(self._pending, None)
                if job is None:
                    self._pending = None
                    break
                if isinstance(job, Done):
                    yield job.key, job.result
                else:
                    jobs.append(job)
            for group in prefill_groups([len(job.ids) for job in jobs]):
                started = self._start([jobs[i] for i in group], len(rows))
                for row in started:
                    if row.token < 0:  # finished at its first token
                        yield row.job.key, row.result()
                rows[:] = self._compact(rows + started, [len(rows) + i for i, row in enumerate(started) if row.token < 0])

    def _start(self, jobs: list[Job], first: int) -> list[_Row]:
        """Prefills the jobs' prompts into slots first.. (together when several) and chooses each one's
        first token (row.token < 0: it has already finished, and its slot is free again)."""
        # the positions a job writes: its prompt and every new token but the last (never fed back)
        self.cache.reserve(max(len(job.ids) + job.request.max_tokens - 1 for job in jobs))
        if len(jobs) == 1:  # exactly generate's prefill
            logits = self.model.forward(np.asarray([jobs[0].ids]), self.cache.slot(first))  # [1, V]
            lengths = np.asarray([len(jobs[0].ids)])
        else:
            h, lengths = self.model.padded_hidden_states([job.ids for job in jobs], self.cache.rows(first, first + len(jobs)))
            logits = self.model.logits(h[np.arange(len(jobs)), lengths - 1])  # [k, V]: each prompt's last position
        logits = check_logits(logits)
        rows = []
        for i, job in enumerate(jobs):
            row = _Row(job, self.session)
            finished = row.choose(logits[i : i + 1])
            self.cache.lengths[first + i] = 0 if finished else lengths[i]
            rows.append(row)
        return rows

    def _compact(self, rows: list[_Row], finished: list[int]) -> list[_Row]:
        """rows without the finished ones, the rest in slots 0..n-1: each freed slot below n takes the
        last active row (its keys and values move down), so a step never computes an empty slot."""
        gone = set(finished)
        for i in finished:
            self.cache.lengths[i] = 0
        n = len(rows) - len(gone)
        holes = [i for i in range(n) if i in gone]
        for hole, source in zip(holes, [i for i in range(n, len(rows)) if i not in gone]):
            self.cache.move(source, hole)
            rows[hole] = rows[source]
        return rows[:n]

"""A batch of records on this machine: results written as records finish, records already in the
output skipped.

With a batch size above 1, generation records decode together by continuous batching
(batch.engine) and --score records are scored in padded passes (batch.scoring); records the batch
cannot hold, --score --stride records, and every record with batch size 1, run one after another
through exactly the code `generate --json` and `score --json` run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

from gpt2cli.batch.engine import ContinuousBatch, Done, Job, batchable
from gpt2cli.batch.readahead import ReadAhead
from gpt2cli.batch.records import RECORD_NAMES, BadRecord, Output, Record, request_for
from gpt2cli.batch.scoring import score_many
from gpt2cli.errors import CheckpointError, GPT2CLIError, OptionError
from gpt2cli.request import Request
from gpt2cli.decoding.scores import Scored, score_record
from gpt2cli.session import Session, completion_record

# --score records read per record the batch size allows: enough texts of each length to fill long
# passes, few enough that results stream out and memory stays bounded.
_RECORDS_PER_SLOT = 4

T = TypeVar("T")


@dataclass
class Tally:
    """How a run went, for the progress line and the exit code."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0  # of skipped: records the output holds an error line for
    duplicates: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def count(self, result: dict) -> None:
        if "error" in result:
            self.failed += 1
        else:
            self.done += 1
            self.tokens += result.get("completion_tokens", len(result.get("tokens", ())))

    @property
    def tokens_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0


def run_records(
    session: Session,
    records: Iterable[Record | BadRecord],
    output: Output,
    *,
    defaults: Request,
    seed: int,
    score: bool = False,
    stride: int | None = None,
    allow_special: bool = False,
    batch_size: int = 1,
    ordered: bool = False,
    on_record: Callable[[Tally], None] = lambda tally: None,
    slow: bool = False,
) -> Tally:
    """Runs every record not yet in output; on_record(tally) after each. ordered: results are written
    in input order (each waits for the records before it), else as they finish. slow: the records
    may come slowly (a pipe): they are read ahead by a thread, and a batch takes only those that have
    come while it has work, so every result is written once computed."""
    tally = Tally()
    sink = Sink(output, tally, on_record, ordered)
    items: Iterable[Record | BadRecord] = unseen(records, output, tally)
    ready: Callable[[], bool] = lambda: True
    if slow:  # the thread also runs unseen(), so a skipped record never makes the batch wait
        items = ReadAhead(items, weigh=_weight)
        ready = items.ready
    for index, result in results_of(session, items, defaults, seed, score, stride, allow_special, batch_size, ready):
        sink.put(index, result)
    return tally


def _weight(item: Record | BadRecord) -> int:
    """What a record read ahead holds in memory, in characters: its text (or error)."""
    return len(item.text) if isinstance(item, Record) else len(item.error)


def results_of(
    session: Session, items: Iterable[Record | BadRecord], defaults: Request, seed: int, score: bool, stride: int | None,
    allow_special: bool, batch_size: int, ready: Callable[[], bool] = lambda: True,
) -> Iterator[tuple[int, dict]]:
    """(index in items, result line) for each item, as each finishes; ready() says whether the next
    item can be had without waiting for input."""
    if score and stride is None and batch_size > 1:
        yield from scored_together(session, items, ready, allow_special, batch_size)
        return
    if score or batch_size == 1:
        for index, item in enumerate(items):
            yield index, result_of(session, item, defaults, seed, score, stride, allow_special)
        return

    jobs = (job_for(session, item, defaults, seed, allow_special, index) for index, item in enumerate(items))
    yield from ContinuousBatch(session, batch_size).run(jobs, ready)


def scored_together(
    session: Session, items: Iterable[Record | BadRecord], ready: Callable[[], bool], allow_special: bool, batch_size: int
) -> Iterator[tuple[int, dict]]:
    """(index in items, result line) of --score records, read _RECORDS_PER_SLOT * batch_size at a time
    (so the run streams and memory stays bounded; fewer when no more has come yet) and scored in
    padded passes (batch.scoring)."""
    chunk: list[tuple[int, Record | BadRecord]] = []
    for index, item in enumerate(items):
        chunk.append((index, item))
        if len(chunk) == _RECORDS_PER_SLOT * batch_size or not ready():
            yield from scored_chunk(session, chunk, allow_special)
            chunk = []
    if chunk:
        yield from scored_chunk(session, chunk, allow_special)


def scored_chunk(session: Session, chunk: list[tuple[int, Record | BadRecord]], allow_special: bool) -> Iterator[tuple[int, dict]]:
    """Each record's line as result_of writes it: bad records and texts that fail to encode or to
    score get their error lines, the others their scores."""
    texts: list[list[int]] = []
    keys: list[tuple[int, Record]] = []
    for index, item in chunk:
        if isinstance(item, BadRecord):
            yield index, item.result()
            continue
        ids = for_record(item, lambda: session.tokenizer.encode(item.text, allow_special=allow_special))
        if isinstance(ids, dict):  # its error line
            yield index, ids
            continue
        texts.append(ids)
        keys.append((index, item))
    for j, scored in score_many(session, texts):
        index, item = keys[j]
        yield index, error_line(item, scored) if isinstance(scored, GPT2CLIError) else scored_line(item, scored)


def job_for(session: Session, item: Record | BadRecord, defaults: Request, seed: int, allow_special: bool, key: int) -> Job | Done:
    """The record as a Job for the continuous batch, or Done with its result line: its error (a bad
    record, a bad setting, a prompt that cannot fit), or its result run alone (contrastive search, a
    run that slides past the context), computed when the batch takes it."""
    if isinstance(item, BadRecord):
        return Done(key, item.result())

    def job() -> Job | Done:
        request = request_for(item, defaults, seed).check()
        ids = session.prompt_ids(item.text, allow_special)
        seen = batchable(session.config, ids, request)
        if seen is None:
            return Done(key, generated(session, item, request, ids))
        return Job(key, item.id, seen, len(ids), request)

    outcome = for_record(item, job)
    return Done(key, outcome) if isinstance(outcome, dict) else outcome


class Sink:
    """Writes results (in input order if asked), counts them, and reports after each."""

    def __init__(self, output: Output, tally: Tally, on_record: Callable[[Tally], None], ordered: bool):
        self.output, self.tally, self.on_record, self.ordered = output, tally, on_record, ordered
        self.held: dict[int, dict] = {}
        self.next = 0

    def put(self, index: int, result: dict) -> None:
        if not self.ordered:
            self._write(result)
            return
        self.held[index] = result
        while self.next in self.held:
            self._write(self.held.pop(self.next))
            self.next += 1

    def _write(self, result: dict) -> None:
        self.tally.count(result)
        self.output.write(result)
        self.on_record(self.tally)


def unseen(records: Iterable[Record | BadRecord], output: Output, tally: Tally) -> Iterator[Record | BadRecord]:
    """The records still to run: not in the output yet, and not repeating an earlier record's id (the
    first wins, so the output holds each id once)."""
    seen = set()
    for item in records:
        if item.key in seen:
            tally.duplicates += 1
        elif item.key in output.done:
            seen.add(item.key)
            tally.skipped += 1
            tally.failed_before += item.key in output.failed
        else:
            seen.add(item.key)
            yield item


def result_of(
    session: Session, item: Record | BadRecord, defaults: Request, seed: int, score: bool, stride: int | None, allow_special: bool
) -> dict:
    """One record's result line: {"id", ...what generate/score --json print} or {"id", "error"}."""
    if isinstance(item, BadRecord):
        return item.result()

    def line() -> dict:
        if score:
            ids = session.tokenizer.encode(item.text, allow_special=allow_special)
            return scored_line(item, session.score(ids) if stride is None else session.score_strided(ids, stride))
        request = request_for(item, defaults, seed).check()
        return generated(session, item, request, session.prompt_ids(item.text, allow_special))

    return for_record(item, line)


def for_record(item: Record, compute: Callable[[], T]) -> T | dict:
    """compute() for one record, or the record's error line (a dict) when it fails for a reason of its
    own: a bad setting, a text that does not encode, a prompt that cannot fit. A model that cannot be
    read (CheckpointError) stops the run instead: no later record could succeed either."""
    try:
        return compute()
    except CheckpointError:
        raise
    except GPT2CLIError as e:
        return error_line(item, e)


def generated(session: Session, item: Record, request: Request, ids: list[int]) -> dict:
    """A generation record's result line, run alone through exactly what `generate --json` runs."""
    run = session.run(ids, request, logprobs=True)
    for _ in run:
        pass
    return {"id": item.id, **completion_record(run.rows[0], len(ids))}


def scored_line(item: Record, scored: Scored) -> dict:
    """A --score record's result line: its id and what `score --json` prints."""
    return {"id": item.id, **score_record(scored)}


def error_line(item: Record, e: GPT2CLIError) -> dict:
    """A record's error line: the message in one line, settings named as records name them."""
    message = e.render(RECORD_NAMES) if isinstance(e, OptionError) else str(e)
    return {"id": item.id, "error": " ".join(message.split())}

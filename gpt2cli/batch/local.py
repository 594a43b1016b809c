"""A batch of records on this machine: each record's generation (or score) through the session, its
result written as it finishes, records already in the output skipped.

Records run one after another through exactly the code `generate --json` and `score --json` run, so a
record's result is the single command's result by construction. (Decoding several records in one
batch, for throughput, is the next step: see the README's batch section.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from gpt2cli.batch.records import RECORD_NAMES, BadRecord, Output, Record, request_for
from gpt2cli.errors import CheckpointError, GPT2CLIError, OptionError
from gpt2cli.request import Request
from gpt2cli.session import Session, completion_record, score_record


@dataclass
class Tally:
    """How a run went, for the progress line and the exit code."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
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
    on_record: Callable[[Tally], None] = lambda tally: None,
) -> Tally:
    """Runs every record not yet in output; on_record(tally) after each."""
    tally = Tally()
    for item in unseen(records, output, tally):
        result = result_of(session, item, defaults, seed, score, stride, allow_special)
        tally.count(result)
        output.write(result)
        on_record(tally)
    return tally


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
        else:
            seen.add(item.key)
            yield item


def result_of(
    session: Session, item: Record | BadRecord, defaults: Request, seed: int, score: bool, stride: int | None, allow_special: bool
) -> dict:
    """One record's result line: {"id", ...what generate/score --json print} or {"id", "error"}."""
    if isinstance(item, BadRecord):
        return {"id": item.id, "error": item.error}
    try:
        if score:
            ids = session.tokenizer.encode(item.text, allow_special=allow_special)
            return {"id": item.id, **score_record(session.score(ids) if stride is None else session.score_strided(ids, stride))}
        request = request_for(item, defaults, seed).check()
        ids = session.prompt_ids(item.text, allow_special)
        run = session.run(ids, request, logprobs=True)
        for _ in run:
            pass
        return {"id": item.id, **completion_record(run.rows[0], len(ids))}
    except CheckpointError:
        raise  # the model is broken: no later record can succeed either
    except OptionError as e:
        return {"id": item.id, "error": " ".join(e.render(RECORD_NAMES).split())}
    except GPT2CLIError as e:
        return {"id": item.id, "error": " ".join(str(e).split())}

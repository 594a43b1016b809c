"""A batch's records: JSON Lines (or plain lines) in, one Request per record, and the output file
that makes a run resumable (ids already written are skipped; a torn last line is repaired).

Knows files and JSON; knows nothing of terminals or options.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Iterator

from gpt2cli.decoding.generate import Overflow
from gpt2cli.errors import OutputFullError, UsageError
from gpt2cli.request import Request

# A record's decoding settings (generate's long option names, with underscores) and their JSON types.
_TYPES = {
    "max_tokens": int, "temperature": float, "top_k": int, "top_p": float, "min_p": float, "typical_p": float,
    "repetition_penalty": float, "no_repeat_ngram": int, "penalty_alpha": float, "seed": int, "stop": list,
    "ignore_eos": bool, "on_overflow": str,
}  # fmt: skip
SETTINGS = frozenset(_TYPES)
# The library's names of a record's settings, for its error messages (errors.OptionError.render).
# stride is no record's setting but the command's --stride, the remedy for a text longer than the context.
RECORD_NAMES = {
    "max_new_tokens": "max_tokens", "no_repeat_ngram_size": "no_repeat_ngram", "on_overflow": "on_overflow",
    "stride": "--stride",
}  # fmt: skip


@dataclass(frozen=True)
class Record:
    """One line of the input: its id, its text (prompt, or text to score), and its settings."""

    id: str | int
    text: str
    settings: dict  # only those the record gave
    line: int  # 1-based line number in the input

    @property
    def key(self) -> str:
        """The id as JSON spells it, so 1 and "1" stay different records."""
        return json.dumps(self.id)


@dataclass(frozen=True)
class BadRecord:
    """A line that cannot become a record: written as {"id": ..., "error": ...}."""

    id: str | int
    error: str
    line: int

    @property
    def key(self) -> str:
        return json.dumps(self.id)

    def result(self) -> dict:
        """Its result line."""
        return {"id": self.id, "error": self.error}


def read_records(stream: IO[str], *, lines: bool = False, field: str = "prompt") -> Iterator[Record | BadRecord]:
    """Records from JSON Lines (each object has `field`, optionally `id` and settings) or, with lines,
    one text per line (a blank line too: an empty prompt). Blank JSON lines are skipped; a line that
    is not a valid record becomes a BadRecord."""
    for number, raw in enumerate(_bounded_lines(stream), start=1):
        text = raw.rstrip("\n").rstrip("\r")
        if lines:
            yield Record(number, text, {}, number)
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")  # the byte order mark Windows editors start a UTF-8 file with
        if not text.strip():
            continue
        yield _parse(text, number, field)


# The longest line read as one record (characters): /dev/zero or a file without line ends read line by
# line would fill memory; a prompt this long is far beyond any GPT-2 context already.
MAX_LINE = 64 << 20


def _bounded_lines(stream: IO[str]) -> Iterator[str]:
    """The stream's lines, each of at most MAX_LINE characters; a longer one is a UsageError. A last
    line without "\n" ends the input: a terminal's Ctrl-D typed after text (twice, as a shell takes it)
    ends a read without a line end, and a further read would wait for more typing, not end."""
    number = 0
    while line := _read_line(stream, number):
        number += 1
        if len(line) > MAX_LINE and not line.endswith("\n"):
            raise UsageError(
                f"line {number} of INPUT is longer than {MAX_LINE >> 20} MB, so it is no record (is INPUT a "
                "JSON Lines file?); split or shorten it"
            )
        yield line
        if not line.endswith("\n"):
            return


def _read_line(stream: IO[str], before: int) -> str:
    """The stream's next line (of at most MAX_LINE + 1 characters); a read that fails (EIO from a
    hung-up terminal, a broken network or FUSE file) is a UsageError naming INPUT, not a bare OSError."""
    try:
        return stream.readline(MAX_LINE + 1)
    except OSError as e:
        where = f" past line {before}" if before else ""
        raise UsageError(
            f"cannot read INPUT{where} ({e.strerror or e}); give a JSON Lines file that can be read, or - for stdin"
        ) from None


def _parse(text: str, number: int, field: str) -> Record | BadRecord:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        return BadRecord(number, f"line {number} is not JSON ({e}); each line must be one JSON object", number)
    if not isinstance(obj, dict):
        return BadRecord(number, f"line {number} is not a JSON object; each line must be one", number)
    rid = obj.get("id", number)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return BadRecord(number, f"line {number}: id must be a string or an integer, got {_shown(rid)}", number)
    body = obj.get(field)
    if not isinstance(body, str):
        return BadRecord(rid, _no_body(obj, field), number)
    unknown = sorted(k for k in obj if k not in SETTINGS and k not in ("id", field))
    if unknown:
        return BadRecord(rid, f"unknown setting {unknown[0]!r}; settings are {', '.join(sorted(_TYPES))}", number)
    if field == "text" and (decoding := sorted(k for k in obj if k in SETTINGS and obj[k] is not None)):
        return BadRecord(rid, f"setting {decoding[0]!r} does not apply to --score (texts are scored, nothing is generated); drop it", number)
    # null means "not given": the command line's default applies (so a null seed still gets the derived one)
    settings = {k: v for k, v in obj.items() if k in SETTINGS and v is not None}
    for key, value in settings.items():
        kind = _TYPES[key]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        ok = ok or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        ok = ok or (key == "stop" and isinstance(value, str))
        if not ok or (key == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value)):
            return BadRecord(rid, f"setting {key!r} must be {_WANTED[key]}, got {_shown(value)}", number)
    stop = settings.get("stop")
    if stop == "" or (isinstance(stop, list) and "" in stop):  # as --stop '' is refused, not dropped
        return BadRecord(rid, f"setting 'stop' must not be empty (it would stop before the first character), got {_shown(stop)}", number)
    return Record(rid, body, settings, number)


def _no_body(obj: dict, field: str) -> str:
    """Why a record has no text to run, and what to write instead."""
    if field in obj:
        return f"{field!r} must be a string, got {_shown(obj[field])}"
    if field == "prompt" and "text" in obj:  # a --score record, run without --score
        return "record has 'text' but no 'prompt': add --score to score it, or rename 'text' to 'prompt'"
    if field == "text" and "prompt" in obj:  # a record to generate from, run with --score
        return "record has 'prompt' but no 'text' (--score scores a 'text'): rename 'prompt' to 'text', or drop --score to generate"
    return f"record has no {field!r}; give it a {field!r} string"


# What each setting's JSON type is called in its error line.
_WANTED = {key: {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind) for key, kind in _TYPES.items()}
_WANTED["stop"] = "a string or a list of strings"


def _shown(value: object) -> str:
    """A record's value as the user wrote it, in JSON (true, null, "7"), cut short if long."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def derived_seed(seed: int, rid: str | int) -> int:
    """A record's seed when it gives none: from the run's --seed and the record's id (documented), so a
    record's text does not depend on which records ran beside it or in which order."""
    digest = hashlib.sha256(f"{seed}:{json.dumps(rid)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def request_for(record: Record, defaults: Request, seed: int) -> Request:
    """The record's Request: the command line's settings, overridden by the record's own."""
    values = {f.name: getattr(defaults, f.name) for f in fields(Request)}
    for key, value in record.settings.items():
        values[key] = value
    if isinstance(values["stop"], str):
        values["stop"] = (values["stop"],)
    values["stop"] = tuple(values["stop"] or ())
    values["on_overflow"] = Overflow.of(values["on_overflow"])
    if "seed" not in record.settings and values["penalty_alpha"] is None:
        values["seed"] = derived_seed(seed, record.id)
    return Request(**values)


class Output:
    """Where finished records go: stdout, or a file that a rerun resumes.

    Each record is one line, written by one write with SIGINT/SIGTERM held back, so an interrupt never
    leaves half a line; a line torn by a crash (kill -9, power loss) is cut off when the file is reopened.
    """

    def __init__(self, path: Path | None, write_stdout, *, score: bool | None = None):
        self.path = path
        self.score = score  # what this run writes (None: not checked): a file of the other kind is refused
        self.done: set[str] = set()
        self.failed: set[str] = set()  # those of done whose line is an error: the run still failed them
        self._write_stdout = write_stdout
        self._fd: int | None = None
        if path is not None:
            self._open(Path(path))

    def _open(self, path: Path) -> None:
        cannot_write = "cannot write the output file {} ({}); choose another with -o"
        try:
            regular = not path.exists() or stat.S_ISREG(path.stat().st_mode)
            # Only a regular file can hold earlier results: a device or a pipe (/dev/full, /dev/stdout,
            # a FIFO) is written to, never read, since reading one may never end or never return.
            self._fd = os.open(path, (os.O_RDWR if regular else os.O_WRONLY) | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise UsageError(cannot_write.format(path, e.strerror)) from None
        if not regular:
            return
        self._lock(path)
        # a result of the other kind (error lines are of neither) would have its id taken for done
        other_key, other = ("finish_reason", "generation") if self.score else ("perplexity", "score")
        try:
            keep, foreign, mixed = self._scan(other_key if self.score is not None else None)
        except OSError as e:
            raise self._closed(f"cannot read the output file {path} ({e.strerror}); choose another with -o") from None
        # a last line that is not the start of a result is someone's data: never cut off
        if foreign:
            raise self._closed(f"{path} holds a line that is not a batch result; give -o a new file or one an earlier run wrote")
        if mixed:
            raise self._closed(
                f"{path} holds {other} results and this run {'scores texts' if self.score else 'generates'}: its ids "
                f"would be taken for done; give -o another file, or {'drop' if self.score else 'add'} --score to resume that run"
            )
        if keep < os.fstat(self._fd).st_size:  # whole lines only: a torn last line is dropped, then done again
            try:
                os.ftruncate(self._fd, keep)
            except OSError as e:
                raise self._closed(cannot_write.format(path, e.strerror)) from None

    def _scan(self, other_key: str | None) -> tuple[int, bool, bool]:
        """Reads the file once, a block at a time, adding the id of each result line to done (a long run's
        results, parsed all at once, took several times the file's size of memory): (where its last
        whole line ends, whether a line is not a result or the part after the last is no torn one,
        whether a result holds other_key)."""
        keep = offset = 0
        piece: list[bytes] = []  # the line being read, block by block
        mixed = False
        while block := os.pread(self._fd, _SCAN_BLOCK, offset):
            start = 0
            while (end := block.find(b"\n", start)) >= 0:
                result = _result(b"".join([*piece, block[start:end]]))
                piece = []
                if result is None:
                    return keep, True, mixed
                mixed = mixed or (other_key is not None and other_key in result)
                self.done.add(json.dumps(result["id"]))
                if "error" in result:
                    self.failed.add(json.dumps(result["id"]))
                keep, start = offset + end + 1, end + 1
            piece.append(block[start:])
            offset += len(block)
        return keep, not _torn_result(b"".join(piece)), mixed

    def _closed(self, message: str) -> UsageError:
        """Closes the file (and so drops the run's hold on it): the error to raise about it."""
        self.close()
        return UsageError(message)

    def _lock(self, path: Path) -> None:
        """Holds the file for this run alone (released when it is closed, also by a killed process): two
        runs appending to one file would each run the records the other has not written yet."""
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._closed(
                f"another gpt2cli batch is writing {path}; wait for it to end (then rerun to resume) or give -o another file"
            ) from None
        except OSError:  # a file system without locks (some network ones): run unguarded, as before
            pass

    def write(self, obj: dict) -> None:
        # A lone surrogate (an id or setting written "\ud800" in the input) has no UTF-8: it is written as
        # the same JSON escape, which reads back as the same id (only strings can hold one).
        data = (json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8", "backslashreplace")
        if self._fd is None:
            self._write_stdout(data.decode("utf-8"))
            return
        held = _hold_signals()
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            raise OutputFullError(  # what was written stays; a torn last line is cut off by the rerun
                f"cannot write the output file {self.path} ({e.strerror}); free some space and run the same "
                "command again to resume, or choose another file with -o"
            ) from None
        finally:
            _release_signals(held)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_SCAN_BLOCK = 1 << 20  # bytes of an output file read at a time when it is reopened


_RESULT_START = b'{"id": '  # how every line Output.write writes begins


def _result(line: bytes) -> dict | None:
    """A result line an earlier run wrote (its "id" as Record.key spells it is json.dumps of it); None for
    any other line, such as an input file's records (a result has tokens or an error)."""
    try:
        result = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(result, dict) or "id" not in result or not ("tokens" in result or "error" in result):
        return None
    return result


def _torn_result(tail: bytes) -> bool:
    """Whether the bytes after the last newline can be a result line cut short by a crash (or the zeros
    a crash can leave): only those are cut off; anything else is someone's data."""
    return tail.startswith(_RESULT_START) or _RESULT_START.startswith(tail) or not tail.strip(b"\0")


def _hold_signals():
    import signal

    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (AttributeError, ValueError, OSError):
        return None


def _release_signals(previous) -> None:
    import signal

    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

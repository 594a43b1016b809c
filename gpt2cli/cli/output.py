"""Where results go: stdout as UTF-8, written unbuffered per piece, a final newline only on a terminal;
stderr for notes. Knows TTY from pipe; knows nothing of models."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from typing import IO, Iterator

from gpt2cli.cli import signals
from gpt2cli.cli.render import escape_controls


class OutputClosed(Exception):
    """The reader of stdout went away (`gpt2cli ... | head`). Not an OSError on purpose: click turns
    EPIPE OSErrors into exit 1, while we stop quietly with 141 as `yes | head` does."""


class Writer:
    """Results on stdout. Each write is flushed so tokens appear as they are made."""

    def __init__(self, stream: IO[bytes] | None = None, is_tty: bool | None = None):
        if stream is None and sys.stdout is None:  # started with stdout closed (`>&-`): no reader at all
            raise OutputClosed()
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.is_tty = sys.stdout.isatty() if is_tty is None else is_tty
        self.wrote = False  # anything at all reached stdout
        self.at_line_start = True

    def write(self, text: str, *, flush: bool = True) -> None:
        """Writes text; a signal meanwhile takes effect between chunks of whole characters."""
        self._write(text, _CHUNK, flush)

    def write_whole(self, text: str) -> None:
        """Writes text as one piece: a signal meanwhile takes effect only once all of it is out."""
        self._write(text, None, True)

    def _write(self, text: str, chunk: int | None, flush: bool) -> None:
        if not text:
            return
        data = text.encode("utf-8", errors="replace")
        try:
            for piece in _whole_characters(data, chunk):
                with signals.output():  # a signal during the piece is raised after it
                    self._write_all(piece)
                    if flush:
                        self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None
        self.wrote = True
        self.at_line_start = text.endswith("\n")

    def _write_all(self, data: bytes) -> None:
        # A write larger than the pipe's free space returns a short count when the reader goes away
        # mid-write, without an error; only the next write raises EPIPE. One write() would drop the
        # rest silently and exit 0 under `| head`.
        view = memoryview(data)
        while view:
            n = self.stream.write(view)
            if not n:  # None: a stream that does not count (it took everything)
                break
            view = view[n:]

    def json_line(self, obj: dict) -> None:
        """One JSON object per line, written whole; a non-finite number (a -inf beam score) becomes null."""
        self.write_whole(json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False) + "\n")

    def end(self) -> None:
        """Closes the output: a terminal gets a final newline (so the prompt starts on its own line)."""
        if self.is_tty and self.wrote and not self.at_line_start:
            self.write("\n")
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None
        except ValueError:  # already closed
            pass


_CHUNK = 16384  # bytes written between two chances for a signal to stop the output


def _whole_characters(data: bytes, size: int | None) -> Iterator[bytes]:
    """data in pieces of about `size` bytes, each ending on a UTF-8 character boundary."""
    if size is None or len(data) <= size:
        yield data
        return
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # a continuation byte: not a boundary
            end += 1
        yield data[start:end]
        start = end


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def note(message: str) -> None:
    """A one-line diagnostic on stderr (never stdout), on a line of its own: a progress line shown
    there is erased first."""
    try:
        clear_progress()
        sys.stderr.write(f"gpt2cli: {escape_controls(message)}\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # stderr closed (`2>&-`) or its reader gone: go on without notes
        pass


class ProgressLine:
    """A one-line progress indicator on stderr for a long prefill; called as progress(done, total).

    Draws nothing unless the work is still running after `delay` seconds, so short prompts stay
    silent, and erases itself when done so that nothing is left between the command and its output.
    """

    def __init__(self, label: str, delay: float = 0.5, unit: str = "layer"):
        import time

        self._clock = time.monotonic
        self.label = label
        self.unit = unit
        self.delay = delay
        self.started = self._clock()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.drawn and self._clock() - self.started < self.delay:
            return
        global _progress_shown
        if done >= total:
            if self.drawn:
                self._write(erase_line())
                self.drawn = _progress_shown = False
            self.started = self._clock()  # a later prefill (sliding) starts its own delay
            return
        self._write(f"{erase_line()}{self.label}: {self.unit} {done}/{total}")
        self.drawn = _progress_shown = True

    @staticmethod
    def _write(text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


# Whether a ProgressLine is on stderr's terminal line now: a note, or the end of an interrupted run,
# erases it first, so that nothing is written after it on its line ("decoding 1/9gpt2cli: error: ...").
_progress_shown = False


def clear_progress() -> None:
    """Erases the progress line stderr shows, if any."""
    global _progress_shown
    if _progress_shown:
        _progress_shown = False
        ProgressLine._write(erase_line())


def prefill_progress(label: str = "reading the prompt") -> "ProgressLine | None":
    """A ProgressLine when stderr is a terminal; None (no progress at all) otherwise."""
    return ProgressLine(label) if stderr_is_tty() else None


def erase_line() -> str:
    """What takes the cursor back to the start of stderr's terminal line and clears it: "\\r" and the
    erase-line escape, or on a terminal that has no escapes (TERM=dumb: Emacs' shell buffers, some
    CI consoles, where it would show as "^[[K") "\\r", spaces over the line, "\\r"."""
    if os.environ.get("TERM") != "dumb":
        return "\r\033[K"
    import shutil

    return "\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r"


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def results_only() -> Iterator[None]:
    """Whatever a library prints on sys.stdout meanwhile (huggingface_hub prints some errors while
    it imports) goes to stderr: stdout carries results only."""
    target = sys.stderr if sys.stderr is not None else open(os.devnull, "w")
    with contextlib.redirect_stdout(target):
        yield

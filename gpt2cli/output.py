"""Where results go: stdout as UTF-8, written unbuffered per piece, a final newline only on a terminal;
stderr for notes. Knows TTY from pipe; knows nothing of models."""

from __future__ import annotations

import json
import sys
from typing import IO


class OutputClosed(Exception):
    """The reader of stdout went away (`gpt2cli ... | head`). Not an OSError on purpose: click turns
    EPIPE OSErrors into exit 1, while we stop quietly with 141 as `yes | head` does."""


class Writer:
    """Results on stdout. Each write is flushed so tokens appear as they are made."""

    def __init__(self, stream: IO[bytes] | None = None, is_tty: bool | None = None):
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.is_tty = sys.stdout.isatty() if is_tty is None else is_tty
        self.wrote = False  # anything at all reached stdout
        self.at_line_start = True

    def write(self, text: str, *, flush: bool = True) -> None:
        if not text:
            return
        try:
            self.stream.write(text.encode("utf-8", errors="replace"))
            if flush:
                self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None
        self.wrote = True
        self.at_line_start = text.endswith("\n")

    def json_line(self, obj: dict) -> None:
        self.write(json.dumps(obj, ensure_ascii=False) + "\n")

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


def note(message: str) -> None:
    """A one-line diagnostic on stderr (never stdout)."""
    sys.stderr.write(f"gpt2cli: {message}\n")
    sys.stderr.flush()


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False

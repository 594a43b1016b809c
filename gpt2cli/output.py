"""Where results go: stdout as UTF-8, written unbuffered per piece, a final newline only on a terminal;
stderr for notes. Knows TTY from pipe; knows nothing of models."""

from __future__ import annotations

import json
import math
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import IO


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
        if not text:
            return
        try:
            self._write_all(text.encode("utf-8", errors="replace"))
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
        """One JSON object per line; a non-finite number (a -inf beam score) becomes null, as JSON has none."""
        self.write(json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False) + "\n")

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


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def note(message: str) -> None:
    """A one-line diagnostic on stderr (never stdout)."""
    try:
        sys.stderr.write(f"gpt2cli: {message}\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # stderr closed (`2>&-`) or its reader gone: go on without notes
        pass


class ProgressLine:
    """A one-line progress indicator on stderr for a long prefill; called as progress(done, total).

    Draws nothing unless the work is still running after `delay` seconds, so short prompts stay
    silent, and erases itself when done so that nothing is left between the command and its output.
    """

    def __init__(self, label: str, delay: float = 0.5):
        import time

        self._clock = time.monotonic
        self.label = label
        self.delay = delay
        self.started = self._clock()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.drawn and self._clock() - self.started < self.delay:
            return
        if done >= total:
            if self.drawn:
                self._write("\r\033[K")
                self.drawn = False
            self.started = self._clock()  # a later prefill (sliding) starts its own delay
            return
        self._write(f"\r\033[K{self.label}: layer {done}/{total}")
        self.drawn = True

    @staticmethod
    def _write(text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def prefill_progress(label: str = "reading the prompt") -> "ProgressLine | None":
    """A ProgressLine when stderr is a terminal; None (no progress at all) otherwise."""
    return ProgressLine(label) if stderr_is_tty() else None


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# --- the beam command's comparison table (pure: text in, text out) ---


@dataclass(frozen=True)
class DecodingRow:
    """One line of the beam table: a decoding's label, its numbers and its text."""

    label: str  # "greedy", "beam 1", "sample"
    score: float  # logprob / n_tokens ** length_penalty
    avg_logprob: float  # logprob / n_tokens
    finish_reason: str  # "eos" or "length"
    text: str


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns text takes (wide East Asian characters count two, combining marks none)."""
    return sum(_char_width(ch) for ch in text)


def terminal_safe(text: str) -> str:
    """Text that cannot move the cursor or restyle the terminal: tabs become spaces, other controls
    (escape sequences, carriage returns) are shown as \\xNN. Newlines stay."""
    out = []
    for ch in text:
        if ch == "\t":
            out.append("    ")
        elif ch != "\n" and unicodedata.category(ch) == "Cc":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def wrap_text(text: str, width: int) -> list[str]:
    """Lines of at most `width` display columns: breaks at spaces, splits longer words, keeps newlines."""
    width = max(width, 1)
    lines: list[str] = []
    for paragraph in terminal_safe(text).split("\n"):
        line, used = "", 0
        for piece in re.findall(r"\s+|\S+", paragraph):
            w = display_width(piece)
            if piece.isspace():
                if line and used + w <= width:
                    line, used = line + piece, used + w
                continue  # spaces at a line break are dropped
            if used + w > width and line:
                lines.append(line.rstrip())
                line, used = "", 0
            # A word wider than the column is split between characters, never inside a \xNN escape.
            for unit in re.findall(r"\\x[0-9a-f]{2}|.", piece):
                uw = display_width(unit)
                if used + uw > width and line:
                    lines.append(line)
                    line, used = "", 0
                line, used = line + unit, used + uw
        lines.append(line.rstrip())
    return lines


def _pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap


def render_beam_table(prompt: str, prompt_tokens: int, rows: list[DecodingRow], width: int) -> str:
    """The prompt once, then one row per decoding with its text wrapped to fit `width` columns.

    Where the number columns leave the text fewer than 20 columns, each text goes under its row instead.
    """
    headers = ("decoding", "score", "avg lp", "end")
    cells = [(r.label, f"{r.score:.3f}", f"{r.avg_logprob:.3f}", r.finish_reason) for r in rows]
    widths = [max([display_width(h)] + [display_width(c[i]) for c in cells]) for i, h in enumerate(headers)]
    indent = sum(widths) + 2 * len(widths)  # each column is followed by two spaces
    beside = width - indent >= 20
    text_indent = indent if beside else 4
    text_width = max(width - text_indent, 1)

    label = f"prompt ({prompt_tokens} token{'s' if prompt_tokens != 1 else ''}): "
    shown = prompt or "(empty: generation starts from <|endoftext|>)"
    if display_width(label) + 20 <= width:
        prompt_lines = wrap_text(shown, width - len(label))
        out = [label + prompt_lines[0]] + [(" " * len(label) + line).rstrip() for line in prompt_lines[1:]]
    else:
        out = [label.rstrip()] + [("    " + line).rstrip() for line in wrap_text(shown, width - 4)]
    out.append("")

    def fields(values: tuple[str, ...]) -> str:
        return "  ".join(_pad(v, w, right=i in (1, 2)) for i, (v, w) in enumerate(zip(values, widths)))

    rule = "-" * min(text_width, 40)
    out.append(fields(headers) + "  text" if beside else fields(headers).rstrip())
    out.append(fields(tuple("-" * w for w in widths)) + ("  " + rule if beside else ""))
    for r, c in zip(rows, cells):
        text_lines = wrap_text(r.text, text_width)
        if beside:
            out.append((fields(c) + "  " + text_lines[0]).rstrip())
            text_lines = text_lines[1:]
        else:
            out.append(fields(c).rstrip())
        out.extend((" " * text_indent + line).rstrip() for line in text_lines)
    return "\n".join(out) + "\n"

"""The prompt text of a command: the PROMPT argument, piped stdin, or both."""

from __future__ import annotations

import sys
from typing import Optional

from gpt2cli.cli.output import note
from gpt2cli.errors import UsageError


def note_not_utf8(where: str, remedy: str = "") -> None:
    """The note for input whose bytes are not UTF-8 (they become U+FFFD), a prompt's or batch INPUT's."""
    note(f"{where} is not valid UTF-8: invalid bytes were replaced with U+FFFD{remedy}")


def _decode_input(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        note_not_utf8(where)
        return raw.decode("utf-8", errors="replace")


# The most stdin is read for a prompt or text (bytes): /dev/zero or an endless pipe would fill memory.
MAX_STDIN = 64 << 20


def read_prompt(prompt: Optional[str]) -> str:
    """The prompt text: piped stdin first (one trailing newline dropped), then the PROMPT argument.

    PROMPT `-` or omitted reads stdin; a terminal on stdin with no PROMPT means an empty prompt.
    """
    parts = []
    stdin_piped = sys.stdin is not None and not sys.stdin.isatty()
    if prompt == "-" or stdin_piped:
        try:
            raw = sys.stdin.buffer.read(MAX_STDIN + 1) if sys.stdin is not None else b""
        except OSError as e:  # e.g. EIO from a terminal that went away
            raise UsageError(f"cannot read stdin ({e.strerror or e}); pass the prompt as an argument") from None
        if len(raw) > MAX_STDIN:
            raise UsageError(
                f"stdin holds more than {MAX_STDIN >> 20} MB; gpt2cli reads a prompt or text of at most that: pipe in a "
                "shorter one"
            )
        text = _decode_input(raw, "stdin")
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if text or prompt == "-":
            parts.append(text)
    if prompt is not None and prompt != "-":
        # argv arrives surrogate-escaped when it is not UTF-8
        parts.append(_decode_input(prompt.encode("utf-8", errors="surrogateescape"), "the PROMPT argument"))
    return "\n".join(parts)

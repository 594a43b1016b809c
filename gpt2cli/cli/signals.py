"""SIGINT and SIGTERM as one exception, raised once, never in the middle of a piece of output.

The handler raises Terminated for the first signal only; later ones are only recorded, so the exit
path (ending the line, flushing stdout) cannot be interrupted into a traceback. While output() holds
a piece of stdout, the first signal is recorded and raised when the piece is written, so stdout never
ends inside a UTF-8 character or a JSON line; a second signal during that write raises at once (the
reader may never drain the pipe, and a user who presses Ctrl-C twice means it).
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


class Terminated(BaseException):
    """SIGINT or SIGTERM, raised by our handler so that one clean exit path runs for both.

    A BaseException, so no `except Exception` on the way (ours, click's, a library's) swallows it;
    not a KeyboardInterrupt, which click turns into a bare exit code before main() sees it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


class _State:
    raised: int | None = None  # the signal whose Terminated is on its way out (0: exiting without one)
    pending: int | None = None  # a signal that arrived while output was held
    holding = 0  # depth of output() blocks


def reset() -> None:
    """A fresh process state (main() may run more than once in one process, as tests do)."""
    _State.raised = _State.pending = None
    _State.holding = 0


def on_signal(signum, frame) -> None:
    if _State.raised is not None:
        return  # the first signal's exit is already under way: nothing may interrupt it
    if _State.holding and _State.pending is None:
        _State.pending = signum  # raised once the piece being written is out
        return
    _State.raised = signum
    raise Terminated(signum)


def exiting() -> int | None:
    """From now on every signal only records itself (the command is done; the exit path runs).

    Returns a signal that came while output was held and was never raised (the write then failed).
    """
    unraised = _State.pending if _State.raised is None else None
    if _State.raised is None:
        _State.raised = 0  # no signal raised, but none may be from here on either
    return unraised


@contextlib.contextmanager
def output() -> Iterator[None]:
    """Holds SIGINT/SIGTERM while a piece of stdout is written; raises Terminated after it if one came."""
    _State.holding += 1
    try:
        yield
    finally:
        _State.holding -= 1
    if not _State.holding and _State.pending is not None and _State.raised is None:
        _State.raised = _State.pending
        raise Terminated(_State.pending)


def catch() -> dict:
    """SIGINT and SIGTERM raise Terminated from here on; returns the handlers to restore.

    A signal the parent set to be ignored (`nohup`, background jobs) stays ignored.
    """
    reset()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            old = signal.getsignal(signum)
            if old is not signal.SIG_IGN:
                signal.signal(signum, on_signal)
                previous[signum] = old
        except (ValueError, OSError):  # not the main thread (main() called from a thread)
            pass
    return previous


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        try:
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, OSError, TypeError):
            pass

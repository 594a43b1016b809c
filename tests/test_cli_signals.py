"""Ctrl-C and SIGTERM at any moment: exit 130/143, no traceback, and stdout ends on a whole UTF-8
character (a JSON line whole or absent), even when a second signal follows the first."""

from __future__ import annotations

import fcntl
import json
import re
import select
import signal
import subprocess
import termios
import time

import pytest

from tests.support import cli


def _start(*args, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [*cli.command(), *map(str, args)], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli.user_env(),
    )  # fmt: skip


def _finish(p: subprocess.Popen, timeout: float = 60) -> tuple[int, bytes, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err.decode("utf-8", errors="replace")


def _wait_for_output(p: subprocess.Popen, timeout: float = 60) -> None:
    """Returns once the process has written to stdout (it is past its imports and decoding)."""
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, "no output"


def _wait_until_pipe_full(p: subprocess.Popen, timeout: float = 60) -> None:
    """Returns once stdout's pipe holds all it can: the process is blocked in a write."""
    capacity = fcntl.fcntl(p.stdout.fileno(), 1032)  # F_GETPIPE_SZ
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = int.from_bytes(fcntl.ioctl(p.stdout.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")
        if waiting >= capacity:
            return
        assert p.poll() is None, _finish(p)
        time.sleep(0.005)
    raise AssertionError("stdout's pipe never filled")


def _python_itself_was_starting(err: str) -> bool:
    """Python's own startup (site, .pth files, reading the script) was interrupted, before any gpt2cli
    code could run: the interpreter reports that itself, and no program can prevent it. It does so as
    a traceback through its own code only, an "Exception ignored" from its import machinery, or, when
    not one Python frame had run yet, a bare "KeyboardInterrupt" (exit 1: seen under load)."""
    if err.startswith("Fatal Python error: init_"):  # init_import_site, init_sys_streams, ...
        return True
    frames = re.findall(r'File "([^"]+)"', err)  # ours would be in .../gpt2cli/...: none means the script's import
    return "KeyboardInterrupt" in err and not any("/gpt2cli/" in f for f in frames)


def test_ctrl_c_during_startup_is_quiet(tiny_model):
    """A Ctrl-C at any moment of the first ~350 ms (imports, loading) exits 130 without a traceback."""
    ours = 0
    for i in range(30):
        p = _start("generate", "-m", tiny_model, "-n", "5", "hi")
        time.sleep(i * 0.012)  # the offset under test, not a synchronisation
        p.send_signal(signal.SIGINT)
        code, out, err = _finish(p)
        if _python_itself_was_starting(err):
            continue
        ours += 1
        assert "Traceback" not in err and "Exception ignored" not in err, (i, err)
        assert code in (130, -signal.SIGINT, 0), (i, code, err)  # -2: before Python set up its handler
        assert err == "" or code == 0, (i, err)
    assert ours >= 10


@pytest.mark.parametrize("gap_ms", [0, 2, 5, 8, 12, 16, 20])
def test_second_ctrl_c_right_after_the_first_is_quiet(tiny_model, gap_ms):
    for _ in range(4):
        p = _start("generate", "-m", tiny_model, "-n", "3000", "--ignore-eos", "hi")
        _wait_for_output(p)
        p.send_signal(signal.SIGINT)
        time.sleep(gap_ms / 1000)  # the gap under test
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        code, out, err = _finish(p)
        assert (code, err) == (130, ""), (gap_ms, code, err)
        out.decode("utf-8")


def _only_notes(err: str) -> bool:
    """stderr holds only gpt2cli's notes (here: the prompt is longer than the context)."""
    return all(line.startswith("gpt2cli: ") and "error" not in line for line in err.splitlines())


def _cjk_prompt() -> bytes:
    return ("日本語の本文 " * 30_000).encode("utf-8")  # ~570 kB: far more than a pipe holds


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_echo_is_blocked_ends_on_a_whole_character(tiny_model, signum, code):
    prompt = _cjk_prompt()
    p = _start("generate", "-m", tiny_model, "-n", "1", "--echo", stdin=subprocess.PIPE)
    p.stdin.write(prompt)
    p.stdin.close()
    p.stdin = None
    _wait_until_pipe_full(p)
    p.send_signal(signum)
    got, out, err = _finish(p)
    assert got == code and _only_notes(err), err
    assert len(out) >= 65536
    assert prompt.startswith(out)
    out.decode("utf-8")  # no half character at the end


def test_signal_while_a_json_line_is_blocked_leaves_it_whole(tiny_model):
    prompt = _cjk_prompt()
    p = _start("generate", "-m", tiny_model, "-n", "1", "--echo", "--json", stdin=subprocess.PIPE)
    p.stdin.write(prompt)
    p.stdin.close()
    p.stdin = None
    _wait_until_pipe_full(p)
    p.send_signal(signal.SIGINT)
    code, out, err = _finish(p)
    assert code == 130 and _only_notes(err), err
    assert out.endswith(b"\n")
    assert json.loads(out)["prompt"].encode("utf-8") == prompt


def test_two_signals_while_blocked_still_exit_quietly(tiny_model):
    """A reader that never drains the pipe: the second Ctrl-C does not wait for it."""
    p = _start("generate", "-m", tiny_model, "-n", "1", "--echo", stdin=subprocess.PIPE)
    p.stdin.write(_cjk_prompt())
    p.stdin.close()
    p.stdin = None
    _wait_until_pipe_full(p)
    deadline = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < deadline:  # Ctrl-C again and again, as a user would
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)
    assert p.poll() is not None, "a second Ctrl-C must end a write the reader never drains"
    code, out, err = _finish(p)
    assert code == 130 and _only_notes(err), err


def test_the_handler_raises_once():
    """The handler raises once: later signals (while the exit path runs) only record themselves."""
    from gpt2cli.cli import signals

    signals.reset()
    with pytest.raises(signals.Terminated):
        signals.on_signal(signal.SIGINT, None)
    assert signals.on_signal(signal.SIGINT, None) is None
    assert signals.on_signal(signal.SIGTERM, None) is None
    signals.reset()

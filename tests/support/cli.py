"""The one way tests run the gpt2cli command, as a user would:

- run(): the installed command in a subprocess (real exit status, signals, pipes, environment);
- start(): the same as a running subprocess.Popen, for tests that close its pipes or signal it;
- run_in_process(): cli.process.main() on in-memory streams, ~100x faster, for many cases at once;
- run_quick(): run_in_process() as run() would see it (a user's environment, warnings on stderr), for
  the many short runs that need no signal, pipe, terminal or fresh interpreter;
- run_in_terminal(): the command with stdin, stdout and stderr on a pseudo-terminal.

Every run sees the environment of a user who set nothing of ours (no GPT2CLI_* variables) and is
offline (HF_HUB_OFFLINE=1) unless the test says otherwise; the command imports this checkout's code.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What an error message must offer the user: a way out.
REMEDY = re.compile(r"re-download|re-export|convert it|pass --model|fix config\.json|--on-overflow|lower --max-tokens")


@dataclass
class Run:
    """What a run left: its exit code, stdout's bytes and stderr's text."""

    code: int
    out: bytes
    err: str

    @property
    def returncode(self) -> int:
        return self.code

    @property
    def stdout(self) -> str:
        return self.out.decode("utf-8")

    @property
    def stderr(self) -> str:
        return self.err

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    @property
    def json(self):
        return json.loads(self.out)


def user_env(**extra) -> dict:
    """os.environ without GPT2CLI_* and COLUMNS, offline, this checkout first on PYTHONPATH; then
    `extra` (a value of None removes the variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPT2CLI_") and k != "COLUMNS"}
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def command() -> list[str]:
    """The console script installed beside this Python (falls back to `python -m gpt2cli`)."""
    script = Path(sys.executable).with_name("gpt2cli")
    if script.exists():
        return [str(script)]
    found = shutil.which("gpt2cli")
    return [found] if found else [sys.executable, "-m", "gpt2cli"]


def _argv(args) -> list:
    return [a if isinstance(a, bytes) else str(a) for a in args]


def run(*args, stdin: bytes | str = b"", env: dict | None = None, cwd=None, timeout: float = 120, **popen) -> Run:
    """Runs `gpt2cli ARGS` in a subprocess; env: variables set over user_env()."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    p = subprocess.run(
        [*command(), *_argv(args)], input=data, capture_output=True, env=user_env(**(env or {})),
        cwd=cwd, timeout=timeout, **popen,
    )  # fmt: skip
    return Run(p.returncode, p.stdout, p.stderr.decode("utf-8", errors="replace"))


def start(*args, env: dict | None = None, **popen) -> subprocess.Popen:
    """Starts `gpt2cli ARGS` in a subprocess and returns it; popen: stdin/stdout/stderr and the like."""
    return subprocess.Popen([*command(), *_argv(args)], env=user_env(**(env or {})), **popen)


def kill_9_once_written(output: Path, *args, lines: int = 3, timeout: float = 60) -> int:
    """Starts the command, SIGKILLs it once `output` holds `lines` whole lines (or after timeout
    seconds), and returns how many lines it holds then: a crash at an arbitrary point of a run."""
    import signal
    import time

    child = start(*args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (not output.exists() or output.read_bytes().count(b"\n") < lines):
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return output.read_bytes().count(b"\n")


def run_in_process(args, stdin: bytes = b"") -> tuple[Run, list]:
    """cli.process.main() with its own stdin/stdout/stderr (buffered bytes underneath, like the real
    ones). Returns the run and the Python warnings it raised. The caller's environment applies."""
    from gpt2cli.cli import process

    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = io.BytesIO(), io.BytesIO()
    streams = (
        io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"),
        io.TextIOWrapper(io.BufferedWriter(out), encoding="utf-8", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True),
    )
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = process.main([str(a) for a in args])
        for stream in streams[1:]:
            stream.flush()
        result = Run(code, out.getvalue(), err.getvalue().decode("utf-8", errors="replace"))
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return result, list(caught)


def run_quick(*args, stdin: bytes | str = b"", env: dict | None = None) -> Run:
    """Runs `gpt2cli ARGS` in this process under user_env(**env). Every Python warning raised shows on
    its stderr (where a subprocess prints them; deprecations too, so stricter), so a one-line check
    still catches one. For runs whose outcome cannot depend on a fresh process, signals or pipes."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(user_env(**(env or {})))
    try:
        result, caught = run_in_process(args, data)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return Run(result.code, result.out, result.err + shown)


def run_in_terminal(
    *args, env: dict | None = None, cwd=None, timeout: float = 120, columns: int | None = None
) -> tuple[str, int]:
    """Runs `gpt2cli ARGS` with stdin, stdout and stderr on a pseudo-terminal: what the terminal
    showed ("\\r\\n" -> "\\n") and the exit code. columns: give the terminal a size (a new pty has
    0 columns, and tqdm, for one, draws nothing on it)."""
    import fcntl
    import select
    import struct
    import termios
    import time

    argv, environment = [*command(), *_argv(args)], user_env(**(env or {}))
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        try:
            if cwd is not None:
                os.chdir(cwd)
            os.execve(argv[0], argv, environment)
        finally:
            os._exit(127)
    if columns is not None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    else:
        os.kill(pid, 9)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n"), os.waitstatus_to_exitcode(status)


def assert_one_error_line(r: Run, code: int = 2) -> str:
    """Exit `code`, nothing on stdout, exactly one line on stderr, and it is an error: returns it."""
    assert "Traceback" not in r.err
    assert r.code == code, r.err
    assert r.out == b""
    assert len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert line.startswith("gpt2cli: error: "), line
    return line

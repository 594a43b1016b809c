"""What a terminal shows: download progress bars never mix with notes or output, and none is left
drawn after the last line."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import threading
import time

import pytest

from tests.support import cli
from tests.test_hub import GPT2, fake_hub, sources  # noqa: F401 - fixtures: the loopback Hub and its repos


def _run_in_terminal(*args, env: dict, cwd, columns: int = 100, timeout: float = 120) -> tuple[str, int]:
    """cli.run_in_terminal, on a terminal with a size: a new pty has 0 columns, and tqdm draws its
    bars to fit, so on one of 0 columns the bars this test is about are never drawn."""
    argv, environment = [*cli.command(), *map(str, args)], cli.user_env(**env)
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        try:
            os.chdir(cwd)
            os.execve(argv[0], argv, environment)
        finally:
            os._exit(127)
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


def _screen(raw: str) -> list[str]:
    """The lines a terminal finally shows (a small emulator: text, \\n, \\r, cursor up, erase line)."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|\n|\r|[^\x1b\n\r]", raw):
        if token == "\n":
            row, col = row + 1, 0
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b["):
            n = int(token[2:-1] or 1) if token[2:-1].isdigit() else 1
            if token.endswith("A"):
                row = max(0, row - n)
            elif token.endswith("K"):
                del lines[row][col:]
            continue
        else:
            while len(lines[row]) <= col:
                lines[row].append(" ")
            lines[row][col] = token
            col += 1
        while len(lines) <= row:
            lines.append([])
    return ["".join(line).rstrip() for line in lines]


@pytest.fixture
def online(fake_hub, sources, tmp_path):  # noqa: F811
    """The tiny model on the loopback Hub; its weights stall mid-download for a moment, so that the
    progress bars are drawn (tqdm draws at most every 0.1 s)."""
    fake_hub.add_repo(GPT2, sources.tiny)
    stalled, release = fake_hub.stall(GPT2, "model.safetensors")

    def release_later():
        stalled.wait(60)
        time.sleep(0.6)  # how long the bars are on screen, not a synchronisation
        release.set()

    threading.Thread(target=release_later, daemon=True).start()
    return {"HF_HUB_OFFLINE": "", "GPT2CLI_WEIGHTS": tmp_path / "weights"}


def _bar_fragments(line: str) -> bool:
    return bool(re.search(r"\d+%\||it/s|B/s|Fetching|\|\s*\d", line))


def test_first_generate_from_the_hub_leaves_no_bar_and_its_text_on_its_own_line(online, tmp_path):
    raw, code = _run_in_terminal("generate", "-n", "8", "--seed", "1", "--no-stats", "Hi", env=online, cwd=tmp_path)
    assert code == 0, raw
    lines = [line for line in _screen(raw) if line.strip()]
    assert not any(_bar_fragments(line) for line in lines), lines
    assert len(lines) == 1, lines  # only the generated text


def test_download_note_and_folder_are_whole_lines(online, tmp_path):
    raw, code = _run_in_terminal("download", "gpt2", env=online, cwd=tmp_path)
    assert code == 0, raw
    lines = [line for line in _screen(raw) if line.strip()]
    assert not any(_bar_fragments(line) for line in lines), lines
    assert lines[0].startswith("gpt2cli: downloaded gpt2 ("), lines
    assert lines[1].endswith("openai-community--gpt2"), lines
    assert len(lines) == 2, lines

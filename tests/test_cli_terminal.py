"""What a terminal shows: download progress bars never mix with notes or output, and none is left
drawn after the last line."""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.support import cli, models
from tests.support.hubserver import FakeHub

GPT2 = "openai-community/gpt2"


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
def online(tmp_path):
    """The tiny model as gpt2 on a loopback Hub (the command runs in a subprocess: the environment
    is all it needs); its weights stall mid-download for a moment, so that the progress bars are
    drawn (tqdm draws at most every 0.1 s)."""
    with FakeHub() as hub:
        hub.add_repo(GPT2, models.write_model(tmp_path / "source", seed=1))
        stalled, release = hub.stall(GPT2, "model.safetensors")

        def release_later():
            stalled.wait(60)
            time.sleep(0.6)  # how long the bars are on screen, not a synchronisation
            release.set()

        threading.Thread(target=release_later, daemon=True).start()
        yield {
            "HF_ENDPOINT": hub.url, "HF_HOME": tmp_path / "hf-home", "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "", "HF_TOKEN": None, "GPT2CLI_WEIGHTS": tmp_path / "weights",
        }  # fmt: skip
        release.set()


def _bar_fragments(line: str) -> bool:
    return bool(re.search(r"\d+%\||it/s|B/s|Fetching|\|\s*\d", line))


def test_first_generate_from_the_hub_leaves_no_bar_and_its_text_on_its_own_line(online, tmp_path):
    raw, code = cli.run_in_terminal("generate", "-n", "8", "--seed", "1", "--no-stats", "Hi", env=online, cwd=tmp_path, columns=100)
    assert code == 0, raw
    lines = [line for line in _screen(raw) if line.strip()]
    assert not any(_bar_fragments(line) for line in lines), lines
    assert len(lines) == 1, lines  # only the generated text


def test_download_note_and_folder_are_whole_lines(online, tmp_path):
    raw, code = cli.run_in_terminal("download", "gpt2", env=online, cwd=tmp_path, columns=100)
    assert code == 0, raw
    lines = [line for line in _screen(raw) if line.strip()]
    assert not any(_bar_fragments(line) for line in lines), lines
    assert lines[0].startswith("gpt2cli: downloaded gpt2 ("), lines
    assert lines[1].endswith("openai-community--gpt2"), lines
    assert len(lines) == 2, lines

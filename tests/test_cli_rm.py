"""`gpt2cli rm`: deletes what gpt2cli downloaded (and partial downloads), nothing a user made, and
asks first on a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2cli.store import resolve
from tests.support.cli import assert_one_error_line

GPT2 = "openai-community/gpt2"
FOLDER = "openai-community--gpt2"


@pytest.fixture
def downloaded(fake_hub, tiny_model, weights) -> Path:
    fake_hub.add_repo(GPT2, tiny_model)
    return resolve.download_model("gpt2", weights_dir=weights).folder


def test_rm_yes_deletes_the_downloaded_model(cli, downloaded, weights):
    r = cli("rm", "gpt2", "-y")
    assert r.returncode == 0 and r.stdout == "" and r.stderr.startswith("gpt2cli: removed gpt2 in ")
    assert not downloaded.exists()
    listing = cli("models")
    assert listing.stdout.splitlines()[1].split()[:2] == ["gpt2", "no"]


def test_rm_keeps_files_the_user_added(cli, downloaded):
    (downloaded / "notes.txt").write_text("mine")
    (downloaded / "finetune").mkdir()
    r = cli("rm", "gpt2", "--yes")
    assert r.returncode == 0 and "notes.txt" in r.stderr
    assert sorted(p.name for p in downloaded.iterdir()) == ["finetune", "notes.txt"]


def test_rm_without_a_terminal_and_without_yes_is_a_usage_error(cli, downloaded):
    line = assert_one_error_line(cli("rm", "gpt2"), 2)
    assert "-y" in line
    assert (downloaded / "model.safetensors").is_file()


def _answer_in_terminal(args: list[str], env: dict, answer: bytes) -> tuple[str, int]:
    """Runs gpt2cli on a pseudo-terminal, waits for its question, types `answer`: (what it showed, exit code)."""
    import os
    import pty

    from tests.support.cli import command, user_env

    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        try:
            os.execve(command()[0], [*command(), *args], user_env(**env))
        finally:
            os._exit(127)
    out = b""
    try:
        while b"[y/N]" not in out:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            out += chunk
        os.write(fd, answer)
        while chunk := os.read(fd, 1024):
            out += chunk
    except OSError:  # EIO: the child closed the terminal
        pass
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_rm_on_a_terminal_asks_first(fake_hub, downloaded, weights):
    env = {"HF_HUB_OFFLINE": "", "GPT2CLI_WEIGHTS": str(weights)}
    shown, code = _answer_in_terminal(["rm", "gpt2"], env, b"n\n")
    assert "Delete gpt2 in" in shown and "nothing removed" in shown and code == 1
    assert (downloaded / "model.safetensors").is_file()
    shown, code = _answer_in_terminal(["rm", "gpt2"], env, b"y\n")
    assert code == 0 and "removed gpt2" in shown
    assert not downloaded.exists()


def test_rm_refuses_a_folder_gpt2cli_did_not_make_and_a_local_folder(cli, fake_hub, weights, tiny_model):
    mine = weights / FOLDER
    mine.mkdir(parents=True)
    (mine / "model.safetensors").write_bytes(b"mine")
    assert "not downloaded by gpt2cli" in assert_one_error_line(cli("rm", "gpt2", "-y"), 2)
    assert "local folder" in assert_one_error_line(cli("rm", str(tiny_model), "-y"), 2)
    assert (mine / "model.safetensors").read_bytes() == b"mine" and (tiny_model / "model.safetensors").is_file()


def test_rm_of_a_model_not_downloaded_says_so(cli):
    assert "not downloaded" in assert_one_error_line(cli("rm", "gpt2-xl", "-y"), 2)


def test_partial_downloads_are_listed_with_their_size_and_removable(cli, fake_hub, tiny_model, weights):
    fake_hub.add_repo("someone/big", tiny_model)
    fake_hub.cut("someone/big", "model.safetensors", after=1000, times=100)
    assert cli("download", "someone/big").returncode == 4
    staging = weights / ".tmp-someone--big"
    assert staging.is_dir()

    rows = {r["name"]: r for r in map(json.loads, cli("models", "--json").stdout.splitlines())}
    assert rows["someone/big"]["state"] == "partial" and rows["someone/big"]["partial_bytes"] > 1000
    table = cli("models").stdout
    assert any(line.split()[:2] == ["someone/big", "partial"] for line in table.splitlines())

    r = cli("rm", "someone/big", "-y")
    assert r.returncode == 0 and "partial download" in r.stderr
    assert not staging.exists() and "someone/big" not in cli("models").stdout

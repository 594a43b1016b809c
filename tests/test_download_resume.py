"""Interrupted downloads: Ctrl-C and SIGTERM stop at once, every byte received is kept and resumed
with a Range request (even after kill -9), and what is provably bad is fetched again, never blessed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpt2cli.errors import DownloadError
from gpt2cli.store import download, hub, layout, resolve
from tests.support.cli import assert_one_error_line, command, user_env

GPT2 = "openai-community/gpt2"
FOLDER = "openai-community--gpt2"
STAGING = ".tmp-openai-community--gpt2"


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _part(weights: Path) -> Path:
    return weights / STAGING / "model.safetensors.part"


def _start_download(weights: Path) -> subprocess.Popen:
    env = user_env(HF_HUB_OFFLINE="", GPT2CLI_WEIGHTS=weights)
    return subprocess.Popen([*command(), "download", "gpt2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _leftovers(weights: Path) -> list[str]:
    return [p.name for p in weights.rglob("*") if p.name.endswith((".incomplete", ".part"))]


# --- item 6: a signal stops a download within about a second ---------------------------------------


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_a_stalled_download_at_once_and_the_next_run_resumes(fake_hub, tiny_model, weights, signum, code):
    fake_hub.add_repo(GPT2, tiny_model)
    stalled, release = fake_hub.stall(GPT2, "model.safetensors")
    child = _start_download(weights)
    try:
        assert stalled.wait(timeout=60), "the download never reached the weights"
        _wait_for(lambda: _part(weights).is_file() and _part(weights).stat().st_size == 64, 30, "64 bytes never reached disk")
        sent = time.monotonic()
        child.send_signal(signum)
        assert child.wait(timeout=30) == code
        assert time.monotonic() - sent < 3.0  # the server still stalls: nothing waited for the network
    finally:
        child.kill()
        child.wait()
        release.set()
    assert child.stdout.read() == b""
    assert not (weights / FOLDER).exists() and _part(weights).stat().st_size == 64  # kept for the resume

    fake_hub.reset_requests()
    assert resolve.resolve_model("gpt2", weights_dir=weights) == weights / FOLDER
    assert (weights / FOLDER / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    ranges = [r.range for r in fake_hub.requests if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert ranges == ["bytes=64-"]
    assert fake_hub.count("GET", "config.json") == 0  # finished files are kept, not fetched again


# --- item 9: resume after kill -9, and what is provably bad is fetched again -------------------------


def test_killed_download_resumes_with_a_range_request_and_leaves_no_partial_files(fake_hub, tiny_model, weights):
    fake_hub.add_repo(GPT2, tiny_model)
    stalled, release = fake_hub.stall(GPT2, "model.safetensors")
    child = _start_download(weights)
    try:
        assert stalled.wait(timeout=60)
        _wait_for(lambda: _part(weights).is_file() and _part(weights).stat().st_size == 64, 30, "no bytes on disk")
    finally:
        child.kill()
        child.wait()
        release.set()
    fake_hub.reset_requests()
    resolve.resolve_model("gpt2", weights_dir=weights)
    ranges = [r.range for r in fake_hub.requests if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert ranges == ["bytes=64-"]
    assert _leftovers(weights) == [] and hub.is_downloaded(weights / FOLDER)


def _interrupted(fake_hub, tiny_model, weights) -> Path:
    """A staging folder with config and tokenizer done and the weights cut after 1000 bytes."""
    fake_hub.add_repo(GPT2, tiny_model)
    fake_hub.cut(GPT2, "model.safetensors", after=1000, times=100)
    with pytest.raises(DownloadError, match="run the command again"):
        resolve.resolve_model("gpt2", weights_dir=weights)
    fake_hub.clear_faults()
    return weights / STAGING


def test_truncated_file_in_the_staging_folder_is_fetched_again(fake_hub, tiny_model, weights, monkeypatch):
    import gpt2cli.store.fetch as fetch

    monkeypatch.setattr(fetch, "_ATTEMPTS", 1)
    staging = _interrupted(fake_hub, tiny_model, weights)
    with open(staging / "vocab.json", "r+b") as f:
        f.truncate(10)
    folder = resolve.resolve_model("gpt2", weights_dir=weights)
    for name in ("vocab.json", "model.safetensors"):
        assert (folder / name).read_bytes() == (tiny_model / name).read_bytes()


def test_partial_file_that_is_not_a_prefix_is_discarded_and_fetched_from_the_start(fake_hub, tiny_model, weights):
    staging = _interrupted(fake_hub, tiny_model, weights)
    part = staging / "model.safetensors.part"
    part.write_bytes(b"\0" * part.stat().st_size)  # right length, wrong bytes
    fake_hub.reset_requests()
    folder = resolve.resolve_model("gpt2", weights_dir=weights)
    assert (folder / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    ranges = [r.range for r in fake_hub.requests if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert ranges[0].startswith("bytes=") and ranges[-1] is None


# --- item 13: a corrupt transfer is never marked complete; a blocked path is named ---------------------


def test_transfer_corrupted_at_the_same_size_is_never_marked_complete(fake_hub, tiny_model, weights, monkeypatch):
    fake_hub.add_repo(GPT2, tiny_model)
    real = download._fetch_repo_info

    def then_corrupt(ref):
        info = real(ref)  # the Hub's sizes and sha256 of the good file ...
        good = (tiny_model / "model.safetensors").read_bytes()
        bad = good[:-100] + bytes(100)
        for commit in fake_hub._repos[GPT2].refs.values():
            commit.files["model.safetensors"] = bad  # ... and a transfer that delivers other bytes
        return info

    monkeypatch.setattr(download, "_fetch_repo_info", then_corrupt)
    with pytest.raises(DownloadError, match="wrong size or checksum") as info:
        resolve.resolve_model("gpt2", weights_dir=weights)
    assert "run the command again" not in str(info.value)
    assert not (weights / FOLDER).exists() and _leftovers(weights) == []


@pytest.mark.parametrize("blocker", [STAGING, ".locks"])
def test_a_file_blocking_the_staging_folder_or_locks_is_named(cli, fake_hub, tiny_model, weights, blocker):
    fake_hub.add_repo(GPT2, tiny_model)
    weights.mkdir()
    (weights / blocker).write_text("not a folder")
    for args in (["download", "gpt2"], ["download", "gpt2", "--force"]):
        line = assert_one_error_line(cli(*args), 4)
        assert f"{weights / blocker} is in the way" in line and "again" not in line
    assert (weights / blocker).read_text() == "not a folder"


def test_finished_folder_marker_lists_verified_files(fake_hub, tiny_model, weights):
    fake_hub.add_repo(GPT2, tiny_model)
    folder = resolve.resolve_model("gpt2", weights_dir=weights)
    marker = json.loads((folder / layout.MARKER).read_text())
    assert marker["holds"] == "model" and _leftovers(weights) == []
    assert sorted(os.listdir(folder)) == sorted([*marker["files"], layout.MARKER])


def test_a_local_write_error_is_named_not_retried(cli, fake_hub, tiny_model, weights):
    staging = _interrupted(fake_hub, tiny_model, weights)
    (staging / "model.safetensors.part").unlink()
    (staging / "model.safetensors.part").mkdir()  # in the way of the resumed weights, on every run
    line = assert_one_error_line(cli("download", "gpt2"), 4)
    assert "model.safetensors.part" in line and "again" not in line

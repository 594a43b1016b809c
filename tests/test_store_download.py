"""The download transaction (store/download.py through store/resolve.py): a recognizable folder that
loads, pinned revisions, --force, damaged or foreign folders, refusals before any byte, full disks,
cut transfers resumed, killed and concurrent downloads. Against the loopback Hub (tests/support/hubserver.py);
nothing reaches the real Hub or the real home folder."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from gpt2cli.errors import CheckpointError, DownloadError, ModelNotFoundError, UsageError
from gpt2cli.store import hub, layout, resolve

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT2 = "openai-community/gpt2"
MODEL_FILES = ["config.json", "vocab.json", "merges.txt", "model.safetensors"]


@pytest.fixture
def no_retry_wait(monkeypatch):
    """huggingface_hub sleeps 1 s before each resume attempt; tests need not wait."""
    import huggingface_hub.file_download as file_download

    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda seconds: None))


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _staging_folders(weights: Path) -> list[str]:
    return sorted(p.name for p in weights.iterdir() if p.name.startswith(".tmp-"))


# ---------------------------------------------------------------------------------------------
# Downloads and the folder they make
# ---------------------------------------------------------------------------------------------


def test_first_use_downloads_into_a_recognizable_folder_that_loads(fake_hub, sources, weights, tmp_path):
    from gpt2cli.session import load_model

    commit = fake_hub.add_repo(GPT2, sources.tiny)
    folder = resolve.resolve_model("gpt2", weights_dir=weights)

    assert folder == weights / "openai-community--gpt2"
    assert _files(folder) == sorted([*MODEL_FILES, layout.MARKER])  # no huggingface_hub bookkeeping left
    for name in MODEL_FILES:
        assert (folder / name).read_bytes() == (sources.tiny / name).read_bytes()
    marker = json.loads((folder / layout.MARKER).read_text())
    assert marker["repo_id"] == GPT2 and marker["commit"] == commit and marker["revision"] is None
    assert sorted(marker["files"]) == sorted(MODEL_FILES)
    assert _staging_folders(weights) == []
    assert not (tmp_path / "hf-home").exists()  # huggingface_hub's own cache is not touched
    load_model(folder)


def test_sharded_checkpoint_downloads_every_shard_and_loads(fake_hub, sources, weights):
    from gpt2cli.session import load_model

    fake_hub.add_repo("someone/sharded", sources.sharded)
    folder = resolve.resolve_model("someone/sharded", weights_dir=weights)
    shards = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert _files(folder) == sorted(
        ["config.json", "vocab.json", "merges.txt", "model.safetensors.index.json", *shards, layout.MARKER]
    )
    load_model(folder)


def test_pinned_revision_gets_its_own_folder(fake_hub, sources, weights):
    main = fake_hub.add_repo(GPT2, sources.tiny)
    v1 = fake_hub.add_repo(GPT2, sources.tiny_v2, revision="v1.0", tags=("release/v1",))

    tagged = resolve.resolve_model("gpt2", revision="v1.0", weights_dir=weights)
    assert tagged == weights / "openai-community--gpt2@v1.0"
    assert json.loads((tagged / layout.MARKER).read_text())["commit"] == v1
    assert (tagged / "model.safetensors").read_bytes() == (sources.tiny_v2 / "model.safetensors").read_bytes()

    by_commit = resolve.resolve_model("gpt2", revision=main, weights_dir=weights)
    assert by_commit.name == f"openai-community--gpt2@{main}"
    slashed = resolve.resolve_model("gpt2", revision="release/v1", weights_dir=weights)
    assert slashed.name.startswith("openai-community--gpt2@release_v1-") and slashed.parent == weights


def test_force_refreshes_a_downloaded_model(fake_hub, sources, weights):
    old = fake_hub.add_repo(GPT2, sources.tiny)
    folder = resolve.download_model("gpt2", weights_dir=weights).folder
    new = fake_hub.add_repo(GPT2, sources.tiny_v2)  # main moves on

    resolve.resolve_model("gpt2", weights_dir=weights)  # on disk: kept as it is
    assert json.loads((folder / layout.MARKER).read_text())["commit"] == old
    assert resolve.download_model("gpt2", weights_dir=weights, force=True).folder == folder
    assert json.loads((folder / layout.MARKER).read_text())["commit"] == new
    assert (folder / "model.safetensors").read_bytes() == (sources.tiny_v2 / "model.safetensors").read_bytes()
    assert sorted(p.name for p in weights.iterdir()) == [".locks", folder.name]  # old copy and staging gone


def test_damaged_download_is_fetched_again(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    folder = resolve.resolve_model("gpt2", weights_dir=weights)
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(100)
    notes = []  # a changed folder is never replaced unasked (issue 12 item 1): a note, then --force
    assert resolve.resolve_model("gpt2", weights_dir=weights, warn=notes.append) == folder
    assert "model.safetensors" in notes[0] and (folder / "model.safetensors").stat().st_size == 100
    resolve.download_model("gpt2", weights_dir=weights, force=True)
    assert (folder / "model.safetensors").read_bytes() == (sources.tiny / "model.safetensors").read_bytes()


def test_folder_not_made_by_gpt2cli_is_left_alone(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    mine = weights / "openai-community--gpt2"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own files")
    with pytest.raises(UsageError, match="not downloaded by gpt2cli"):
        resolve.resolve_model("gpt2", weights_dir=weights)
    assert _files(mine) == ["notes.txt"]


def test_downloads_write_nothing_to_stdout(fake_hub, sources, weights, capfd):
    fake_hub.add_repo(GPT2, sources.tiny)
    resolve.resolve_model("gpt2", weights_dir=weights, progress=True)
    assert capfd.readouterr().out == ""


# ---------------------------------------------------------------------------------------------
# Refused or failed before anything is kept
# ---------------------------------------------------------------------------------------------


def test_pickle_only_repo_is_refused_before_any_download(fake_hub, sources, weights):
    fake_hub.add_repo("someone/pickled", sources.pickle_only)
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*pickle") as info:
        resolve.resolve_model("someone/pickled", weights_dir=weights)
    assert "\n" not in str(info.value)
    assert fake_hub.count(path_contains="/resolve/") == 0
    assert fake_hub.count(path_contains="/tree/") == 0
    assert hub.list_models(weights)[-1].name == "distilgpt2"  # nothing new on disk
    assert _staging_folders(weights) == []


def test_disk_full_is_a_download_error_and_frees_the_partial_download(fake_hub, sources, weights, monkeypatch):
    from gpt2cli.store import download

    fake_hub.add_repo(GPT2, sources.tiny)

    def full_disk(url, headers, remote, staging, *args):
        (Path(staging) / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "fetch_file", full_disk)  # gpt2cli fetches each file itself
    with pytest.raises(DownloadError, match="disk full.*--weights-dir"):
        resolve.resolve_model("gpt2", weights_dir=weights)
    assert _staging_folders(weights) == []


# ---------------------------------------------------------------------------------------------
# Interrupted and concurrent downloads
# ---------------------------------------------------------------------------------------------


def test_transfer_cut_once_is_resumed_with_a_range_request(
    fake_hub, sources, weights, no_retry_wait, monkeypatch
):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 512)  # else bytes before a cut stay in a 10 MB buffer
    fake_hub.add_repo(GPT2, sources.tiny)
    fake_hub.cut(GPT2, "model.safetensors", after=2048)
    folder = resolve.resolve_model("gpt2", weights_dir=weights)
    assert (folder / "model.safetensors").read_bytes() == (sources.tiny / "model.safetensors").read_bytes()
    ranges = [r.range for r in fake_hub.requests if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert ranges == [None, "bytes=2048-"]


def test_interrupted_download_never_looks_like_a_model_and_next_run_resumes(
    fake_hub, sources, weights, no_retry_wait
):
    fake_hub.add_repo(GPT2, sources.tiny)
    fake_hub.cut(GPT2, "model.safetensors", after=1000, times=100)
    with pytest.raises(DownloadError, match="run the command again") as info:
        resolve.resolve_model("gpt2", weights_dir=weights)
    assert "\n" not in str(info.value)

    folder = weights / "openai-community--gpt2"
    assert not folder.exists() and _staging_folders(weights) == [".tmp-openai-community--gpt2"]
    assert not hub.list_models(weights)[0].downloaded
    with pytest.raises(ModelNotFoundError):
        resolve.resolve_model("gpt2", weights_dir=weights, offline=True)

    fake_hub.clear_faults()
    assert resolve.resolve_model("gpt2", weights_dir=weights) == folder
    assert (folder / "model.safetensors").read_bytes() == (sources.tiny / "model.safetensors").read_bytes()
    assert fake_hub.count("GET", "/resolve/") - fake_hub.count("GET", "model.safetensors") == 3  # kept, not refetched
    assert _staging_folders(weights) == []


def test_resume_never_mixes_two_commits(fake_hub, sources, weights, no_retry_wait):
    fake_hub.add_repo(GPT2, sources.tiny)
    fake_hub.cut(GPT2, "model.safetensors", after=1000, times=100)
    with pytest.raises(DownloadError):
        resolve.resolve_model("gpt2", weights_dir=weights)
    fake_hub.clear_faults()
    new = fake_hub.add_repo(GPT2, sources.tiny_v2)  # main moved on between the two runs

    folder = resolve.resolve_model("gpt2", weights_dir=weights)
    assert json.loads((folder / layout.MARKER).read_text())["commit"] == new
    for name in MODEL_FILES:
        assert (folder / name).read_bytes() == (sources.tiny_v2 / name).read_bytes()
    assert fake_hub.count("GET", "config.json") == 2  # the old commit's partial download was started over


def test_killed_download_leaves_no_model_and_is_finished_by_the_next_run(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    stalled, release = fake_hub.stall(GPT2, "model.safetensors")
    code = (
        "import sys; from pathlib import Path; from gpt2cli.store.resolve import resolve_model; "
        "resolve_model('gpt2', weights_dir=Path(sys.argv[1]))"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(weights)], env=os.environ.copy(), cwd=REPO_ROOT)
    try:
        assert stalled.wait(timeout=30), "the child never started downloading the weights"
    finally:
        child.kill()
        child.wait()
        release.set()

    folder = weights / "openai-community--gpt2"
    assert not hub.is_downloaded(folder) and not folder.exists()
    assert resolve.resolve_model("gpt2", weights_dir=weights) == folder  # the dead child's lock is gone
    assert hub.is_downloaded(folder)


def test_two_concurrent_downloads_make_one_good_folder(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    stalled, release = fake_hub.stall(GPT2, "model.safetensors")
    results: dict[str, object] = {}

    def run(key: str) -> None:
        try:
            results[key] = resolve.resolve_model("gpt2", weights_dir=weights)
        except Exception as e:  # noqa: BLE001 - reported by the asserts below
            results[key] = e

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert stalled.wait(timeout=30)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    time.sleep(0.3)
    assert "second" not in results  # waiting for the first download's lock
    release.set()
    first.join(30)
    second.join(30)

    folder = weights / "openai-community--gpt2"
    assert results == {"first": folder, "second": folder}
    assert hub.is_downloaded(folder)
    repo_info_requests = [r for r in fake_hub.requests if r.path == f"/api/models/{GPT2}"]
    assert len(repo_info_requests) == 1  # the second thread found the finished copy: it asked nothing
    assert fake_hub.count("GET", "model.safetensors") == 1

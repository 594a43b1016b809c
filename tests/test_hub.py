"""Models from the Hub: names, downloads into the weights folder, offline use, errors.

Every test talks to a loopback Hub (tests/support/hubserver.py) serving tiny random GPT-2 repos; nothing
reaches the real Hub or the real home folder.
"""

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

from gpt2cli.errors import (
    CheckpointError,
    DownloadError,
    ModelNotFoundError,
    UsageError,
)
from gpt2cli.store import hub, layout, resolve
from tests.support import models as modelfactory
from tests.support.hubserver import FakeHub  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT2 = "openai-community/gpt2"
MODEL_FILES = ["config.json", "vocab.json", "merges.txt", "model.safetensors"]


# ---------------------------------------------------------------------------------------------
# Fixtures: source repos on disk, a running loopback Hub, an empty weights folder
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> types.SimpleNamespace:
    """Folders the fake Hub serves as repos: tiny models in the Hub's layouts, and broken ones."""
    root = tmp_path_factory.mktemp("hub-sources")
    tiny = modelfactory.write_model(root / "tiny", seed=1)
    tiny_v2 = modelfactory.write_model(root / "tiny-v2", seed=2)
    sharded = modelfactory.write_model(root / "sharded", seed=3, shards=3)
    pickle_only = modelfactory.write_model(root / "pickle-only", seed=4)
    (pickle_only / "model.safetensors").unlink()
    (pickle_only / "pytorch_model.bin").write_bytes(b"\x80\x04 not a real pickle, never to be read")
    no_merges = modelfactory.write_model(root / "no-merges", seed=5)
    (no_merges / "merges.txt").unlink()
    llama = modelfactory.write_model(root / "llama", seed=6, extra_config={"model_type": "llama"})
    return types.SimpleNamespace(
        tiny=tiny, tiny_v2=tiny_v2, sharded=sharded, pickle_only=pickle_only, no_merges=no_merges, llama=llama
    )


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A running loopback Hub that huggingface_hub talks to, with HF_HOME in a temporary folder."""
    import huggingface_hub.constants as constants

    with FakeHub() as server:
        hf_home = tmp_path / "hf-home"
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for var in ("HF_HUB_OFFLINE", "GPT2CLI_WEIGHTS", "HF_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        # huggingface_hub read these at import time (some modules keep copies): point them at the fake
        # Hub, so that nothing, not even its agent-registry lookup, goes to the real one.
        _point_huggingface_hub_at(server.url, monkeypatch)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json"), raising=False)
        yield server


def _point_huggingface_hub_at(url: str, monkeypatch) -> None:
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("huggingface_hub")]
    for module in modules:
        for attr, value in (("ENDPOINT", url), ("HUGGINGFACE_CO_URL_TEMPLATE", template)):
            if isinstance(getattr(module, attr, None), str):
                monkeypatch.setattr(module, attr, value)


@pytest.fixture
def weights(tmp_path) -> Path:
    return tmp_path / "weights"


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


def test_model_on_disk_is_used_without_any_request(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    folder = resolve.resolve_model("gpt2", weights_dir=weights)
    fake_hub.reset_requests()

    assert resolve.resolve_model("gpt2", weights_dir=weights) == folder
    assert resolve.resolve_model(GPT2, weights_dir=weights) == folder  # the alias and its repo share a folder
    assert resolve.download_model("gpt2", weights_dir=weights).folder == folder  # download keeps a complete copy
    assert fake_hub.count() == 0
    fake_hub.stop()
    assert resolve.resolve_model("gpt2", weights_dir=weights) == folder


def test_any_owner_name_repo_downloads(fake_hub, sources, weights):
    fake_hub.add_repo("someone/tiny-gpt2", sources.tiny)
    folder = resolve.resolve_model("someone/tiny-gpt2", weights_dir=weights)
    assert folder == weights / "someone--tiny-gpt2"
    assert hub.is_downloaded(folder)


def test_distilgpt2_alias_points_at_its_repo(fake_hub, sources, weights):
    fake_hub.add_repo("distilbert/distilgpt2", sources.tiny)
    assert resolve.resolve_model("distilgpt2", weights_dir=weights) == weights / "distilbert--distilgpt2"


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
    assert not hub.is_downloaded(folder)
    resolve.resolve_model("gpt2", weights_dir=weights)
    assert (folder / "model.safetensors").read_bytes() == (sources.tiny / "model.safetensors").read_bytes()


def test_folder_not_made_by_gpt2cli_is_left_alone(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    mine = weights / "openai-community--gpt2"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own files")
    with pytest.raises(UsageError, match="not downloaded by gpt2cli"):
        resolve.resolve_model("gpt2", weights_dir=weights)
    assert _files(mine) == ["notes.txt"]


# ---------------------------------------------------------------------------------------------
# Names that are not Hub models
# ---------------------------------------------------------------------------------------------


def test_local_folder_is_returned_as_is_without_request(fake_hub, sources, weights):
    assert resolve.resolve_model(str(sources.tiny), weights_dir=weights) == sources.tiny
    assert fake_hub.count() == 0
    with pytest.raises(UsageError, match="local folder"):
        resolve.download_model(str(sources.tiny), weights_dir=weights)


@pytest.mark.parametrize("name", ["./no-such-folder", "/no/such/folder", "a/b/c"])
def test_missing_folder_path_is_model_not_found(fake_hub, weights, name):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve.resolve_model(name, weights_dir=weights)
    assert fake_hub.count() == 0


def test_unknown_bare_name_lists_the_aliases(fake_hub, weights):
    with pytest.raises(ModelNotFoundError, match="gpt2-medium.*owner/name"):
        resolve.resolve_model("gpt3", weights_dir=weights)


# ---------------------------------------------------------------------------------------------
# Refusals and Hub errors
# ---------------------------------------------------------------------------------------------


def test_unknown_repo_is_model_not_found(fake_hub, weights):
    with pytest.raises(ModelNotFoundError, match="nobody/nothing") as info:
        resolve.resolve_model("nobody/nothing", weights_dir=weights)
    assert "\n" not in str(info.value)
    assert not (weights / "nobody--nothing").exists()


def test_unknown_revision_is_model_not_found(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    with pytest.raises(ModelNotFoundError, match="revision 'v9' not found in openai-community/gpt2"):
        resolve.resolve_model("gpt2", revision="v9", weights_dir=weights)


def test_pickle_only_repo_is_refused_before_any_download(fake_hub, sources, weights):
    fake_hub.add_repo("someone/pickled", sources.pickle_only)
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*pickle") as info:
        resolve.resolve_model("someone/pickled", weights_dir=weights)
    assert "\n" not in str(info.value)
    assert fake_hub.count(path_contains="/resolve/") == 0
    assert fake_hub.count(path_contains="/tree/") == 0
    assert hub.list_models(weights)[-1].name == "distilgpt2"  # nothing new on disk
    assert _staging_folders(weights) == []


def test_repo_lacking_a_tokenizer_file_is_refused(fake_hub, sources, weights):
    fake_hub.add_repo("someone/no-merges", sources.no_merges)
    with pytest.raises(ModelNotFoundError, match="lacks merges.txt"):
        resolve.resolve_model("someone/no-merges", weights_dir=weights)
    assert fake_hub.count(path_contains="/resolve/") == 0


def test_other_architecture_is_refused(fake_hub, sources, weights):
    fake_hub.add_repo("someone/llama", sources.llama)
    with pytest.raises(CheckpointError, match="'llama' model; gpt2cli runs GPT-2"):
        resolve.resolve_model("someone/llama", weights_dir=weights)


def test_unreachable_hub_says_to_use_a_folder_or_offline(fake_hub, weights):
    fake_hub.stop()
    with pytest.raises(DownloadError) as info:
        resolve.resolve_model("gpt2", weights_dir=weights)
    message = str(info.value)
    assert "cannot reach the Hub" in message and "--model PATH" in message and "HF_ENDPOINT" in message
    assert info.value.exit_code == 4


def test_disk_full_is_a_download_error_and_frees_the_partial_download(fake_hub, sources, weights, monkeypatch):
    import huggingface_hub

    fake_hub.add_repo(GPT2, sources.tiny)

    def full_disk(*args, **kwargs):
        (Path(kwargs["local_dir"]) / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", full_disk)
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


# ---------------------------------------------------------------------------------------------
# Offline
# ---------------------------------------------------------------------------------------------


def test_offline_uses_models_on_disk(fake_hub, sources, weights, monkeypatch):
    fake_hub.add_repo(GPT2, sources.tiny)
    folder = resolve.download_model("gpt2", weights_dir=weights).folder
    fake_hub.reset_requests()
    assert resolve.resolve_model("gpt2", weights_dir=weights, offline=True) == folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve.resolve_model("gpt2", weights_dir=weights) == folder
    assert fake_hub.count() == 0


def test_offline_missing_model_names_the_model_and_its_folder(fake_hub, weights, monkeypatch):
    with pytest.raises(ModelNotFoundError) as info:
        resolve.resolve_model("gpt2-medium", weights_dir=weights, offline=True)
    assert "gpt2-medium" in str(info.value) and str(weights / "openai-community--gpt2-medium") in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve.resolve_model("someone/model", weights_dir=weights)
    assert fake_hub.count() == 0


# ---------------------------------------------------------------------------------------------
# Listing and locations
# ---------------------------------------------------------------------------------------------


def test_list_models_shows_aliases_and_downloaded_models(fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    fake_hub.add_repo("someone/sharded", sources.sharded, revision="v2")
    resolve.resolve_model("gpt2", weights_dir=weights)
    resolve.resolve_model("someone/sharded", revision="v2", weights_dir=weights)
    (weights / ".tmp-someone--partial").mkdir()  # an interrupted download is not a model
    fake_hub.reset_requests()

    entries = {e.name: e for e in hub.list_models(weights)}
    assert list(entries) == [*hub.ALIASES, "someone/sharded@v2"]
    gpt2 = entries["gpt2"]
    assert gpt2.downloaded and gpt2.repo_id == GPT2 and gpt2.folder == weights / "openai-community--gpt2"
    assert gpt2.size_bytes == sum(p.stat().st_size for p in gpt2.folder.iterdir())
    assert not entries["gpt2-xl"].downloaded and entries["gpt2-xl"].size_bytes == 0
    sharded = entries["someone/sharded@v2"]
    assert sharded.downloaded and sharded.revision == "v2" and sharded.folder.name == "someone--sharded@v2"
    assert fake_hub.count() == 0


def test_weights_root_prefers_argument_then_env_then_checkout_then_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2CLI_WEIGHTS", str(tmp_path / "from-env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.weights_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert hub.weights_root() == tmp_path / "from-env"
    monkeypatch.delenv("GPT2CLI_WEIGHTS")
    monkeypatch.setattr(hub, "_checkout_weights", lambda: None)
    assert hub.weights_root() == tmp_path / "xdg" / "gpt2cli"
    monkeypatch.setattr(hub, "_checkout_weights", lambda: tmp_path / "checkout" / "weights")
    assert hub.weights_root() == tmp_path / "checkout" / "weights"


def test_source_checkout_is_recognized_by_its_pyproject_and_weights_folder(tmp_path):
    project = tmp_path / "project"
    (project / "gpt2cli").mkdir(parents=True)
    assert hub.find_checkout_weights(project / "gpt2cli") is None  # an installed package: no pyproject
    (project / "pyproject.toml").write_text('[project]\nname = "gpt2cli"\n')
    assert hub.find_checkout_weights(project / "gpt2cli") is None  # no weights/ folder
    (project / "weights").mkdir()
    assert hub.find_checkout_weights(project / "gpt2cli") == project / "weights"
    (project / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert hub.find_checkout_weights(project / "gpt2cli") is None


def test_downloads_write_nothing_to_stdout(fake_hub, sources, weights, capfd):
    fake_hub.add_repo(GPT2, sources.tiny)
    resolve.resolve_model("gpt2", weights_dir=weights, progress=True)
    assert capfd.readouterr().out == ""


def test_importing_hub_does_not_import_huggingface_hub():
    code = "import sys, gpt2cli.store.hub; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# The command line: gpt2cli download / models, and generate downloading on first use
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli(fake_hub, weights):
    """Runs the installed gpt2cli against the fake Hub, online, with `weights` as the weights folder."""
    from tests.support.cli import run

    def gpt2cli(*args, **env):
        return run(*args, env={"HF_HUB_OFFLINE": "", "GPT2CLI_WEIGHTS": str(weights), **env}, cwd=weights.parent)

    return gpt2cli


def test_cli_download_prints_the_folder_and_models_lists_it(cli, fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    first = cli("download", "gpt2")
    folder = weights / "openai-community--gpt2"
    assert (first.returncode, first.stdout) == (0, f"{folder}\n")
    assert first.stderr.startswith("gpt2cli: downloaded gpt2 (") and first.stderr.count("\n") == 1  # no bars
    fake_hub.reset_requests()

    again = cli("download", "gpt2")
    assert (again.returncode, again.stdout) == (0, f"{folder}\n") and "already downloaded" in again.stderr
    listing = cli("models")
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[1].split()[:2] == ["gpt2", "yes"] and str(folder) in listing.stdout
    rows = [json.loads(line) for line in cli("models", "--json").stdout.splitlines()]
    assert [r["name"] for r in rows] == list(hub.ALIASES)
    assert rows[0]["downloaded"] and rows[0]["size_bytes"] > 0 and rows[0]["folder"] == str(folder)
    assert fake_hub.count() == 0


def test_cli_generate_downloads_on_first_use_then_runs_with_the_hub_gone(cli, fake_hub, sources, weights):
    fake_hub.add_repo("someone/tiny-gpt2", sources.tiny)
    first = cli("generate", "-m", "someone/tiny-gpt2", "-n", "5", "--seed", "1", "hi")
    assert first.returncode == 0, first.stderr
    assert first.stdout and hub.is_downloaded(weights / "someone--tiny-gpt2")
    fake_hub.stop()
    again = cli("generate", "-m", "someone/tiny-gpt2", "-n", "5", "--seed", "1", "hi")
    assert (again.returncode, again.stdout) == (0, first.stdout)


@pytest.mark.parametrize(
    "repo, args, code, words",
    [
        (None, ["download", "nobody/nothing"], 2, "no model repo 'nobody/nothing'"),
        ("someone/pickled", ["download", "someone/pickled"], 3, "pickle"),
        (None, ["download", "gpt2", "--revision", "v9"], 2, "revision 'v9' not found"),
        (None, ["generate", "-m", "gpt2-xl", "--offline", "hi"], 2, "offline"),
    ],
)
def test_cli_hub_failures_are_one_line_with_their_exit_code(cli, fake_hub, sources, repo, args, code, words):
    fake_hub.add_repo(GPT2, sources.tiny)
    if repo:
        fake_hub.add_repo(repo, sources.pickle_only)
    result = cli(*args)
    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith("gpt2cli: error: ") and words in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_cli_unreachable_hub_exits_4_suggesting_a_folder_or_offline(cli, fake_hub):
    fake_hub.stop()
    result = cli("generate", "-m", "gpt2", "hi")
    assert result.returncode == 4 and result.stdout == ""
    assert "--model PATH" in result.stderr and "gpt2cli download" in result.stderr

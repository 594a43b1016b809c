"""Model names -> folders (store/hub.py, store/resolve.py): aliases and owner/name repos, a model on
disk used without a request, local folders, names and repos that are refused, offline use, the list
of models and where the weights folder is. Against the loopback Hub (tests/support/hubserver.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpt2cli.errors import CheckpointError, DownloadError, ModelNotFoundError, UsageError
from gpt2cli.store import hub, resolve

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT2 = "openai-community/gpt2"


# ---------------------------------------------------------------------------------------------
# Names: aliases, owner/name repos, local folders
# ---------------------------------------------------------------------------------------------


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
    (weights / ".tmp-someone--partial").mkdir()  # an interrupted download is not a model, but is listed
    fake_hub.reset_requests()

    entries = {e.name: e for e in hub.list_models(weights)}
    assert list(entries) == [*hub.ALIASES, "someone/partial", "someone/sharded@v2"]
    assert not entries["someone/partial"].downloaded and entries["someone/partial"].state == "partial"
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


def test_importing_hub_does_not_import_huggingface_hub():
    code = "import sys, gpt2cli.store.hub; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "False"

"""The model store never loses a user's files and never believes a stranger's: user edits survive,
shard indexes cannot point outside their folder, configs are checked against the weights before
anything is sized by them, hostile or broken files get their documented exit code and one line.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from gpt2cli.errors import CheckpointError, ModelNotFoundError
from gpt2cli.store import checkpoint, hub, layout, resolve
from tests.support import models as modelfactory
from tests.support.cli import assert_one_error_line, run

GPT2 = "openai-community/gpt2"
SHARDS = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]


def _model(tmp_path, name="m", **kwargs) -> Path:
    return modelfactory.write_model(tmp_path / name, seed=1, **kwargs)


# --- item 1: a user's additions and edits are never replaced unasked -----------------------------


def test_files_added_or_edited_in_a_downloaded_model_survive_the_next_run(cli, fake_hub, tiny_model, weights):
    fake_hub.add_repo(GPT2, tiny_model)
    assert cli("download", "gpt2").returncode == 0
    folder = weights / "openai-community--gpt2"
    (folder / "notes.txt").write_text("mine")
    (folder / "finetune").mkdir()
    (folder / "finetune" / "model.safetensors").write_bytes(b"my fine-tune")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "my_note": "edited by hand"}))
    fake_hub.reset_requests()

    result = cli("generate", "-m", "gpt2", "-n", "2", "--seed", "1", "hi")
    assert result.returncode == 0, result.stderr
    assert fake_hub.count() == 0  # not downloaded again
    assert "config.json" in result.stderr and "differ" in result.stderr and "--force" in result.stderr
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "finetune" / "model.safetensors").read_bytes() == b"my fine-tune"
    assert json.loads((folder / "config.json").read_text())["my_note"] == "edited by hand"


def test_force_restores_the_hubs_files_and_keeps_the_users_added_files(fake_hub, tiny_model, weights):
    fake_hub.add_repo(GPT2, tiny_model)
    folder = resolve.download_model("gpt2", weights_dir=weights).folder
    (folder / "notes.txt").write_text("mine")
    (folder / "finetune").mkdir()
    (folder / "finetune" / "weights.bin").write_bytes(b"x")
    (folder / "config.json").write_text("{}")

    resolve.download_model("gpt2", weights_dir=weights, force=True)
    assert (folder / "config.json").read_bytes() == (tiny_model / "config.json").read_bytes()
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "finetune" / "weights.bin").read_bytes() == b"x"
    assert sorted(p.name for p in weights.iterdir()) == [".locks", folder.name]


# --- item 2: a shard index names only shard files inside its folder -------------------------------

HOSTILE = ["../../other/model.safetensors", "/etc/passwd", "/proc/self/environ", "sub/" + SHARDS[0], 5, None, [1]]


def _with_index(folder: Path, value) -> Path:
    index = json.loads((folder / layout.SHARD_INDEX).read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = value
    (folder / layout.SHARD_INDEX).write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_local_shard_index_naming_anything_but_a_shard_is_refused(tmp_path, value, monkeypatch):
    folder = _with_index(_model(tmp_path, shards=2), value)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1])
    with pytest.raises(CheckpointError, match="not a shard file name") as info:
        checkpoint.weight_files(folder)
    assert "\n" not in str(info.value)
    assert not any(s in p for p in opened for s in ("passwd", "environ", "other"))
    r = run("generate", "-m", folder, "-n", "1", "hi")
    assert "fix or replace" in assert_one_error_line(r, 3)  # a local folder: no re-download advice


@pytest.mark.parametrize("value", ["../../other/model.safetensors", "/etc/passwd", 7])
def test_hub_shard_index_naming_a_path_is_refused_before_any_shard_is_fetched(fake_hub, tmp_path, weights, value):
    fake_hub.add_repo("someone/hostile", _with_index(_model(tmp_path, shards=2), value))
    with pytest.raises(CheckpointError, match="not a shard file name"):
        resolve.resolve_model("someone/hostile", weights_dir=weights)
    assert fake_hub.count("GET", "model-0000") == 0
    assert not (weights / "someone--hostile").exists() and not (weights / ".tmp-someone--hostile").exists()


# --- item 3: config sizes are checked against the weights before anything is sized by them ----------


def test_huge_n_layer_fails_before_allocating_for_it(tmp_path):
    folder = _model(tmp_path, extra_config={"n_layer": 10**5})
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(CheckpointError, match="holds 2 layers but config.json says n_layer=100000"):
            from gpt2cli.session import load_model

            load_model(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6 and time.perf_counter() - started < 5


@pytest.mark.parametrize(
    "key, value",
    [("n_embd", 2**40), ("vocab_size", 10**30), ("n_positions", 2**31), ("layer_norm_epsilon", float("inf"))],
)
def test_config_sizes_out_of_bounds_are_refused(tmp_path, key, value):
    folder = _model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))  # inf is written as Infinity
    line = assert_one_error_line(run("generate", "-m", folder, "-n", "1", "hi"), 3)
    assert key in line and len(line) < 400


# --- item 11: broken input gets its documented code, never "a bug" ----------------------------------


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"n_layer": ' + "9" * 5000 + "}"], ids=["deep", "digits"])
def test_unparseable_config_is_a_broken_checkpoint(tmp_path, text):
    folder = _model(tmp_path)
    (folder / "config.json").write_text(text)
    line = assert_one_error_line(run("generate", "-m", folder, "-n", "1", "hi"), 3)
    assert "config.json" in line and len(line) < 400


def test_negative_endoftext_id_is_a_broken_tokenizer(tmp_path):
    folder = _model(tmp_path)
    vocab = json.loads((folder / "vocab.json").read_text())
    (folder / "vocab.json").write_text(json.dumps({**vocab, "<|endoftext|>": -5}))
    assert "<|endoftext|>" in assert_one_error_line(run("tokenize", "-m", folder, "hi"), 3)


def test_model_in_a_missing_home_folder_is_not_found():
    assert "does not exist" in assert_one_error_line(run("generate", "-m", "~nosuchuser/x", "hi"), 2)


def test_a_file_given_as_model_is_named_a_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    line = assert_one_error_line(run("generate", "-m", tmp_path / "weights.bin", "hi"), 2)
    assert "is a file, not a model folder" in line


def test_deeply_nested_marker_makes_the_model_not_downloaded(tmp_path, tiny_model):
    weights = tmp_path / "weights"
    folder = weights / "openai-community--gpt2"
    folder.parent.mkdir()
    import shutil

    shutil.copytree(tiny_model, folder)
    (folder / layout.MARKER).write_text("[" * 100_000 + "]" * 100_000)
    env = {"GPT2CLI_WEIGHTS": weights}
    listing = run("models", env=env)
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].split()[:2] == ["gpt2", "no"]
    assert "not downloaded" in assert_one_error_line(run("generate", "-m", "gpt2", "--offline", "hi", env=env), 2)


def test_unreadable_model_folder_says_permission_denied(tmp_path, monkeypatch):
    folder = _model(tmp_path)
    real = os.listdir

    def listdir(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    from gpt2cli.session import load_model

    with pytest.raises(ModelNotFoundError, match="cannot read the model folder.*Permission denied"):
        load_model(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files and folders; covered by the monkeypatched tests")
def test_mode_000_folder_and_weights_say_permission_denied(tmp_path):
    folder = _model(tmp_path)
    os.chmod(folder / "model.safetensors", 0)
    try:
        line = assert_one_error_line(run("generate", "-m", folder, "hi"), 3)
        assert "Permission denied" in line and "No such file" not in line
    finally:
        os.chmod(folder / "model.safetensors", 0o644)
    os.chmod(folder, 0)
    try:
        assert "Permission denied" in assert_one_error_line(run("generate", "-m", folder, "hi"), 2)
    finally:
        os.chmod(folder, 0o755)


# --- item 13: messages that say what is really wrong --------------------------------------------------


def test_unreadable_weights_file_is_a_permission_error_not_a_missing_file(tmp_path, monkeypatch):
    folder = _model(tmp_path)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(CheckpointError, match="cannot read the weights \\(Permission denied\\)"):
        checkpoint.load_weights(folder, __import__("gpt2cli.store.config", fromlist=["x"]).read_config(folder / "config.json"))


def test_re_download_is_advised_only_for_downloaded_models(cli, fake_hub, tiny_model, tmp_path, weights):
    local = _model(tmp_path)
    (local / "merges.txt").write_text("#version\nx y z\n")
    line = assert_one_error_line(run("tokenize", "-m", local, "hi"), 3)
    assert "fix or replace" in line and "re-download" not in line
    fake_hub.add_repo(GPT2, tiny_model)
    assert cli("download", "gpt2").returncode == 0
    (weights / "openai-community--gpt2" / "merges.txt").write_text("#version\nx y z\n")
    r = cli("tokenize", "-m", "gpt2", "hi")  # a note that merges.txt changed, then the error
    assert r.returncode == 3 and r.err_lines[-1].startswith("gpt2cli: error: ")
    assert f"gpt2cli download {GPT2} --force" in r.err_lines[-1]


# --- item 14 -----------------------------------------------------------------------------------------


def test_empty_weights_dir_is_a_usage_error_and_creates_nothing(tmp_path):
    for args in (["models"], ["download", "gpt2"], ["generate", "hi"]):
        line = assert_one_error_line(run(*args, "--weights-dir", "", cwd=tmp_path), 2)
        assert "--weights-dir" in line and "must not be empty" in line
    assert list(tmp_path.iterdir()) == []


# --- item 16: tokenize fetches only the tokenizer ---------------------------------------------------


def test_tokenize_fetches_only_the_tokenizer_and_generate_later_fetches_the_rest(cli, fake_hub, tiny_model, weights):
    fake_hub.add_repo(GPT2, tiny_model)
    first = cli("tokenize", "-m", "gpt2", "hi")
    assert first.returncode == 0, first.stderr
    fetched = sorted(r.path.rsplit("/", 1)[1] for r in fake_hub.requests if r.method == "GET" and "/resolve/" in r.path)
    assert fetched == ["merges.txt", "vocab.json"]
    folder = weights / "openai-community--gpt2"
    assert not hub.is_downloaded(folder) and hub.list_models(weights)[0].state == "tokenizer"
    assert cli("tokenize", "-m", "gpt2", "--offline", "hi").stdout == first.stdout
    assert "not downloaded" in assert_one_error_line(cli("generate", "-m", "gpt2", "--offline", "hi"), 2)

    assert cli("generate", "-m", "gpt2", "-n", "2", "hi").returncode == 0
    assert hub.is_downloaded(folder)
    for name in ("config.json", "model.safetensors", "vocab.json"):
        assert (folder / name).read_bytes() == (tiny_model / name).read_bytes()

"""Broken checkpoints and tokenizers: one error line naming the file, what is wrong and what to do
(exit 3, or 2 for a folder that is not a model), the traceback only with GPT2CLI_DEBUG=1."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from tests.support import models as modelfactory
from tests.support.cli import REMEDY, assert_one_error_line, run, run_quick


def _tensors(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _save(folder: Path, tensors: dict) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


class _CreatesFileWhenUnpickled:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _truncated(f: Path) -> None:
    data = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(data[: len(data) // 2])


def _corrupt_header(f: Path) -> None:
    data = bytearray((f / "model.safetensors").read_bytes())
    data[8:40] = b"#" * 32
    (f / "model.safetensors").write_bytes(bytes(data))


def _missing_tensor(f: Path) -> None:
    tensors = _tensors(f)
    del tensors["h.1.mlp.c_fc.bias"]
    _save(f, tensors)


def _wrong_shape(f: Path) -> None:
    import numpy as np

    tensors = _tensors(f)
    tensors["h.0.ln_1.weight"] = np.ones(32, dtype=np.float32)
    _save(f, tensors)


def _wrong_dtype(f: Path) -> None:
    import numpy as np

    tensors = _tensors(f)
    tensors["h.0.ln_1.bias"] = np.ones(64, dtype=np.int32)
    _save(f, tensors)


def _pickle_only(f: Path) -> None:
    (f / "model.safetensors").unlink()
    (f / "pytorch_model.bin").write_bytes(pickle.dumps(_CreatesFileWhenUnpickled(f / "UNPICKLED")))


def _disagreeing_tokenizer(f: Path) -> None:
    vocab = json.loads((f / "vocab.json").read_text(encoding="utf-8"))
    a, b = list(vocab)[260:262]  # two merged tokens swap ids: merges.txt ranks them the other way
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (f / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def _missing_shard(f: Path) -> None:
    (f / "model.safetensors").rename(f / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"wte.weight": "model-00001-of-00002.safetensors", "wpe.weight": "model-00002-of-00002.safetensors"}}
    (f / "model.safetensors.index.json").write_text(json.dumps(index))


def _not_a_model(f: Path) -> None:
    for p in f.iterdir():
        p.unlink()
    (f / "notes.txt").write_text("my shopping list")


BROKEN = [
    # (id, break the folder, exit code, file the message names, what it says is wrong)
    ("truncated-safetensors", _truncated, 3, "model.safetensors", "truncated or corrupt"),
    ("corrupt-header", _corrupt_header, 3, "model.safetensors", "not a valid safetensors file"),
    ("empty-safetensors", lambda f: (f / "model.safetensors").write_bytes(b""), 3, "model.safetensors", "not a valid"),
    ("missing-tensor", _missing_tensor, 3, "model.safetensors", "'h.1.mlp.c_fc.bias' is missing"),
    ("wrong-shape", _wrong_shape, 3, "model.safetensors", "has shape [32]"),
    ("wrong-dtype", _wrong_dtype, 3, "model.safetensors", "dtype I32"),
    ("config-more-layers", lambda f: _edit_config(f, n_layer=3), 3, "model.safetensors", "n_layer=3"),
    ("config-fewer-layers", lambda f: _edit_config(f, n_layer=1), 3, "model.safetensors", "n_layer=1"),
    ("config-other-width", lambda f: _edit_config(f, n_embd=32), 3, "model.safetensors", "config.json implies"),
    ("config-malformed", lambda f: (f / "config.json").write_text('{"n_layer": 2,'), 3, "config.json", "cannot read"),
    ("config-not-an-object", lambda f: (f / "config.json").write_text("[]"), 3, "config.json", "not a JSON object"),
    ("config-bad-value", lambda f: _edit_config(f, n_head="4"), 3, "config.json", "'n_head' must be a positive integer"),
    ("config-missing", lambda f: (f / "config.json").unlink(), 2, "", "no config.json"),
    ("vocab-missing", lambda f: (f / "vocab.json").unlink(), 2, "vocab.json", "missing"),
    ("merges-missing", lambda f: (f / "merges.txt").unlink(), 2, "merges.txt", "missing"),
    ("vocab-malformed", lambda f: (f / "vocab.json").write_text("{"), 3, "", "cannot read the tokenizer files"),
    ("merges-malformed", lambda f: (f / "merges.txt").write_text("#version: 0.2\na b c\n"), 3, "merges.txt", "malformed"),
    ("vocab-merges-disagree", _disagreeing_tokenizer, 3, "vocab.json", "do not belong together"),
    pytest.param(
        "tokenizer-bigger-than-model",
        lambda f: modelfactory.write_tiny_tokenizer(f, merges=modelfactory.TINY_MERGES + [("x", "y")]),
        3, "", "do not belong to these weights",
    ),  # fmt: skip
    ("shard-missing", _missing_shard, 3, "model-00002-of-00002.safetensors", "missing"),
    ("not-a-model", _not_a_model, 2, "", "not a model folder"),
    ("pickle-only", _pickle_only, 3, "", "pytorch_model.bin"),
]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return modelfactory.write_model(tmp_path_factory.mktemp("robust") / "base", mask_buffers=False, seed=6)


def _case(p):
    """BROKEN entries as params: the id first, marks kept."""
    values, marks = (p.values, p.marks) if hasattr(p, "values") else (p, ())
    return pytest.param(*values[1:], id=values[0], marks=marks)


@pytest.mark.parametrize(("breaks", "code", "names", "wrong"), [_case(p) for p in BROKEN])
def test_broken_checkpoint_is_one_line_naming_the_file_and_the_remedy(base_model, tmp_path, breaks, code, names, wrong):
    folder = tmp_path / "model"
    shutil.copytree(base_model, folder)
    breaks(folder)
    line = assert_one_error_line(run_quick("generate", "-m", folder, "-n", "2", "hi"), code=code)
    assert str(folder / names) in line
    assert wrong in line
    assert REMEDY.search(line), f"no remedy in: {line}"
    assert not (folder / "UNPICKLED").exists(), "a pickle was unpickled"
    # for a bug report, the full traceback; same exit code, same last line
    debug = run_quick("generate", "-m", folder, "-n", "2", "hi", env={"GPT2CLI_DEBUG": "1"})
    assert debug.code == code
    assert "Traceback (most recent call last)" in debug.err
    assert debug.err_lines[-1] == line
    assert not (folder / "UNPICKLED").exists()


def test_weights_holding_nan_are_a_broken_checkpoint(base_model, tmp_path):
    import numpy as np

    folder = tmp_path / "model"
    shutil.copytree(base_model, folder)
    tensors = _tensors(folder)
    tensors["wte.weight"] = np.full_like(tensors["wte.weight"], np.nan)
    _save(folder, tensors)
    for command in (["generate", "-n", "2"], ["beam", "-n", "2", "--json"], ["score", "--json"]):
        line = assert_one_error_line(run_quick(*command, "-m", folder, "hi"), code=3)
        # a folder gpt2cli did not download: named, and re-downloading is not the remedy
        assert str(folder) in line and line.endswith("fix or replace its weights"), line


def test_config_whose_eos_is_not_a_token_is_a_broken_checkpoint(base_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(base_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["eos_token_id"] = 10**30
    (folder / "config.json").write_text(json.dumps(config))
    line = assert_one_error_line(run_quick("generate", "-m", folder, "-n", "2", "hi"), code=3)
    assert "eos_token_id" in line


def test_debug_shows_the_traceback_of_a_usage_error_too(tmp_path):
    r = run("generate", "-m", tmp_path / "missing", "hi", env={"GPT2CLI_DEBUG": "1"})
    assert r.code == 2 and "Traceback" in r.err and "ModelNotFoundError" in r.err

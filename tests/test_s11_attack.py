"""Session 11's second attack round: hostile model folders, inputs and environments that got past
session 10's fixes, each pinned by the defect it found."""

from __future__ import annotations

import json

import pytest

from gpt2cli.errors import CheckpointError
from gpt2cli.store import config as store_config
from tests.support import models as modelfactory
from tests.support.cli import assert_one_error_line, run


def _model(tmp_path, **config):
    folder = modelfactory.write_model(tmp_path / "m", seed=1)
    d = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**d, **config}))
    return folder


def test_an_untied_output_layer_is_refused_not_silently_replaced_by_the_embeddings(tmp_path):
    # tie_word_embeddings=false: the logits come from lm_head.weight, which gpt2cli never reads; running
    # the model with wte instead would print another model's text with no word of it.
    folder = _model(tmp_path, tie_word_embeddings=False)
    line = assert_one_error_line(run("generate", "-m", folder, "-n", "2", "hi"), 3)
    assert "tie_word_embeddings" in line and "config.json" in line


def test_a_tied_output_layer_said_in_so_many_words_still_runs(tmp_path):
    assert run("generate", "-m", _model(tmp_path, tie_word_embeddings=True), "-n", "2", "hi").returncode == 0


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_scale_attn_weights_not_a_boolean_is_named_as_such_not_called_false(value):
    with pytest.raises(CheckpointError) as info:
        store_config.from_dict({"scale_attn_weights": value})
    assert "false" not in str(info.value) and "true" in str(info.value)


@pytest.mark.parametrize("kind, says", [("file", "a file is there"), ("loop", "symbolic links"), ("dangling", "symlink to nothing")])
def test_a_weights_dir_that_cannot_be_a_folder_says_why_not_file_exists(tmp_path, kind, says):
    weights = tmp_path / "weights"
    if kind == "file":
        weights.write_text("mine")
    elif kind == "loop":
        (tmp_path / "other").symlink_to(weights)
        weights.symlink_to(tmp_path / "other")
    else:
        weights.symlink_to(tmp_path / "nowhere")
    r = run("download", "gpt2", "--weights-dir", weights, env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": None})
    line = assert_one_error_line(r, 4)
    assert says in line and "File exists" not in line and str(weights) in line
    assert kind != "file" or weights.read_text() == "mine"

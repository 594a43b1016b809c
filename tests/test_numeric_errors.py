"""Models whose numbers break: logits so large that perplexity overflows, and weights holding NaN.

Huge but finite logits are a model's right: every command finishes, a perplexity beyond float
range is inf (null in JSON). NaN weights are a broken checkpoint: exit 3, naming the folder, with
the remedy that fits it (re-download a downloaded model, else fix or replace its weights).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gpt2cli.store.layout import MARKER
from tests.support import models
from tests.support.cli import assert_one_error_line, run_in_process


def _edit_weights(folder, edit) -> None:
    path = folder / "model.safetensors"
    tensors = dict(load_file(str(path)))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def huge_logits(tmp_path_factory):
    """Logits around 1e12: finite, but a mean log-probability of -1e12 has no float exp."""
    folder = models.write_model(tmp_path_factory.mktemp("num") / "huge", n_layer=1, seed=5)

    def scale(t):
        t["ln_f.weight"] = t["ln_f.weight"] * np.float32(1e12)
        t["ln_f.bias"] = t["ln_f.bias"] * np.float32(1e12)

    _edit_weights(folder, scale)
    return folder


def test_score_of_huge_logits_is_an_infinite_perplexity(huge_logits):
    r, _ = run_in_process(["score", "-m", huge_logits, "--json", "the cat sat on the mat"])
    assert r.code == 0, r.err
    record = json.loads(r.out)
    assert record["perplexity"] is None  # JSON has no inf
    assert record["total_logprob"] < -1e6
    r, _ = run_in_process(["score", "-m", huge_logits, "the cat sat on the mat"])
    assert r.code == 0, r.err
    assert "perplexity inf" in r.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "-n", "5", "--seed", "1", "--json"],
        ["generate", "-n", "5", "-N", "3", "--seed", "1"],
        ["generate", "-n", "5", "-t", "0"],
        ["beam", "-n", "5", "-b", "3", "--json"],
        ["beam", "-n", "5", "-b", "3", "--length-penalty", "-100", "--json"],
    ],
)
def test_generate_and_beam_finish_on_huge_logits(huge_logits, args):
    r, _ = run_in_process([*args, "-m", huge_logits, "the cat"])
    assert r.code == 0, r.err
    assert "Traceback" not in r.err


@pytest.fixture
def nan_weights(tmp_path):
    folder = models.write_model(tmp_path / "nan", n_layer=1, seed=6)

    def poison(t):
        t["h.0.mlp.c_proj.bias"] = np.full_like(t["h.0.mlp.c_proj.bias"], np.nan)

    _edit_weights(folder, poison)
    return folder


COMMANDS = [["generate", "-n", "3"], ["generate", "-n", "3", "-N", "2", "--json"], ["beam", "-n", "3", "--json"], ["score"]]


@pytest.mark.parametrize("args", COMMANDS)
def test_nan_weights_of_a_folder_name_it_and_say_fix_or_replace(nan_weights, args):
    r, _ = run_in_process([*args, "-m", nan_weights, "the cat"])
    line = assert_one_error_line(r, 3)
    assert str(nan_weights) in line, line
    assert "NaN or infinite" in line and line.endswith("fix or replace its weights"), line


@pytest.mark.parametrize("args", COMMANDS)
def test_nan_weights_of_a_downloaded_model_say_re_download(nan_weights, args):
    (nan_weights / MARKER).write_text("{}", encoding="utf-8")
    r, _ = run_in_process([*args, "-m", nan_weights, "the cat"])
    line = assert_one_error_line(r, 3)
    assert str(nan_weights) in line and "re-download the model" in line, line

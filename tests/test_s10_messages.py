"""Messages a new user reads: every error says what is wrong and what to do ("...; <remedy>"), values
from JSON records are shown as JSON, and output options act alike in text and JSON form."""

from __future__ import annotations

import pytest

from gpt2cli.errors import CheckpointError
from tests.support.cli import assert_one_error_line, run


def _remedy(line: str) -> str:
    """What the line says to do: the part after its first "; " (empty when it says nothing)."""
    return line.partition("; ")[2]


# --- 1. every error has a remedy ------------------------------------------------------------------


def test_num_return_above_beams_says_to_lower_it_or_raise_beams(tiny_model):
    line = assert_one_error_line(run("beam", "-m", tiny_model, "--num-return", "5", "-b", "4", "hi"))
    assert line == (
        "gpt2cli: error: --num-return must be between 1 and --beams (4), got 5; lower --num-return or raise --beams"
    ), line


@pytest.mark.parametrize("extra", [[], ["--stride", "4"]], ids=["whole", "strided"])
def test_scoring_an_empty_text_says_to_give_one(tiny_model, extra):
    line = assert_one_error_line(run("score", "-m", tiny_model, *extra, ""))
    assert line.startswith("gpt2cli: error: nothing to score: the text is empty; "), line
    assert "give a text" in _remedy(line), line


def test_rm_of_a_model_not_downloaded_says_how_to_see_what_is(tmp_path):
    line = assert_one_error_line(run("rm", "gpt2", "-y", "--weights-dir", tmp_path / "empty"))
    assert "is not downloaded" in line and "`gpt2cli models`" in _remedy(line), line


def test_a_missing_config_json_says_what_to_do(tmp_path):
    from gpt2cli.store.config import read_config

    with pytest.raises(CheckpointError) as info:
        read_config(tmp_path / "config.json")
    message = str(info.value)
    assert "config.json is missing" in message and "pass --model another model folder" in _remedy(message), message


def test_a_hub_repo_of_another_architecture_says_to_pick_a_gpt2_one(fake_hub, sources, weights):
    from gpt2cli.store import resolve

    fake_hub.add_repo("someone/llama", sources.llama)
    with pytest.raises(CheckpointError) as info:
        resolve.resolve_model("someone/llama", weights_dir=weights)
    message = str(info.value)
    assert "'llama' model; gpt2cli runs GPT-2" in message and "pick a GPT-2 repo" in message, message

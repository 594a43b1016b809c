"""Messages a new user reads: every error says what is wrong and what to do ("...; <remedy>"), values
from JSON records are shown as JSON, and output options act alike in text and JSON form."""

from __future__ import annotations

import json

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


# --- 2. a record's values are shown as the JSON the user wrote ----------------------------------


def test_batch_record_type_errors_show_the_json_the_user_wrote(tiny_model):
    """An id of true or null read "got True" / "got None", and a setting of the wrong type named a
    Python type ("(str)"): the records are JSON, so their errors show JSON."""
    records = [
        '{"id": true, "prompt": "a"}', '{"id": null, "prompt": "a"}', '{"id": [1, 2], "prompt": "a"}',
        '{"id": "max", "prompt": "a", "max_tokens": "5"}', '{"id": "eos", "prompt": "a", "ignore_eos": 1}',
        '{"id": "temp", "prompt": "a", "temperature": false}', '{"id": "stop", "prompt": "a", "stop": ["x", null]}',
    ]  # fmt: skip
    r = run("batch", "-", "-m", tiny_model, "-n", "2", stdin="\n".join(records) + "\n")
    assert r.code == 6, r.err
    errors = {json.dumps(line["id"]): line["error"] for line in map(json.loads, r.stdout.splitlines())}
    assert errors == {
        "1": "line 1: id must be a string or an integer, got true",
        "2": "line 2: id must be a string or an integer, got null",
        "3": "line 3: id must be a string or an integer, got [1, 2]",
        '"max"': "setting 'max_tokens' must be an integer, got \"5\"",
        '"eos"': "setting 'ignore_eos' must be true or false, got 1",
        '"temp"': "setting 'temperature' must be a number, got false",
        '"stop"': "setting 'stop' must be a string or a list of strings, got [\"x\", null]",
    }, errors


# --- 3. --echo with several samples --------------------------------------------------------------


@pytest.mark.parametrize("stream", [[], ["--no-stream"]], ids=["streamed", "no-stream"])
def test_echo_prints_the_prompt_before_every_sample_as_json_gives_each_its_prompt(tiny_model, stream):
    """-N 2 --echo printed the prompt before sample 1 only, while --json --echo gives every sample its
    prompt: sample 2's text read as if it continued sample 1."""
    args = ("generate", "-m", tiny_model, "-N", "2", "-n", "4", "--seed", "1", "--echo", *stream, "hello")
    objs = [json.loads(line) for line in run(*args, "--json").stdout.splitlines()]
    assert [o["prompt"] for o in objs] == ["hello", "hello"]
    plain = run(*args).stdout
    assert plain == "hello" + objs[0]["text"] + "\n\n--- sample 2 of 2 ---\n" + "hello" + objs[1]["text"], plain


# --- 4. an empty stop string in a record -----------------------------------------------------------


def test_an_empty_stop_string_in_a_record_is_its_error_line_as_stop_empty_is_a_usage_error(tiny_model):
    """"stop": "" (or "" in a list) was silently dropped, while --stop '' is refused: the record
    gets an error line, the others run, exit 6."""
    cli = run("generate", "-m", tiny_model, "-n", "2", "--stop", "", "hi")
    assert "must not be empty (it would stop before the first character)" in assert_one_error_line(cli)
    records = [
        '{"id": "empty", "prompt": "a", "stop": ""}', '{"id": "in-list", "prompt": "a", "stop": ["x", ""]}',
        '{"id": "none", "prompt": "a", "stop": []}', '{"id": "fine", "prompt": "a", "stop": "x"}',
    ]  # fmt: skip
    r = run("batch", "-", "-m", tiny_model, "-n", "2", stdin="\n".join(records) + "\n")
    assert r.code == 6 and "2 of 4 records failed" in r.err, r.err
    lines = {line["id"]: line for line in map(json.loads, r.stdout.splitlines())}
    wording = "setting 'stop' must not be empty (it would stop before the first character), got "
    assert lines["empty"] == {"id": "empty", "error": wording + '""'}
    assert lines["in-list"] == {"id": "in-list", "error": wording + '["x", ""]'}
    assert lines["none"]["completion_tokens"] == lines["fine"]["completion_tokens"] == 2, lines

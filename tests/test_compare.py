"""`gpt2cli compare`: strategy SPECs, the repetition and likelihood metrics (against a hand count), rows
identical to the single decodings they stand for, and the table / piped / --json outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpt2cli.decoding.strategies import DEFAULT_SET, STRATEGIES, Strategy, distinct_n, parse, rep_n
from gpt2cli.errors import InvalidValue, OptionError
from gpt2cli.session import Session
from tests.support import models as modelfactory
from tests.support.cli import assert_one_error_line, run, run_in_terminal


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return modelfactory.write_model(tmp_path_factory.mktemp("compare") / "m", seed=41)


NO_GROUPS = ["greedy", "beam:beams=3,no_repeat_ngram=2", "top-p:p=0.9", "contrastive:alpha=0.6,k=3", "greedy:repetition_penalty=1.3"]


def test_metrics_match_a_hand_count():
    tokens = [5, 6, 5, 6, 5, 6, 7, 8]
    # 2-grams: 56 65 56 65 56 67 78 -> 7 in all, 4 distinct (56, 65, 67, 78)
    assert rep_n(tokens, 2) == pytest.approx(1 - 4 / 7)
    assert distinct_n(tokens, 2) == pytest.approx(4 / 7)
    # 4-grams: 5656 6565 5656 6567 5678 -> 5 in all, 4 distinct
    assert rep_n(tokens, 4) == pytest.approx(1 - 4 / 5)
    assert rep_n([1, 2, 3], 4) is None and distinct_n([1], 2) is None
    assert rep_n([9, 9, 9, 9, 9], 2) == pytest.approx(1 - 1 / 4)


def test_specs_parse_with_typed_settings_and_defaults():
    s = parse("top-p:p=0.8,temperature=0.7")
    assert s == Strategy("top-p", (("p", 0.8), ("temperature", 0.7)))
    assert s.settings["k"] == 0 and s.label == "p=0.8,temperature=0.7"
    assert parse("beam:beams=3,early_stopping=True").settings["early_stopping"] == "true"
    assert parse("contrastive").settings == {"repetition_penalty": 1.0, "no_repeat_ngram": 0, "alpha": 0.6, "k": 4}
    assert [parse(spec).name for spec in DEFAULT_SET] == [
        "greedy", "beam", "top-k", "top-p", "typical", "min-p", "contrastive", "diverse-beam", "greedy",
    ]  # fmt: skip
    assert set(STRATEGIES) >= {"greedy", "beam", "diverse-beam", "sample", "top-k", "top-p", "typical", "min-p", "contrastive"}


@pytest.mark.parametrize("spec", ["nucleus", "top-p:q=1", "top-p:p", "beam:beams=two", "top-k:k=1.5"])
def test_bad_specs_name_the_strategy_option(spec):
    with pytest.raises(InvalidValue, match="strategy"):
        parse(spec)


@pytest.mark.parametrize(
    "spec", ["top-p:p=2", "beam:beams=0", "contrastive:alpha=3", "greedy:repetition_penalty=0", "diverse-beam:groups=3"]
)
def test_out_of_range_settings_are_refused_before_any_model_loads(spec):
    with pytest.raises(OptionError, match="strategy"):
        parse(spec).check()


def test_rows_equal_the_single_decodings_they_stand_for(folder):
    session = Session.open(folder)
    ids = session.prompt_ids("Once upon a time")
    greedy = session.compare(ids, parse("greedy"), 16)
    cli = json.loads(run("generate", "-m", folder, "-t", "0", "-n", "16", "--json", "Once upon a time").out)
    assert greedy.tokens[: len(cli["tokens"])] == cli["tokens"] and greedy.text == cli["text"]
    np.testing.assert_allclose(greedy.logprobs[: len(cli["logprobs"])], cli["logprobs"], atol=1e-5)
    sampled = session.compare(ids, parse("top-k:k=20"), 16, seed=7)
    cli = json.loads(run("generate", "-m", folder, "-k", "20", "--seed", "7", "-n", "16", "--json", "Once upon a time").out)
    assert sampled.text == cli["text"]
    beam = session.compare(ids, parse("beam:beams=3"), 16)
    best = json.loads(run("beam", "-m", folder, "-b", "3", "-n", "16", "--json", "Once upon a time").out)["beams"][0]
    assert beam.tokens == best["tokens"] and beam.text == best["text"]


def test_json_has_every_row_with_its_metrics(folder):
    r = run("compare", "-m", folder, "-n", "12", *[a for s in NO_GROUPS for a in ("-s", s)], "--json", "Hello there")
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    assert obj["prompt_tokens"] > 0 and [row["name"] for row in obj["rows"]] == [s.split(":")[0] for s in NO_GROUPS]
    for row in obj["rows"]:
        cont = row["tokens"][:-1] if row["finish_reason"] == "eos" else row["tokens"]
        assert row["n_tokens"] == len(row["tokens"]) == len(row["logprobs"]) <= 12
        assert row["mean_logprob"] == pytest.approx(math.fsum(row["logprobs"]) / len(row["logprobs"]))
        assert row["rep_2"] == (None if len(cont) < 2 else pytest.approx(rep_n(cont, 2)))
        assert row["distinct_2"] == (None if len(cont) < 2 else pytest.approx(distinct_n(cont, 2)))
        assert row["finish_reason"] in ("eos", "length")
    again = run("compare", "-m", folder, "-n", "12", *[a for s in NO_GROUPS for a in ("-s", s)], "--json", "Hello there")
    assert again.out == r.out  # sampled rows take the fixed default seed: reproducible


def test_the_default_set_runs_every_family(folder):
    r = run("compare", "-m", folder, "-n", "6", "--json", "Hello")
    assert r.code == 0, r.err
    assert [row["name"] for row in json.loads(r.out)["rows"]] == [spec.split(":")[0] for spec in DEFAULT_SET]


def test_piped_output_is_each_text_under_its_heading(folder):
    r = run("compare", "-m", folder, "-n", "8", "-s", "greedy", "-s", "top-p:p=0.9", "Hello")
    assert r.code == 0, r.err
    lines = r.stdout.split("\n")
    assert lines[0] == "--- greedy ---" and "--- top-p p=0.9 ---" in lines


def test_terminal_table_has_the_prompt_once_and_a_row_per_decoding(folder):
    screen, code = run_in_terminal("compare", "-m", folder, "-n", "8", "-s", "greedy", "-s", "contrastive", "--width", "100", "Hello")
    assert code == 0, screen
    assert screen.count("prompt (") == 1 and "rep-2" in screen and "dist-2" in screen
    body = [line for line in screen.splitlines() if line.startswith(("greedy", "contrastive"))]
    assert len(body) == 2 and all(len(line) <= 100 for line in screen.splitlines())


def test_list_needs_no_model():
    r = run("compare", "--list", "-m", "/nonexistent/model")
    assert r.code == 0 and "contrastive" in r.stdout and "default set" in r.stdout


@pytest.mark.parametrize("args", [["-s", "nucleus"], ["-s", "top-p:p=5"], ["-n", "0"], ["--width", "3"]])
def test_bad_values_are_one_line_naming_the_option(folder, args):
    line = assert_one_error_line(run("compare", "-m", folder, *args, "Hi"))
    assert any(flag in line for flag in ("--strategy", "--max-tokens", "--width"))

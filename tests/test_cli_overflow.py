"""Context overflow: prompts longer than the model's context and generation past it, under
--on-overflow slide (the default), truncate and error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import models as modelfactory
from tests.support.cli import REMEDY, Run, assert_one_error_line, run


@pytest.fixture(scope="module")
def ctx64_model(tmp_path_factory) -> Path:
    """A context of 64 tokens, so prompts and generations overflow it cheaply."""
    return modelfactory.write_model(tmp_path_factory.mktemp("overflow") / "ctx64", n_positions=64, seed=3)


LONG_PROMPT = "abcdefghij" * 20  # 200 tokens with the tiny BPE; the test model's context is 64


def _overflow_notes(r: Run) -> list[str]:
    return [line for line in r.err_lines if "context" in line]


def test_slide_generates_past_the_context_and_says_so_once(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "100", "-t", "0", "--ignore-eos", "--json", "hi")
    assert r.code == 0, r.err
    assert r.json["completion_tokens"] == len(r.json["tokens"]) == 100
    assert len(r.err_lines) == 1 and len(_overflow_notes(r)) == 1, r.err
    assert "sliding" in r.err


def test_max_tokens_several_times_the_context_are_all_generated(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", str(5 * 64), "-N", "2", "--seed", "1", "--ignore-eos", "--json", "hi")
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [row["completion_tokens"] for row in rows] == [320, 320]
    assert [len(row["tokens"]) for row in rows] == [320, 320]
    assert len(_overflow_notes(r)) == 1, r.err


def test_slide_with_a_prompt_longer_than_the_context_keeps_going(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "100", "-t", "0", "--ignore-eos", "--json", LONG_PROMPT)
    assert r.code == 0, r.err
    assert r.json["prompt_tokens"] == 63  # the prompt's tokens the model read: the last n_ctx - 1
    assert r.json["completion_tokens"] == 100
    assert r.err_lines and all(line.startswith("gpt2cli: ") and "error" not in line for line in r.err_lines)
    # the model saw the prompt's last 63 tokens (one character each with the tiny BPE)
    window = run("generate", "-m", ctx64_model, "-n", "1", "-t", "0", "--json", "--on-overflow", "error", LONG_PROMPT[-63:])
    assert window.code == 0, window.err
    assert r.json["tokens"][0] == window.json["tokens"][0]


def test_slide_with_a_prompt_longer_than_the_context_says_so_once(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "100", "--ignore-eos", "--json", LONG_PROMPT)
    assert r.code == 0, r.err
    assert len(_overflow_notes(r)) == 1, r.err


def test_truncate_keeps_the_end_of_the_prompt_and_warns_once(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "10", "-t", "0", "--ignore-eos", "--json", "--on-overflow", "truncate", LONG_PROMPT)
    assert r.code == 0, r.err
    assert r.json["completion_tokens"] == 10
    assert len(r.err_lines) == 1, r.err
    assert "truncated" in r.err and "last 54 of 200" in r.err
    # exactly what the model does given only those 54 tokens (one character each with the tiny BPE)
    kept = run("generate", "-m", ctx64_model, "-n", "10", "-t", "0", "--ignore-eos", "--json", "--on-overflow", "error", LONG_PROMPT[-54:])
    assert kept.code == 0, kept.err
    assert r.json["tokens"] == kept.json["tokens"]


def test_truncate_leaves_room_for_the_prompt_or_is_a_usage_error(ctx64_model):
    line = assert_one_error_line(run("generate", "-m", ctx64_model, "-n", "64", "--on-overflow", "truncate", "hi"))
    assert "--max-tokens 64" in line and "64" in line and REMEDY.search(line)


def test_overflow_error_exits_2_with_the_token_counts(ctx64_model):
    line = assert_one_error_line(run("generate", "-m", ctx64_model, "-n", "10", "--on-overflow", "error", LONG_PROMPT))
    assert "200 tokens" in line and "(10)" in line and "64 tokens" in line
    assert REMEDY.search(line)


def test_overflow_error_with_echo_prints_nothing(ctx64_model):
    assert_one_error_line(run("generate", "-m", ctx64_model, "-n", "10", "--echo", "--on-overflow", "error", LONG_PROMPT))


def test_score_of_text_longer_than_the_context_is_a_usage_error(ctx64_model):
    line = assert_one_error_line(run("score", "-m", ctx64_model, LONG_PROMPT))
    assert "200 tokens" in line and "at most 64" in line

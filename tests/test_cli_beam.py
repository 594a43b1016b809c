"""The `gpt2cli beam` command: the best beam's text when piped, every beam and the comparisons as
JSON, one table row per decoding on a terminal, and how that table is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2cli.cli.render import DecodingRow, display_width, render_beam_table, wrap_text
from gpt2cli.decoding.beam import beam_search
from gpt2cli.session import load_model
from tests.support.cli import run, run_in_terminal, run_quick
from tests.support.reference import greedy

PROMPT = "Once upon a time"


def expected_best_text(folder: Path, prompt: str, **kwargs) -> tuple[list[int], str]:
    from gpt2cli.store.tokenizer import Tokenizer

    model, tokenizer = load_model(folder), Tokenizer.from_folder(folder)
    best = beam_search(model, tokenizer.encode(prompt), **kwargs)[0]
    eos = model.config.eos_token_id
    return best.tokens, tokenizer.decode([t for t in best.tokens if t != eos])


def test_cli_piped_output_is_the_best_beam_text_only(beam_folders):
    folder = beam_folders["eos-biased"]
    tokens, text = expected_best_text(folder, PROMPT, num_beams=3, max_new_tokens=15, length_penalty=2.0)
    result = run("beam", "-m", folder, "-b", 3, "-n", 15, "--length-penalty", 2, PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == text
    from_stdin = run("beam", "-m", folder, "-b", 3, "-n", 15, "--length-penalty", 2, stdin=PROMPT + "\n")
    assert from_stdin.stdout == result.stdout


def test_cli_json_has_every_beam_best_first_and_the_comparisons(beam_folders):
    folder = beam_folders["eos-biased"]
    result = run("beam", "-m", folder, "-b", 4, "-r", 3, "-n", 12, "--early-stopping", "never", "--json", PROMPT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert set(doc) == {"prompt_tokens", "beams", "greedy", "sample"}
    model = load_model(folder)
    from gpt2cli.store.tokenizer import Tokenizer

    prompt_ids = Tokenizer.from_folder(folder).encode(PROMPT)
    assert doc["prompt_tokens"] == len(prompt_ids)
    hyps = beam_search(model, prompt_ids, num_beams=4, num_return=3, max_new_tokens=12, early_stopping="never")
    assert [b["tokens"] for b in doc["beams"]] == [h.tokens for h in hyps]
    assert [b["score"] for b in doc["beams"]] == pytest.approx([h.score for h in hyps], abs=1e-6)
    for entry in doc["beams"] + [doc["greedy"], doc["sample"]]:
        assert set(entry) == {"text", "tokens", "score", "logprob", "finish_reason"}
        assert isinstance(entry["text"], str) and entry["tokens"]
        assert entry["finish_reason"] in ("eos", "length")
        assert entry["score"] == pytest.approx(entry["logprob"] / len(entry["tokens"]), rel=1e-5)
    assert doc["greedy"]["tokens"] == greedy(model, prompt_ids, 12)
    again = json.loads(run("beam", "-m", folder, "-b", 4, "-n", 12, "--json", "--no-compare", PROMPT).stdout)
    assert set(again) == {"prompt_tokens", "beams"} and len(again["beams"]) == 4


def test_cli_table_on_a_terminal_fits_the_width_with_one_row_per_decoding(beam_folders):
    folder = beam_folders["plain"]
    out, code = run_in_terminal("beam", "-m", folder, "-b", 3, "-n", 30, PROMPT, env={"COLUMNS": "60"})
    assert code == 0, out
    lines = out.rstrip("\n").split("\n")
    assert lines[0].startswith("prompt (") and PROMPT in lines[0]
    assert out.count(PROMPT) == 1
    assert all(display_width(line) <= 60 for line in lines), out
    labels = [line.split()[0] + (" " + line.split()[1] if line.startswith("beam") else "") for line in lines
              if line[:1].isalpha() and not line.startswith(("prompt", "decoding"))]
    assert labels == ["greedy", "beam 1", "beam 2", "beam 3", "sample"]
    assert any(line.startswith(" ") and line.strip() for line in lines[3:]), "30 tokens should wrap at 60 columns"
    narrow, code = run_in_terminal("beam", "-m", folder, "-b", 2, "-n", 30, "--width", 40, "--no-compare", PROMPT)
    assert code == 0 and all(display_width(line) <= 40 for line in narrow.split("\n")), narrow
    assert "greedy" not in narrow and "beam 2" in narrow


@pytest.mark.parametrize(
    "args,option",
    [
        (["-b", "0"], "--beams"),
        (["-b", "2", "-r", "3"], "--num-return"),
        (["--early-stopping", "sometimes"], "--early-stopping"),
        (["--no-repeat-ngram", "-1"], "--no-repeat-ngram"),
        (["-n", "0"], "--max-tokens"),
        (["-n", "500"], "--max-tokens"),  # past the context of 128: beam search does not slide
        (["--width", "5"], "--width"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(beam_folders, args, option):
    result = run_quick("beam", "-m", beam_folders["plain"], *args, PROMPT)
    assert result.returncode == 2
    assert result.out == b""
    message = result.err
    assert message.count("\n") == 1 and option in message, message


def test_render_beam_table_wraps_text_and_neutralises_control_characters():
    rows = [
        DecodingRow("greedy", -1.5, -1.5, "length", "one two three four five six seven eight nine ten"),
        DecodingRow("beam 1", -0.25, -0.5, "eos", "line one\nline two\x1b[31mred\tdone"),
        DecodingRow("sample", -12.0, -3.0, "eos", "寿司寿司寿司寿司寿司寿司寿司寿司寿司"),
    ]
    for width in (60, 44):  # text beside the numbers, then (too narrow for that) under them
        table = render_beam_table("the prompt", 2, rows, width=width)
        lines = table.rstrip("\n").split("\n")
        assert lines[0] == "prompt (2 tokens): the prompt"
        assert all(display_width(line) <= width for line in lines), table
        assert all(line == line.rstrip() for line in lines), table
        assert "\x1b" not in table and "\\x1b[31mred" in table and "\t" not in table
        assert [line.split()[0] for line in lines if line.startswith(("greedy", "beam", "sample"))] == [
            "greedy", "beam", "sample",
        ]
        assert "-0.250" in table and "-0.500" in table
        assert " ".join(" ".join(lines).split()).count("one two three four five six seven eight nine ten") == 1
    assert "<|endoftext|>" in render_beam_table("", 1, rows, width=80).split("\n")[0]
    assert wrap_text("a " * 10, 5) == ["a a a", "a a a", "a a a", "a"]
    assert wrap_text("abcdefgh", 3) == ["abc", "def", "gh"]
    assert wrap_text("x\n\ny", 10) == ["x", "", "y"]

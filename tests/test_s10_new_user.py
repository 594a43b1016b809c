"""What a new user ran into following the README: each test is one defect found that way, fixed."""

from __future__ import annotations

import json
import re
import subprocess

from tests.support.cli import assert_one_error_line, run, run_in_terminal, start


def test_batch_record_with_a_negative_seed_gets_an_error_line_not_an_internal_error(tiny_model):
    """README: a value out of range gets the record an error line and the run goes on (exit 6);
    a negative seed crashed the whole run with exit 1 (numpy refuses negative seeds)."""
    for batch_size in ("1", "4"):
        r = run(
            "batch", "-", "-m", tiny_model, "-n", "2", "-b", batch_size,
            stdin='{"id": "neg", "prompt": "a", "seed": -1}\n{"id": "ok", "prompt": "b"}\n',
        )  # fmt: skip
        assert r.code == 6, r.err
        lines = {line["id"]: line for line in map(json.loads, r.stdout.splitlines())}
        assert lines["neg"] == {"id": "neg", "error": "seed must be an integer >= 0, got -1"}
        assert lines["ok"]["completion_tokens"] == 2
        assert "internal error" not in r.err and "Traceback" not in r.err


def test_compare_max_tokens_beyond_the_context_is_not_told_to_slide(tiny_model):
    """compare never slides (its slide is truncate): an -n that leaves no room for the prompt was told
    "or use --on-overflow slide", which gave the same error again."""
    for extra in ([], ["--on-overflow", "slide"], ["--on-overflow", "truncate"]):
        r = run("compare", "-m", tiny_model, "-s", "greedy", "-n", "500", *extra, "hi")
        line = assert_one_error_line(r)
        assert "--on-overflow" not in line, line
        assert line.startswith("gpt2cli: error: --max-tokens 500 leaves no room for the prompt"), line
        assert "lower --max-tokens below 128" in line, line


def test_compare_help_does_not_promise_a_slide_it_never_does(tiny_model):
    """compare's --on-overflow help said "slide (keep going on the most recent window)" [default: slide],
    but compare cuts the prompt instead (README); the help now says what it does."""
    r = run("compare", "--help")
    assert r.code == 0, r.err
    text = " ".join(r.stdout.split())
    option = text[text.index("--on-overflow") : text.index("--revision")]
    assert "keep going" not in option and "[default: truncate]" in option, option


def test_text_longer_than_the_context_is_pointed_to_stride(tiny_model):
    """score has --stride for exactly this, but the error only said "split the text"."""
    long_text = "a " * 300
    line = assert_one_error_line(run("score", "-m", tiny_model, long_text))
    assert "--stride 64" in line, line
    assert run("score", "-m", tiny_model, "--stride", "64", long_text).code == 0
    r = run("batch", "--score", "-", "-m", tiny_model, stdin=json.dumps({"id": "long", "text": long_text}) + "\n")
    assert r.code == 6, r.err
    assert "--stride 64" in r.json["error"], r.json


def test_batch_lines_progress_counts_blank_lines_as_the_records_they_are(tiny_model, tmp_path):
    """With --lines every line is a record (a blank one: an empty prompt), but the progress line
    counted only non-blank lines and ended at "-1 left"."""
    source = tmp_path / "prompts.txt"
    source.write_text("first\n\nthird\n", encoding="utf-8")
    shown, code = run_in_terminal(
        "batch", "--lines", source, "-o", tmp_path / "out.jsonl", "-m", tiny_model, "-t", "0", "-n", "2", columns=120
    )
    assert code == 0, shown
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
    lefts = [int(n) for n in re.findall(r"(-?\d+) left", shown)]
    assert lefts and lefts[-1] == 0 and min(lefts) >= 0, shown


def test_a_path_that_cannot_be_looked_at_is_a_usage_error_not_a_bug(tiny_model, tmp_path):
    """Path.is_dir() raises for what it cannot look at (EACCES for a folder of another user, or a
    name too long, which any user can reproduce): -m such a path, and `models`/`rm` with such a
    weights folder, exited 1 ("a bug") with a bare "[Errno 36] ..." line."""
    unreadable = tmp_path / ("a" * 300)
    r = run("generate", "-m", unreadable / "model", "-n", "2", "hi")
    line = assert_one_error_line(r)
    assert "cannot open model folder" in line and "File name too long" in line, line
    r = run("models", "--weights-dir", unreadable)
    assert r.code == 0 and r.err == "", r.err
    assert r.stdout.splitlines()[1].split()[:2] == ["gpt2", "no"], r.stdout
    line = assert_one_error_line(run("rm", "gpt2", "-y", "--weights-dir", unreadable))
    assert "is not downloaded" in line, line
    assert run("generate", "-m", tiny_model, "-n", "2", "--weights-dir", unreadable, "hi").code == 0


def test_batch_output_dash_is_stdout_not_a_file_named_dash(tiny_model, tmp_path):
    """INPUT takes - for stdin; -o - wrote the results into a file named "-" in the current folder,
    where a user expecting stdout (curl -o -, wget -O -) would never look."""
    r = run("batch", "-", "-o", "-", "-m", tiny_model, "-n", "2", stdin='{"id": "x", "prompt": "hi"}\n', cwd=tmp_path)
    assert r.code == 0, r.err
    assert r.json["id"] == "x" and r.json["completion_tokens"] == 2
    assert list(tmp_path.iterdir()) == []


def test_max_tokens_beyond_any_array_still_streams(tiny_model):
    """README: with slide, -n N --ignore-eos gives exactly N tokens, generation going on as long as
    asked; a huge -n (a script's "until I stop reading") was an internal error (exit 1) or "out of
    memory", as the whole sequence's array was reserved up front."""
    for n in ("99999999999999999999", "1000000000000"):
        proc = start("generate", "-m", tiny_model, "-n", n, "--ignore-eos", "-t", "0", "hi",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        got = proc.stdout.read(2000)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141, err
        assert len(got) == 2000 and "error" not in err, err

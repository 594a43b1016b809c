"""`gpt2cli batch`: each record's result equals the single command's, bad records get error lines,
and an interrupted run (a torn line, kill -9, Ctrl-C) resumes to exactly the uninterrupted output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time


from gpt2cli.batch.records import derived_seed
import pytest

from tests.support.cli import command, kill_9_once_written, run, user_env
from tests.support.records import assert_same_lines, assert_same_record

RECORDS = [
    {"id": "greedy", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 12},
    {"id": 7, "prompt": "Hello there", "seed": 3, "top_k": 5},
    {"prompt": "The weather", "top_p": 0.8, "max_tokens": 30},  # id 3, seed derived from --seed and the id
    {"id": "stop", "prompt": "and then", "temperature": 0, "stop": ["e"], "max_tokens": 40},
    {"id": "long", "prompt": "word " * 60, "temperature": 0, "max_tokens": 4, "ignore_eos": True},
    {"id": "penalized", "prompt": "the the the", "temperature": 0, "repetition_penalty": 1.5, "no_repeat_ngram": 2},
    {"id": "contrastive", "prompt": "Once", "penalty_alpha": 0.6, "top_k": 3, "max_tokens": 10},
]


def write_records(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def results(text: str) -> dict:
    """id (as JSON spells it) -> the result line, for comparisons that ignore order."""
    lines = [line for line in text.splitlines() if line]
    by_id = {json.dumps(json.loads(line)["id"]): line for line in lines}
    assert len(by_id) == len(lines), "an id appears twice"
    return by_id


def generate_json(model, record: dict, seed: int) -> dict:
    args = ["generate", "-m", model, "--json", "-n", str(record.get("max_tokens", 20))]
    if "temperature" in record:
        args += ["-t", str(record["temperature"])]
    for key, flag in (("top_k", "-k"), ("top_p", "-p"), ("repetition_penalty", "--repetition-penalty"),
                      ("no_repeat_ngram", "--no-repeat-ngram"), ("penalty_alpha", "--penalty-alpha")):  # fmt: skip
        if key in record:
            args += [flag, str(record[key])]
    if "penalty_alpha" not in record:
        args += ["--seed", str(record.get("seed", derived_seed(seed, record.get("id", 3))))]
    for s in record.get("stop", []):
        args += ["--stop", s]
    if record.get("ignore_eos"):
        args.append("--ignore-eos")
    r = run(*args, record["prompt"])
    assert r.code == 0, r.err
    return json.loads(r.out)


@pytest.mark.parametrize("batch_size", ["1", "3", "32"])
def test_each_record_equals_the_single_generate_command(tiny_model, tmp_path, batch_size):
    """Bit for bit with --batch-size 1; decoded together, the same text and tokens, log-probabilities
    to rounding (shared products)."""
    source = tmp_path / "in.jsonl"
    write_records(source, RECORDS)
    r = run("batch", source, "-m", tiny_model, "-n", "20", "--seed", "11", "-b", batch_size)
    assert r.code == 0, r.err
    got = results(r.stdout)
    for record in RECORDS:
        rid = record.get("id", 3)
        line = json.loads(got[json.dumps(rid)])
        assert line.pop("id") == rid
        assert_same_record(line, generate_json(tiny_model, record, seed=11), exact=batch_size == "1", label=rid)


def test_bad_records_get_error_lines_and_the_run_goes_on(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"prompt": "ok", "max_tokens": 2}\n'
        "not json\n"
        '{"id": "no-prompt"}\n'
        '{"id": "unknown", "prompt": "x", "tempreature": 1}\n'
        '{"id": "type", "prompt": "x", "max_tokens": "ten"}\n'
        '{"id": "range", "prompt": "x", "top_p": 7}\n'
        '{"id": "combo", "prompt": "x", "penalty_alpha": 0.5, "temperature": 0.7}\n'
        '{"id": [1], "prompt": "x"}\n'
        "\n"
        '{"id": "last", "prompt": "fine", "max_tokens": 2}\n',
        encoding="utf-8",
    )  # fmt: skip
    r = run("batch", source, "-m", tiny_model)
    assert r.code == 6 and "Traceback" not in r.err
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    errors = {json.dumps(line["id"]): line["error"] for line in lines if "error" in line}
    assert set(errors) == {"2", '"no-prompt"', '"unknown"', '"type"', '"range"', '"combo"', "8"}
    assert "max_tokens" in errors['"type"'] and "top_p" in errors['"range"'] and "tempreature" in errors['"unknown"']
    assert "penalty_alpha" in errors['"combo"'] and "temperature" in errors['"combo"']
    assert [line["id"] for line in lines if "error" not in line] == [1, "last"]
    assert r.err.count("\n") == 1 and "7 of 9 records failed" in r.err


def test_empty_input_is_an_empty_output(tiny_model, tmp_path):
    r = run("batch", "-", "-m", tiny_model, stdin="")
    assert (r.code, r.out) == (0, b"")


def test_plain_lines_and_scoring(tiny_model, tmp_path):
    r = run("batch", "--lines", "-", "-m", tiny_model, "-t", "0", "-n", "3", stdin="first\nsecond\n")
    assert r.code == 0, r.err
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [1, 2]
    scored = run("batch", "--score", "-", "-m", tiny_model, stdin='{"id": "a", "text": "Hello world"}\n')
    line = json.loads(scored.out)
    single = json.loads(run("score", "-m", tiny_model, "--json", "Hello world").out)
    assert line.pop("id") == "a" and line == single


def uninterrupted(model, source, tmp_path) -> dict:
    whole = tmp_path / "whole.jsonl"
    r = run("batch", source, "-m", model, "-n", "6", "-o", whole)
    assert r.code == 0, r.err
    return results(whole.read_text(encoding="utf-8"))


def test_a_torn_last_line_is_repaired_and_every_id_written_once(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    write_records(source, [{"id": i, "prompt": f"record {i}"} for i in range(12)])
    expected = uninterrupted(tiny_model, source, tmp_path)
    lines = list(expected.values())
    torn = tmp_path / "torn.jsonl"
    torn.write_text("".join(line + "\n" for line in lines[:5]) + lines[5][: len(lines[5]) // 2], encoding="utf-8")
    r = run("batch", source, "-m", tiny_model, "-n", "6", "-o", torn)
    assert r.code == 0, r.err
    assert "5 records already in" in r.err
    assert_same_lines(results(torn.read_text(encoding="utf-8")), expected)


def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_output(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    write_records(source, [{"id": i, "prompt": f"prompt number {i}", "max_tokens": 40} for i in range(60)])
    out = tmp_path / "out.jsonl"
    written = kill_9_once_written(out, "batch", source, "-m", tiny_model, "-n", "6", "-o", out)
    assert 3 <= written < 60
    r = run("batch", source, "-m", tiny_model, "-n", "6", "-o", out)
    assert r.code == 0, r.err
    assert_same_lines(results(out.read_text(encoding="utf-8")), uninterrupted(tiny_model, source, tmp_path))


def test_ctrl_c_stops_at_once_leaving_only_whole_lines(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    write_records(source, [{"id": i, "prompt": f"prompt {i}", "max_tokens": 60, "ignore_eos": True} for i in range(200)])
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen(
        [*command(), "batch", str(source), "-m", str(tiny_model), "-o", str(out)], env=user_env(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 2):
        time.sleep(0.02)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=10) == 130
    assert time.monotonic() - sent < 2.0
    data = out.read_bytes()
    assert data.endswith(b"\n") and all(json.loads(line)["id"] is not None for line in data.splitlines())
    assert b"Traceback" not in child.stderr.read()


def test_an_output_file_that_is_not_a_batch_result_is_refused(tiny_model, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my shopping list\n", encoding="utf-8")
    r = run("batch", "-", "-m", tiny_model, "-o", notes, stdin='{"prompt": "x"}\n')
    assert r.code == 2 and r.err.startswith("gpt2cli: error:") and r.err.count("\n") == 1
    assert notes.read_text(encoding="utf-8") == "my shopping list\n"


def test_ten_thousand_records_through_a_small_model(tiny_model, tmp_path):
    source = tmp_path / "many.txt"
    source.write_text("".join(f"line {i}\n" for i in range(10_000)), encoding="utf-8")
    out = tmp_path / "many.jsonl"
    r = run("batch", "--lines", source, "-m", tiny_model, "-t", "0", "-n", "1", "-o", out, timeout=600)
    assert r.code == 0, r.err
    ids = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert ids == list(range(1, 10_001))
    assert os.path.getsize(out) > 0


def test_a_null_setting_means_the_default_so_a_null_seed_still_gets_the_derived_one(tiny_model, tmp_path):
    records = '{"id": "a", "prompt": "Hello", "seed": null, "temperature": null}\n{"id": "b", "prompt": "Hello"}\n'
    r = run("batch", "-", "-m", tiny_model, "-n", "12", "--seed", "9", stdin=records)
    assert r.code == 0, r.err
    by_id = {line["id"]: line for line in map(json.loads, r.stdout.splitlines())}  # written as they finish
    a, b = by_id["a"], by_id["b"]
    expected = generate_json(tiny_model, {"id": "a", "prompt": "Hello", "max_tokens": 12}, seed=9)
    assert_same_record({k: v for k, v in a.items() if k != "id"}, expected)
    assert b["text"] != a["text"] or b["tokens"] != a["tokens"] or len(a["tokens"]) < 2  # other id, other seed


def test_a_second_run_on_the_same_output_file_is_refused_while_the_first_writes(tiny_model, tmp_path):
    from gpt2cli.batch.records import Output

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"p{i}"}) + "\n" for i in range(3)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    first = Output(out, None)  # a run holding the file (this process, as the other run would)
    try:
        r = run("batch", source, "-m", tiny_model, "-n", "2", "-o", out)
        assert r.code == 2 and r.stdout == "" and r.err.count("\n") == 1, r.err
        assert "another gpt2cli batch is writing" in r.err and "-o another file" in r.err
        assert out.read_bytes() == b""  # nothing written beside the holder's lines
    finally:
        first.close()
    again = run("batch", source, "-m", tiny_model, "-n", "2", "-o", out)  # released: it runs, and resumes as usual
    assert again.code == 0, again.err
    assert sorted(json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()) == [0, 1, 2]

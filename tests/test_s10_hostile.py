"""Hostile batch input and option values found in session 10: each case gets its documented error
line and exit code, and no file of the user's is read without end, cut short, or written into."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from tests.support.cli import assert_one_error_line, run, run_quick

RECORDS = '{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": "yo"}'  # the last line has no newline


def _limit_memory() -> None:  # in the child: a run that reads without end fails fast instead of swapping
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


_ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1"}  # on many cores OpenBLAS's buffers alone would near the limit


# --- batch -o: a file that is not a batch result is never cut short or appended to --------------------


@pytest.mark.parametrize("text", ["my precious notes", "line one\nline two, no newline", "\x00\x01binary"])
def test_batch_refuses_an_output_file_of_the_users_without_cutting_off_its_last_line(tiny_model, tmp_path, text):
    source = tmp_path / "in.jsonl"
    source.write_text(RECORDS, encoding="utf-8")
    mine = tmp_path / "notes.txt"
    mine.write_text(text, encoding="utf-8")
    line = assert_one_error_line(run_quick("batch", source, "-m", tiny_model, "-n", "2", "-o", mine), 2)
    assert "not a batch result" in line and str(mine) in line
    assert mine.read_text(encoding="utf-8") == text


def test_batch_still_cuts_off_a_result_line_torn_at_its_first_bytes(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(RECORDS, encoding="utf-8")
    torn = tmp_path / "out.jsonl"
    torn.write_bytes(b'{"i')
    r = run_quick("batch", source, "-m", tiny_model, "-n", "2", "-o", torn)
    assert r.code == 0, r.err
    assert [json.loads(line)["id"] for line in torn.read_text(encoding="utf-8").splitlines()] == ["a", "b"]


@pytest.mark.parametrize("via_stdin", [False, True], ids=["path", "stdin"])
def test_batch_refuses_output_into_its_own_input_and_leaves_it_whole(tiny_model, tmp_path, via_stdin):
    source = tmp_path / "in.jsonl"
    source.write_text(RECORDS, encoding="utf-8")
    args = ("batch", "-" if via_stdin else source, "-m", tiny_model, "-n", "2", "-o", source)
    with open(source, "rb") as stdin:
        r = _run_with_stdin(args, stdin if via_stdin else None)
    line = assert_one_error_line(r, 2)
    assert "INPUT file itself" in line
    assert source.read_text(encoding="utf-8") == RECORDS


def _run_with_stdin(args, stdin_file):
    """run() with stdin the file itself (so the command can see it is the -o file), or empty."""
    import subprocess

    from tests.support.cli import Run, command, user_env

    p = subprocess.run(
        [*command(), *map(str, args)], stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
        capture_output=True, env=user_env(), timeout=120, check=False,
    )  # fmt: skip
    return Run(p.returncode, p.stdout, p.stderr.decode("utf-8", errors="replace"))


def test_batch_into_dev_full_is_disk_full_not_an_endless_read(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(RECORDS, encoding="utf-8")
    # Reading /dev/full never ends: before the fix this grew until memory ran out.
    args = ("batch", source, "-m", tiny_model, "-n", "2", "-o", "/dev/full")
    r = run(*args, preexec_fn=_limit_memory, env=_ONE_BLAS_THREAD, timeout=60)
    line = assert_one_error_line(r, 5)
    assert "cannot write the output file /dev/full (No space left on device)" in line and "-o" in line


def test_batch_writes_into_a_fifo_without_reading_it(tiny_model, tmp_path):
    import threading

    source = tmp_path / "in.jsonl"
    source.write_text(RECORDS, encoding="utf-8")
    fifo = tmp_path / "results"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(Path(fifo).read_bytes()), daemon=True)
    reader.start()
    r = run("batch", source, "-m", tiny_model, "-n", "2", "-o", fifo, timeout=60)
    reader.join(30)
    assert r.code == 0, r.err
    assert [json.loads(line)["id"] for line in got[0].decode().splitlines()] == ["a", "b"]


# --- values no option check bounds: a --max-tokens beyond any memory ---------------------------------


@pytest.fixture(scope="module")
def eos_model(tmp_path_factory) -> Path:
    """A tiny model that ends its text at once: a run asked for endless tokens still finishes."""
    from tests.support import models

    return models.write_model(tmp_path_factory.mktemp("eos") / "model", eos_bias=50.0, seed=3)


@pytest.mark.parametrize("n", [10**11, 10**30])
@pytest.mark.parametrize("samples", ["1", "2"])
def test_max_tokens_beyond_any_memory_generates_until_eos(eos_model, n, samples):
    # -n sized an array of every token it could reach up front: 10**11 was "out of memory" (exit 1),
    # 10**30 an internal error; a run that slides has no such bound and stops at its eos.
    r = run_quick("generate", "-m", eos_model, "-n", str(n), "-N", samples, "--json", "hi")
    assert r.code == 0, r.err
    assert [json.loads(line)["finish_reason"] for line in r.stdout.splitlines()] == ["eos"] * int(samples)


def test_a_record_asking_endless_tokens_generates_until_eos(eos_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "prompt": "hi", "max_tokens": 2**80}) + "\n", encoding="utf-8")
    r = run_quick("batch", source, "-m", eos_model)
    assert r.code == 0, r.err
    assert json.loads(r.stdout)["finish_reason"] == "eos"


# --- contrastive search's k: as many candidates as the vocabulary has, and named when memory is short -----


def test_contrastive_k_beyond_the_vocabulary_runs_as_the_whole_vocabulary(tiny_model):
    # the memory check counted 10**21 candidate rows (refused, telling to lower --num-samples)
    whole = run_quick("generate", "-m", tiny_model, "--penalty-alpha", "0.5", "-k", "277", "-n", "3", "hi")
    huge = run_quick("generate", "-m", tiny_model, "--penalty-alpha", "0.5", "-k", str(10**21), "-n", "3", "hi")
    assert (huge.code, huge.out, huge.err) == (0, whole.out, whole.err), huge.err


def test_contrastive_search_too_big_for_memory_says_to_lower_top_k(tiny_model, monkeypatch):
    monkeypatch.setattr("gpt2cli.request.available_memory", lambda: 4_000_000)
    r = run_quick("generate", "-m", tiny_model, "--penalty-alpha", "0.5", "-k", "200", "-n", "100", "hi")
    line = assert_one_error_line(r, 2)
    assert line.startswith("gpt2cli: error: --top-k 200 with a ") and "lower --top-k or --max-tokens" in line


# --- a batch record's strings that have no UTF-8 --------------------------------------------------------


@pytest.mark.parametrize("to_file", [True, False], ids=["file", "stdout"])
def test_a_record_id_with_a_lone_surrogate_is_written_escaped_and_resumes(tiny_model, tmp_path, to_file):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "x\\ud800", "prompt": "hi"}\n{"id": 2, "prompt": "yo", "s\\udfff": 1}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ("batch", source, "-m", tiny_model, "-n", "2", *(("-o", out) if to_file else ()))
    r = run_quick(*args)  # writing "x\ud800" as UTF-8 failed: an internal error that ended the run (exit 1)
    assert r.code == 6, r.err
    text = out.read_text(encoding="utf-8") if to_file else r.stdout
    by_id = {line["id"]: line for line in map(json.loads, text.splitlines())}
    assert sorted(by_id, key=str) == [2, "x\ud800"]
    assert by_id["x\ud800"]["completion_tokens"] == 2 and "unknown setting" in by_id[2]["error"]
    if to_file:
        again = run_quick(*args)
        assert again.code == 6 and "2 records already in" in again.err  # record 2 failed, in the first run (README: exit 6)
        assert out.read_text(encoding="utf-8") == text


def test_batch_refuses_to_append_to_a_file_of_records_rather_than_results(tiny_model, tmp_path):
    # each line has an "id", so the records were taken for results done, and results appended to them
    source = tmp_path / "in.jsonl"
    source.write_text(RECORDS + "\n", encoding="utf-8")
    prompts = tmp_path / "other-prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "one"}\n{"id": "z", "prompt": "two"}\n', encoding="utf-8")
    before = prompts.read_bytes()
    line = assert_one_error_line(run_quick("batch", source, "-m", tiny_model, "-n", "2", "-o", prompts), 2)
    assert "not a batch result" in line
    assert prompts.read_bytes() == before


def test_a_byte_order_mark_before_the_first_record_is_not_part_of_it(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + RECORDS.encode())  # as Notepad saves UTF-8
    r = run_quick("batch", source, "-m", tiny_model, "-n", "2")
    assert r.code == 0, r.err  # the first record was an error line: "Unexpected UTF-8 BOM"
    assert sorted(json.loads(line)["id"] for line in r.stdout.splitlines()) == ["a", "b"]


def test_output_file_filling_up_mid_line_keeps_the_earlier_results_and_resumes(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"p{i}"}) + "\n" for i in range(6)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run("batch", source, "-m", tiny_model, "-n", "2", "-b", "1", "-o", out).code == 0
    whole = out.read_text(encoding="utf-8").splitlines()
    kept = "".join(line + "\n" for line in whole[:2])
    out.write_text(kept, encoding="utf-8")
    limit = len(kept.encode()) + 40  # the file may grow by 40 bytes: the next line is cut mid-way

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = run("batch", source, "-m", tiny_model, "-n", "2", "-b", "1", "-o", out, preexec_fn=small_disk)
    line = assert_one_error_line(r, 5)
    assert f"cannot write the output file {out}" in line and "run the same command again" in line
    assert out.read_text(encoding="utf-8").startswith(kept)
    again = run("batch", source, "-m", tiny_model, "-n", "2", "-b", "1", "-o", out)
    assert again.code == 0, again.err
    assert sorted(out.read_text(encoding="utf-8").splitlines()) == sorted(whole)


# --- an error's remedy is one that works --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("compare", "-s", "greedy", "--on-overflow", "slide"), ("compare", "-s", "greedy", "--on-overflow", "error"),
     ("generate", "--penalty-alpha", "0.5", "--on-overflow", "truncate")],
    ids=["compare-slide", "compare-error", "contrastive-truncate"],
)  # fmt: skip
def test_a_max_tokens_beyond_the_context_is_not_told_to_slide_where_nothing_slides(tiny_model, args):
    # compare (whose `slide` is `truncate`) and contrastive search cannot slide, yet were told to
    line = assert_one_error_line(run_quick(*args, "-m", tiny_model, "-n", "500", "hi"), 2)
    assert "slide" not in line and "lower --max-tokens below 128" in line

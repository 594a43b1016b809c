"""batch on input that comes slowly (a pipe from a program still producing records): each record's
result is written once it is computed, not when the input ends or when enough records have come to
fill the batch."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

import pytest

from tests.support.cli import command, start, user_env

_WAIT = 60  # seconds a result may take on a loaded machine; a pass takes well under one


def _line_from(stream, timeout: float = _WAIT) -> bytes:
    """The next whole line on a child's stdout, or b"" if none comes within timeout seconds."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        chunk = os.read(fd, 1)
        if not chunk:
            return data
        data += chunk
    return data


def _line_in(path, count: int, timeout: float = _WAIT) -> list[dict]:
    """The file's first count result lines, once it holds them (fewer if they do not come in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            break
        time.sleep(0.02)
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def _send(child: subprocess.Popen, record: dict) -> None:
    child.stdin.write((json.dumps(record) + "\n").encode())
    child.stdin.flush()


@pytest.mark.parametrize("batch_size", ["1", "4", "32"])
def test_each_result_comes_out_while_stdin_is_still_open(tiny_model, batch_size):
    child = start("batch", "-", "-m", tiny_model, "-n", "5", "-t", "0", "-b", batch_size,
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _send(child, {"id": "a", "prompt": "first"})
        first = _line_from(child.stdout)
        assert first, "no result for a record while the input stayed open"
        assert json.loads(first)["id"] == "a"
        _send(child, {"id": "b", "prompt": "second"})
        second = _line_from(child.stdout)
        assert second and json.loads(second)["id"] == "b"
        child.stdin.close()
        assert child.wait(timeout=_WAIT) == 0, child.stderr.read()
        assert child.stdout.read() == b""
    finally:
        child.kill()
        child.wait()


def test_results_reach_an_output_file_while_stdin_is_still_open(tiny_model, tmp_path):
    out = tmp_path / "out.jsonl"
    child = start("batch", "-", "-m", tiny_model, "-n", "5", "-t", "0", "-o", out,
                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _send(child, {"id": "a", "prompt": "first"})
        _send(child, {"id": "bad", "prompt": 5})  # a bad record's error line is a result too
        assert sorted(r["id"] for r in _line_in(out, 2)) == ["a", "bad"]
        child.stdin.close()
        assert child.wait(timeout=_WAIT) == 6  # one record failed
    finally:
        child.kill()
        child.wait()


def test_scores_come_out_while_stdin_is_still_open(tiny_model):
    child = start("batch", "--score", "-", "-m", tiny_model, "-b", "8",
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _send(child, {"id": "s", "text": "a text to score"})
        line = _line_from(child.stdout)
        assert line and json.loads(line)["id"] == "s" and "total_logprob" in json.loads(line)
        child.stdin.close()
        assert child.wait(timeout=_WAIT) == 0, child.stderr.read()
    finally:
        child.kill()
        child.wait()


def test_a_record_that_comes_while_others_decode_joins_them_and_all_match_a_file_run(tiny_model, tmp_path):
    """Records that trickle in give the tokens the same records give from a file."""
    records = [{"id": i, "prompt": f"record {i} says", "max_tokens": 4 + 3 * i} for i in range(6)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    from_file = subprocess.run([*command(), "batch", str(source), "-m", str(tiny_model), "-t", "0", "--ordered"],
                               capture_output=True, env=user_env(), timeout=_WAIT)  # fmt: skip
    assert from_file.returncode == 0, from_file.stderr
    child = start("batch", "-", "-m", tiny_model, "-t", "0", "--ordered",
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        for record in records:
            _send(child, record)
            time.sleep(0.05)
        child.stdin.close()
        out = child.stdout.read()
        assert child.wait(timeout=_WAIT) == 0, child.stderr.read()
    finally:
        child.kill()
        child.wait()
    assert out == from_file.stdout


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("batch_size", ["1", "4"])
def test_a_signal_while_waiting_for_input_ends_the_run_at_once(tiny_model, sig, code, batch_size):
    """The thread reading stdin ahead is still in a read when the signal comes: the command still ends
    at once with the signal's code (Python could not shut down while a thread held its stdin reader)."""
    child = start("batch", "-", "-m", tiny_model, "-n", "5", "-b", batch_size,
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _send(child, {"id": "a", "prompt": "first"})
        assert _line_from(child.stdout)
        time.sleep(0.2)  # waiting for the next record
        sent = time.monotonic()
        child.send_signal(sig)
        assert child.wait(timeout=_WAIT) == code
        assert time.monotonic() - sent < 5
        err = child.stderr.read().decode()
        assert "Traceback" not in err and "Fatal" not in err, err
    finally:
        child.kill()
        child.wait()

"""Session 12 attack round: hostile input the earlier rounds (test_s10_hostile*, test_s11_*) missed."""

from __future__ import annotations

import os
import threading

from tests.support.cli import run


def _one_error(r, code: int = 2) -> str:
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err, r.err
    lines = r.err_lines
    assert len(lines) == 1 and lines[0].startswith("gpt2cli: error: "), r.err
    return lines[0]


def test_batch_with_stdin_closed_reads_no_records(tiny_model):
    """`gpt2cli batch - <&-` was an internal error (AttributeError on None): a closed stdin is empty,
    as generate reads it."""
    r = run("batch", "-", "-m", tiny_model, "-n", "2", stdin=None, preexec_fn=lambda: os.close(0))
    assert r.code == 0, r.err
    assert r.out == b"" and "error" not in r.err


def test_batch_output_on_the_fifo_it_reads_is_refused_not_a_hang(tiny_model, tmp_path):
    """`batch FIFO -o FIFO` fed the results back in as records and, holding a writer of the FIFO
    itself, never saw INPUT end: it hung forever."""
    fifo = tmp_path / "records"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w") as f:
            f.write('{"prompt": "a"}\n{"prompt": "b"}\n')

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    r = run("batch", fifo, "-o", fifo, "-m", tiny_model, "-n", "2", timeout=30)
    line = _one_error(r)
    assert "pipe INPUT reads" in line and "another file" in line
    feeder.join(10)


def test_batch_output_on_the_pipe_stdin_reads_is_refused_not_a_hang(tiny_model):
    """`... | batch - -o /dev/stdin` opened stdin's pipe for writing: same endless wait."""
    r = run("batch", "-", "-o", "/dev/stdin", "-m", tiny_model, "-n", "2", stdin=b'{"prompt": "a"}\n', timeout=30)
    line = _one_error(r)
    assert "/dev/stdin" in line and "pipe INPUT reads" in line

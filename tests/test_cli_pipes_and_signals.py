"""Closed pipes and signals: `| head`, a closed stdout or stderr, Ctrl-C and SIGTERM while
streaming; the command stops at once and quietly (141, 130, 143) and loses nothing it printed."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpt2cli.cli import process
from tests.support import models as modelfactory
from tests.support.cli import run, run_in_process, start


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory) -> Path:
    """Tiny vocabulary, 1024 positions: streams for a long time without sliding (so without notes)."""
    return modelfactory.write_model(tmp_path_factory.mktemp("pipes") / "long", n_positions=1024, mask_buffers=False, seed=4)


@pytest.fixture(scope="module")
def real_vocab_model(tmp_path_factory, real_tokenizer_dir) -> Path:
    """GPT-2's real BPE (multi-byte characters split across tokens) on a small random model."""
    return modelfactory.write_model(
        tmp_path_factory.mktemp("pipes") / "real", n_positions=1024, tokenizer="real", mask_buffers=False, seed=5
    )


# --------------------------------------------------------------------------------------------
# Closed stdout and stderr
# --------------------------------------------------------------------------------------------


def test_closed_stderr_keeps_the_exit_code(tmp_path):
    r = run("generate", "-m", tmp_path / "nothing-here", "hi", preexec_fn=lambda: os.close(2))
    assert (r.code, r.out) == (2, b"")


def test_closed_stdout_stops_quietly_with_141(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "3", "hi", preexec_fn=lambda: os.close(1))
    assert (r.code, r.err) == (141, "")


def test_no_arguments_with_stderr_closed_is_still_a_usage_error():
    r = run(preexec_fn=lambda: os.close(2))
    assert r.code == 2 and r.out == b""


# --------------------------------------------------------------------------------------------
# Closed pipes (`| head`)
# --------------------------------------------------------------------------------------------


def _read_at_least(fd: int, n: int, timeout: float = 30) -> bytes:
    buf, deadline = b"", time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(buf)} bytes of output after {timeout} s"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"output ended after {len(buf)} bytes"
            buf += chunk
    return buf


def _endless(model: Path, *extra, **popen) -> subprocess.Popen:
    """Starts a generation that would go on for ever."""
    return start("generate", "-m", model, "-n", 10**9, "--ignore-eos", *extra, stdin=subprocess.DEVNULL, **popen)


def test_closed_pipe_stops_generating_at_once_quietly_with_141(long_context_model):
    p = _endless(long_context_model, "hello", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        head = _read_at_least(p.stdout.fileno(), 20)
        closed = time.monotonic()
        p.stdout.close()  # `| head -c 20` exits
        code = p.wait(timeout=20)
        assert time.monotonic() - closed < 5, "kept generating after the reader went away"
        err = p.stderr.read().decode()
    finally:
        p.kill()
    assert len(head) >= 20
    assert (code, err) == (141, "")


def test_closed_pipe_shared_with_stderr_is_141_too(long_context_model):
    p = _endless(long_context_model, "hello", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        head = _read_at_least(p.stdout.fileno(), 20)
        p.stdout.close()  # `2>&1 | head -c 20`
        code = p.wait(timeout=20)
    finally:
        p.kill()
    assert b"Traceback" not in head
    assert code == 141


def test_large_output_into_a_closed_pipe_is_not_reported_as_success(tiny_model, tmp_path):
    """One write bigger than the pipe: the reader leaving mid-write must still end in 141, not 0."""
    text = tmp_path / "big.txt"
    text.write_bytes(b"hello world\n" * 25_000)  # ~600 kB of token ids on stdout, in one write
    with open(text, "rb") as stdin:
        p = start("tokenize", "-m", tiny_model, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _read_at_least(p.stdout.fileno(), 10)
            p.stdout.close()
            code = p.wait(timeout=30)
            err = p.stderr.read().decode()
        finally:
            p.kill()
    assert (code, err) == (141, "")


# --------------------------------------------------------------------------------------------
# Signals: Ctrl-C and SIGTERM while streaming
# --------------------------------------------------------------------------------------------

SIGNALS = [pytest.param(signal.SIGINT, 130, id="SIGINT"), pytest.param(signal.SIGTERM, 143, id="SIGTERM")]


def _reference_stream(model: Path, prompt: str, at_least: int) -> bytes:
    """What the interrupted command was printing: the same greedy stream, computed in process."""
    from gpt2cli.decoding.generate import generate
    from gpt2cli.decoding.sampling import Sampler, SamplingOptions
    from gpt2cli.decoding.text import Detokenizer
    from gpt2cli.session import load_model
    from gpt2cli.store.tokenizer import Tokenizer

    engine, tokenizer = load_model(model), Tokenizer.from_folder(model)
    detok, out = Detokenizer(tokenizer.token_bytes), b""
    steps = generate(
        engine, tokenizer.encode(prompt), Sampler(SamplingOptions(0.0, 50, 1.0)), 10**9,
        eos_token_id=engine.config.eos_token_id, ignore_eos=True,
    )  # fmt: skip
    for step in steps:
        out += detok.feed(int(step.tokens[0])).encode("utf-8")
        if len(out) > at_least:
            break
    steps.close()
    return out


@pytest.mark.parametrize(("signum", "expected"), SIGNALS)
def test_signal_while_streaming_into_a_pipe_keeps_what_was_printed(real_vocab_model, signum, expected):
    p = _endless(real_vocab_model, "-t", "0", "Hello", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = _read_at_least(p.stdout.fileno(), 200)
        p.send_signal(signum)
        sent = time.monotonic()
        out += p.stdout.read()  # everything up to the exit
        code = p.wait(timeout=20)
        assert time.monotonic() - sent < 5, "kept going after the signal"
        err = p.stderr.read().decode()
    finally:
        p.kill()
    assert (code, err) == (expected, "")
    out.decode("utf-8")  # whole characters: no half of a multi-byte sequence at the end
    reference = _reference_stream(real_vocab_model, "Hello", len(out))
    assert reference.startswith(out), "the printed text is not the stream the model was producing"


def test_signal_between_write_and_flush_loses_no_printed_text(tiny_model, monkeypatch):
    """The signal lands after a token's bytes went into stdout's buffer but before the flush:
    main()'s exit path still delivers them, and no traceback is printed."""
    from gpt2cli.cli.output import Writer

    original, written = Writer.write, []

    def write(self, text, *, flush=True):
        original(self, text, flush=False)
        written.append(text)
        if len(written) == 5:
            raise process.Terminated(signal.SIGINT)
        if flush:
            self.stream.flush()

    monkeypatch.setattr(Writer, "write", write)
    r, _ = run_in_process(["generate", "-m", str(tiny_model), "-n", "50", "-t", "0", "--ignore-eos", "hi"])
    assert (r.code, r.err) == (130, "")
    assert r.out == "".join(written).encode("utf-8") and len(written) == 5


@pytest.mark.parametrize(("signum", "expected"), SIGNALS)
def test_signal_while_streaming_to_a_terminal_ends_the_line(real_vocab_model, signum, expected):
    master, slave = pty.openpty()
    p = _endless(real_vocab_model, "Hello", stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        out = _read_at_least(master, 200)
        p.send_signal(signum)
        sent = time.monotonic()
        # keep draining: a full terminal buffer would block the child's last writes
        while time.monotonic() - sent < 20 and select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            out += chunk
        code = p.wait(timeout=20)
        assert time.monotonic() - sent < 5, "kept going after the signal"
        err = p.stderr.read().decode()
    finally:
        p.kill()
        os.close(master)
    assert (code, err) == (expected, "")
    assert out.endswith(b"\r\n"), out[-40:]  # the shell prompt starts on a line of its own
    out.decode("utf-8")

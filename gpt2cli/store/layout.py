"""The one place that knows what a GPT-2 model folder holds: file names, weight sets, refused formats.

Used for a Hub repo's file list (what to fetch) and for a folder on disk (what to read).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import stat
from collections.abc import Collection
from pathlib import Path

from gpt2cli.errors import CheckpointError, ModelNotFoundError

CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
SINGLE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")
# gpt2cli's own bookkeeping in a downloaded folder: written last, it says the download is complete.
MARKER = ".gpt2cli-complete.json"
# The most the small files may take (GPT-2's: config.json < 1 kB, the index ~30 kB, vocab.json 1 MB,
# merges.txt 0.5 MB; a vocabulary 50 times bigger still fits; a marker lists a handful of files): read,
# or fetched from the Hub, only below.
MAX_SIZE = {CONFIG_FILE: 16 << 20, SHARD_INDEX: 16 << 20, "vocab.json": 64 << 20, "merges.txt": 64 << 20, MARKER: 1 << 20}
# What a marker says its folder holds: the whole model, or only the tokenizer (`gpt2cli tokenize`).
WHOLE_MODEL, TOKENIZER_ONLY = "model", "tokenizer"
# Weights as Python pickles (never loaded: unpickling runs code) or formats we do not read; their
# presence explains why a model without safetensors is refused.
PICKLE_WEIGHTS = re.compile(r"[^/]*\.(bin|pt|pth|ckpt|pkl)")
OTHER_WEIGHTS = re.compile(r"[^/]*\.(h5|msgpack|onnx|gguf)")


def weight_files(names: Collection[str], where: str) -> list[str]:
    """The safetensors files among `names` (a folder's or a repo's files) that hold the weights.

    model.safetensors, or else the shard index with every shard model-0000i-of-0000n.safetensors.
    No weights at all is an empty list; an incomplete shard set is an error naming `where`.
    """
    if SINGLE_WEIGHTS in names:
        return [SINGLE_WEIGHTS]
    shards = sorted(n for n in names if SHARD.fullmatch(n))
    if not shards:
        return []
    totals = {int(SHARD.fullmatch(n).group(2)) for n in shards}
    numbers = {int(SHARD.fullmatch(n).group(1)) for n in shards}
    if len(totals) != 1 or numbers != set(range(1, max(totals) + 1)) or SHARD_INDEX not in names:
        raise ModelNotFoundError(
            f"{where} has an incomplete set of safetensors shards (or no {SHARD_INDEX}); "
            "download the model again, or pick another --revision"
        )
    return [SHARD_INDEX, *shards]


def refuse_other_formats(names: Collection[str], where: str) -> None:
    """For a model without safetensors weights: the error that says why, if it has weights in another format."""
    pickles = sorted(n for n in names if PICKLE_WEIGHTS.fullmatch(n))
    if pickles:
        raise CheckpointError(
            f"{where} has weights only as {', '.join(pickles)}, not safetensors; gpt2cli never loads pickle "
            "files because unpickling can run arbitrary code: use a revision or model with model.safetensors, "
            "or convert it to safetensors"
        )
    others = sorted(n for n in names if OTHER_WEIGHTS.fullmatch(n))
    if others:
        raise CheckpointError(
            f"{where} has weights only as {', '.join(others)}; gpt2cli reads safetensors only: "
            "use a revision or model with model.safetensors, or convert it to safetensors"
        )


def shards_of_index(text: str, where: str, remedy: str) -> list[str]:
    """The shard file names a shard index names: each must be a plain model-0000i-of-0000n.safetensors
    name, so that an index can never make us open a file outside its folder."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{where}: unreadable shard index ({str(e)[:80]}); {remedy}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{where}: has no 'weight_map' object naming the shards; {remedy}")
    shards = set()
    for value in weight_map.values():
        if not (isinstance(value, str) and SHARD.fullmatch(value)):
            raise CheckpointError(
                f"{where}: names {str(value)[:80]!r}, which is not a shard file name in the model folder "
                f"(model-0000i-of-0000n.safetensors); {remedy}"
            )
        shards.add(value)
    return sorted(shards)


def read_small_text(path: Path) -> str:
    """A small UTF-8 file of a model folder (config, shard index, tokenizer, marker), read only when it is
    a regular file of at most MAX_SIZE for its name: a FIFO there would block for ever, /dev/zero or a
    huge file would fill memory. OSError otherwise (UnicodeDecodeError for bytes that are not UTF-8)."""
    limit = MAX_SIZE[Path(path).name]
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO does not wait for a writer
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with open(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # one byte more than allowed says it is too big, whatever its size said
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes, far more than such a file holds", str(path))
    return data.decode("utf-8")


def remedy(folder: Path) -> str:
    """What to do about a broken file in `folder`: download it again if gpt2cli downloaded it (its
    marker names the repo), else fix or replace the file (a folder of the user's own)."""
    try:
        marker = json.loads(read_small_text(Path(folder) / MARKER))
        repo, revision = marker["repo_id"], marker.get("revision")
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return "fix or replace the file, or pass --model another model folder"
    if not isinstance(repo, str) or not (revision is None or isinstance(revision, str)):
        return "re-download the model with `gpt2cli download MODEL --force`"
    # Quoted for a shell: a marker is a file like any other in a folder someone handed over, and the
    # command it suggests gets pasted into a terminal.
    pin = f" --revision {shlex.quote(revision)}" if revision not in (None, "main") else ""
    return f"re-download the model with `gpt2cli download {shlex.quote(repo)}{pin} --force`"


def check_readable(folder: Path) -> None:
    """A model folder we may not list or enter is refused with the reason, not reported as missing files."""
    import os

    try:
        os.listdir(folder)
    except PermissionError as e:
        raise ModelNotFoundError(
            f"{folder}: cannot read the model folder ({e.strerror}); fix its permissions, or pass --model another folder"
        ) from None

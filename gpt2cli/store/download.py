"""The download transaction: one commit's config, tokenizer and safetensors fetched into a hidden
staging folder under a per-model lock, verified, marked complete and renamed into place; and the
translation of huggingface_hub / HTTP / OS exceptions into one-line errors that say what to do.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

try:  # fcntl is POSIX-only; elsewhere concurrent downloads of one model are simply not serialized.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

from gpt2cli.errors import CheckpointError, DownloadError, ModelNotFoundError, UsageError
from gpt2cli.store import layout
from gpt2cli.store.fetch import RateFloor, Remote, fetch_file, remote_files, run_interruptibly
from gpt2cli.store.hub_errors import hub_errors
from gpt2cli.store.hub import HubRef, endpoint, read_marker, staging_folder
from gpt2cli.store.layout import (
    CONFIG_FILE, MARKER, SHARD_INDEX, SINGLE_WEIGHTS, TOKENIZER_FILES, TOKENIZER_ONLY, WHOLE_MODEL, read_small_text,
)  # fmt: skip

_STAGING_NOTE = ".gpt2cli-staging"  # the commit a staging folder is downloading, so resumes never mix commits
_API_TIMEOUT = 10.0  # seconds to wait for the Hub's metadata answer: a black-holed network must not hang us
# The metadata answer is read up to this many bytes (gpt2-xl's, every file with its checksum, is ~10 KB; a
# repo of thousands of files a few MB): a server answering without end must not grow memory without bound.
_MAX_API_ANSWER = 64 << 20


@dataclass(frozen=True)
class _RepoInfo:
    commit: str
    files: dict[str, Remote]  # every file of the repo at that commit -> its size and checksum if the Hub said
    model_type: str | None


def download(ref: HubRef, folder: Path, *, force: bool, progress: bool, holds: str = WHOLE_MODEL) -> Path:
    """Downloads into a hidden staging sibling, then renames it into place under a per-model lock.

    `holds` is WHOLE_MODEL or TOKENIZER_ONLY (vocab.json and merges.txt, for `tokenize`). The staging
    folder survives a failure or an interrupt so the next run resumes it; the final folder only ever
    appears complete, with its marker. Files the user added to an existing folder are carried over.
    """
    _check_endpoint()  # before huggingface_hub is imported: it prints a bad one's error on stdout
    root = folder.parent
    _make_root(root)
    staging = staging_folder(folder)
    with hub_errors(ref, root), model_lock(root, folder.name, ref, progress):
        if not force and read_marker(folder, need=holds) is not None:
            return folder  # another process finished it while we waited for the lock
        if folder.exists() and not (folder / MARKER).exists():
            raise UsageError(
                f"{folder} exists but was not downloaded by gpt2cli, so it is left alone; use it with "
                f"--model {folder}, or move it away to download {ref.display}"
            )
        info = _fetch_repo_info(ref)
        files = _select_files(ref, info, holds)
        # A file's size bounds its transfer (and its checksum needs it): one listed without a size would
        # be fetched for as long as the server sends, unverified, filling the disk.
        unsized = [name for name in files if info.files[name].size is None]
        if unsized:
            raise _malformed(ref, f"{unsized[0]} is listed without its size")
        try:
            _check_space(ref, info, files, staging)
            _prepare_staging(staging, info.commit, fresh=force)
            _fetch(ref, info, files, staging, progress)
            _finish(staging, ref, info.commit, files, holds)
            _replace_folder(staging, folder, force=force)
        except OSError as e:
            if e.errno == errno.ENOSPC:  # a resume would not save the space the partial files hold
                shutil.rmtree(staging, ignore_errors=True)
            raise
        except CheckpointError:  # what was fetched is provably unusable (e.g. a hostile shard index)
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return folder


def _check_endpoint() -> None:
    url = endpoint()
    if url is None:
        return
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
        reason = None if parts.scheme in ("http", "https") and parts.hostname else "not an http(s) address"
    except ValueError as e:
        reason = str(e)
    if reason:
        raise UsageError(
            f"HF_ENDPOINT {url!r} is not a valid URL ({reason}); set it to the Hub's address, "
            "such as https://huggingface.co, or unset it"
        )


def _make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror
        if isinstance(e, FileExistsError):  # something not a folder is there: say what, not "File exists"
            try:
                root.stat()
                reason = "a file is there, not a folder"
            except OSError as found:  # a symlink loop or a dangling link
                reason = found.strerror if found.errno != errno.ENOENT else "a symlink to nothing is there"
        raise DownloadError(
            f"cannot create the weights folder {root} ({reason}); "
            "choose another with --weights-dir or GPT2CLI_WEIGHTS"
        ) from e


def _in_the_way(path: Path) -> DownloadError:
    return DownloadError(
        f"{path} is in the way: gpt2cli needs a folder there and finds a file; move or delete it, "
        "or choose another weights folder with --weights-dir or GPT2CLI_WEIGHTS"
    )


@contextmanager
def model_lock(root: Path, folder_name: str, ref: HubRef, progress: bool, wait: bool = True) -> Iterator[None]:
    """An exclusive flock per model, so two processes downloading (or removing) one model never interleave.
    Without `wait`, a model locked by another process is a DownloadError."""
    locks = root / ".locks"
    try:
        locks.mkdir(exist_ok=True)
        handle = open(locks / f"{folder_name}.lock", "a+b")
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise _in_the_way(locks if not locks.is_dir() else locks / f"{folder_name}.lock") from None
    with handle:
        if fcntl is None:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise DownloadError(
                    f"another gpt2cli process is downloading {ref.display}; wait for it to finish, or stop it"
                ) from None
            if progress:
                print(f"gpt2cli: waiting for another process downloading {ref.display}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as e:  # e.g. ENOLCK on some network filesystems: proceed unserialized
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_repo_info(ref: HubRef) -> _RepoInfo:
    """One API call: the commit the revision points to, its file list with sizes and checksums, its model type."""
    info = _model_info(ref)
    if not info.sha:
        raise DownloadError(f"the Hub did not say which commit {ref.display} is at; try again later")
    if not (isinstance(info.sha, str) and re.fullmatch(r"[0-9a-f]{40}", info.sha)):
        raise _malformed(ref, f"commit {str(info.sha)[:50]!r} is not a commit id")
    files = remote_files(info.siblings)
    for remote in files.values():
        size, checksums = remote.size, (remote.sha256, remote.blob_id)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise _malformed(ref, f"{remote.name} is listed with size {repr(size)[:30]}, not a byte count")
        if not all(c is None or isinstance(c, str) for c in checksums):
            raise _malformed(ref, f"{remote.name} is listed with a checksum that is not a string")
    config = info.config if isinstance(info.config, dict) else {}
    return _RepoInfo(commit=info.sha, files=files, model_type=config.get("model_type"))


def _check_space(ref: HubRef, info: _RepoInfo, files: list[str], staging: Path) -> None:
    """Refuses before the first byte a download the disk cannot hold (what a resume already has counts):
    filling the disk to the last byte, then deleting it all, harms every other program on it. Runs before
    the staging folder is made, so a refused download leaves nothing behind."""
    needed = 0
    for name in files:
        have = 0
        for path in (staging / name, staging / (name + ".part")):
            try:
                have = max(have, path.stat().st_size)
            except OSError:
                pass
        needed += max(info.files[name].size - have, 0)
    try:
        fs = os.statvfs(staging.parent)
    except OSError:  # no statvfs here: the transfer's own ENOSPC still says it
        return
    free = fs.f_bavail * fs.f_frsize
    if needed > free:
        raise DownloadError(
            f"{ref.display} needs {needed / 1e9:.1f} GB more, and {staging.parent} has {free / 1e9:.1f} GB "
            "free; free some space, or choose another folder with --weights-dir or GPT2CLI_WEIGHTS"
        )


def _malformed(ref: HubRef, detail: str) -> DownloadError:
    """The Hub's description of a repo is not what the Hub sends: a broken proxy or a wrong HF_ENDPOINT."""
    return DownloadError(
        f"the Hub's description of {ref.display} is malformed ({detail}); check HF_ENDPOINT, or try again "
        "later, or pass --model PATH to a model folder"
    )


def hub_headers() -> dict:
    """huggingface_hub's headers for a Hub request (token, user agent), without its agent detection:
    building them the first time fetches {HF_ENDPOINT}/api/agent-harnesses with no bound on its size
    or time (an endpoint trickling it held the command for as long as it liked, an endless one filled
    memory) and writes the answer into HF_HOME. The agent's name in the user agent is all it adds."""
    from huggingface_hub.utils import build_hf_headers

    try:
        from huggingface_hub.utils import _detect_agent
    except ImportError:  # a huggingface_hub without agent detection
        _detect_agent = None
    if _detect_agent is not None and getattr(_detect_agent, "_registry", False) is None:
        _detect_agent._registry = getattr(_detect_agent, "_EMPTY_REGISTRY", {"standardEnvVars": [], "harnesses": {}})
    return build_hf_headers(library_name="gpt2cli")


def _model_info(ref: HubRef):
    """HfApi.model_info(files_metadata=True), with the answer read up to _MAX_API_ANSWER bytes: the same
    request (address, parameters, headers), errors (hf_raise_for_status) and ModelInfo, but a server
    answering without end is refused instead of growing memory until the process dies."""
    from urllib.parse import quote

    from huggingface_hub import ModelInfo, constants
    from huggingface_hub.utils import get_session, hf_raise_for_status

    base = (endpoint() or constants.ENDPOINT).rstrip("/")
    url = f"{base}/api/models/{ref.repo_id}"
    if ref.revision is not None:
        url += f"/revision/{quote(ref.revision, safe='')}"
    headers = hub_headers()
    with get_session().stream("GET", url, headers=headers, params={"blobs": True}, timeout=_API_TIMEOUT) as r:
        body = bytearray()
        floor = RateFloor()  # a server trickling a byte every few seconds never trips the read timeout
        for chunk in r.iter_bytes():
            body += chunk
            if len(body) > _MAX_API_ANSWER:
                raise DownloadError(
                    f"the Hub's description of {ref.display} is over {_MAX_API_ANSWER >> 20} MB, far more than "
                    "any model repo's; check HF_ENDPOINT, or pass --model PATH to a model folder"
                )
            if floor.stalled(len(chunk)):
                raise DownloadError(
                    f"the Hub at {base} sent the description of {ref.display} at under {floor.rate} bytes/s; the "
                    "connection is too slow or stalled: check the network and HF_ENDPOINT, and try again later, or "
                    "pass --model PATH to a model folder"
                )
        answer = type(r)(r.status_code, headers=r.headers, content=bytes(body), request=r.request)
    hf_raise_for_status(answer)
    try:
        data = answer.json()
    except ValueError as e:
        raise _malformed(ref, f"not JSON: {str(e)[:60]}") from None
    if not isinstance(data, dict):
        raise _malformed(ref, "not a JSON object")
    siblings = data.get("siblings")
    if siblings is not None and not (
        isinstance(siblings, list)
        and all(isinstance(s, dict) and isinstance(s.get("rfilename"), str) for s in siblings)
    ):
        raise _malformed(ref, "its file list is not a list of named files")
    try:
        return ModelInfo(**data)
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # a field of the wrong type
        raise _malformed(ref, f"{type(e).__name__}: {str(e)[:60]}") from None


def _select_files(ref: HubRef, info: _RepoInfo, holds: str = WHOLE_MODEL) -> list[str]:
    """The files to fetch: config, tokenizer, and safetensors weights (single file or all shards);
    only the tokenizer's for TOKENIZER_ONLY."""
    where = f"{ref.repo_id} (commit {info.commit[:12]})"
    if info.model_type not in (None, "gpt2"):
        raise CheckpointError(
            f"{where} is a {info.model_type!r} model; gpt2cli runs GPT-2 architecture models only: "
            "pick a GPT-2 repo (model_type gpt2)"
        )
    names = set(info.files)
    if holds == TOKENIZER_ONLY:
        missing = [f for f in TOKENIZER_FILES if f not in names]
        if missing:
            raise ModelNotFoundError(f"{where} lacks {', '.join(missing)}; pick another repo or --revision")
        _refuse_oversized(where, info, list(TOKENIZER_FILES))
        return list(TOKENIZER_FILES)
    weights = layout.weight_files(names, where)
    if not weights:
        layout.refuse_other_formats(names, where)
    required = [CONFIG_FILE, *TOKENIZER_FILES]
    missing = [f for f in required if f not in names] + ([] if weights else [SINGLE_WEIGHTS])
    if missing:
        raise ModelNotFoundError(
            f"{where} lacks {', '.join(missing)}; gpt2cli needs config.json, vocab.json, merges.txt and "
            "safetensors weights: pick another repo or --revision"
        )
    _refuse_oversized(where, info, required + weights)
    return required + weights


def _refuse_oversized(where: str, info: _RepoInfo, files: list[str]) -> None:
    """A small file the Hub lists at more than a model folder's reader takes is refused before it is
    fetched: gigabytes downloaded only to be refused."""
    for name in files:
        size, limit = info.files[name].size, layout.MAX_SIZE.get(name)
        if limit is not None and size is not None and size > limit:
            raise CheckpointError(
                f"{where} lists {name} at {size / 1e6:.0f} MB, where gpt2cli reads at most {limit >> 20} MB; "
                "it is not a GPT-2 model: pick another repo or --revision"
            )


def _prepare_staging(staging: Path, commit: str, *, fresh: bool) -> None:
    """Reuses a staging folder left by an interrupted run of the same commit; otherwise starts clean."""
    if staging.is_symlink():  # not one we made: downloading through it would write into (and delete from) its target
        staging.unlink()
    if staging.exists() and not staging.is_dir():
        raise _in_the_way(staging)
    note = staging / _STAGING_NOTE
    try:
        reusable = not fresh and note.read_text(encoding="utf-8") == commit
    except (OSError, UnicodeDecodeError):
        reusable = False
    if not reusable:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        note.write_text(commit, encoding="utf-8")


def _fetch(ref: HubRef, info: _RepoInfo, files: list[str], staging: Path, progress: bool) -> None:
    """Fetches exactly `files` of one commit into `staging`, each resumed and verified (fetch.py); the
    shard index is checked before any shard it names is requested. Interruptible at any moment."""
    from huggingface_hub import hf_hub_url

    headers = hub_headers()

    def work(stop) -> None:
        for name in files:
            if stop.is_set():
                return
            url = hf_hub_url(ref.repo_id, name, revision=info.commit, endpoint=endpoint())
            with _progress_bar(name, info.files[name].size, progress) as bar:
                fetch_file(url, headers, info.files[name], staging, stop, bar)
            if name == SHARD_INDEX:
                _check_index(ref, info, staging, files)

    run_interruptibly(work)


def _check_index(ref: HubRef, info: _RepoInfo, staging: Path, files: list[str]) -> None:
    """A shard index may name only the shards beside it (never ../x, /etc/passwd): refused before a shard is fetched."""
    where = f"{SHARD_INDEX} of {ref.repo_id} (commit {info.commit[:12]})"
    try:
        text = (staging / SHARD_INDEX).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = ""
    shards = layout.shards_of_index(text, where, "gpt2cli will not load it: pick another repo or --revision")
    unlisted = [s for s in shards if s not in files]
    if unlisted:
        raise CheckpointError(f"{where}: names {unlisted[0]}, which the repo does not have; pick another repo or --revision")


@contextmanager
def _progress_bar(name: str, size: int | None, shown: bool):
    if not shown:
        yield None
        return
    from huggingface_hub.utils import tqdm

    # leave=False: a finished bar is erased, so nothing of it is left between the command and its output
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr, leave=False) as bar:
        yield bar


def _finish(staging: Path, ref: HubRef, commit: str, files: list[str], holds: str) -> None:
    """Drops download bookkeeping so the folder holds just the model, then marks it complete."""
    for name in files:
        if not (staging / name).is_file():  # fetch_file verified every file it brought: this is our bug
            raise DownloadError(f"download of {ref.display} lost {name}; run the command again")
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # an older gpt2cli's huggingface_hub metadata
    (staging / _STAGING_NOTE).unlink(missing_ok=True)
    _write_marker(staging, ref, commit, files, holds)


def _replace_folder(staging: Path, folder: Path, *, force: bool) -> None:
    """Renames `staging` to `folder`. An existing copy is moved aside first; what the user put in it is
    carried into the new folder (files gpt2cli did not download always; files it downloaded and the
    user changed unless `force`), and only then is the old copy deleted."""
    old = None
    if folder.exists():
        old = folder.with_name(f".old-{folder.name}-{os.urandom(4).hex()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        _carry_over(old, folder, force=force)  # on failure `old` is kept, with the user's files in it
        shutil.rmtree(old, ignore_errors=True)


def _carry_over(old: Path, new: Path, *, force: bool) -> None:
    try:
        listed = json.loads(read_small_text(old / MARKER))["files"]
        listed = listed if isinstance(listed, dict) else {}
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        listed = {}
    fresh = json.loads((new / MARKER).read_text(encoding="utf-8"))["files"]
    for entry in old.iterdir():
        name = entry.name
        if name in (MARKER, MARKER + ".tmp"):
            continue
        if name in listed or name in fresh:  # a file gpt2cli downloads
            unchanged = entry.is_file() and name in listed and entry.stat().st_size == listed[name]
            if force or unchanged:
                continue  # the new download's copy wins
        try:
            os.replace(entry, new / name)  # the user's file wins
        except OSError:  # a folder where the download has a file (or the reverse): leave it in the old copy
            raise DownloadError(
                f"cannot carry {entry} into the new download of {new.name}; it is kept in {old}: move it yourself"
            ) from None


def _write_marker(folder: Path, ref: HubRef, commit: str, files: list[str], holds: str) -> None:
    """Written last, atomically: a folder with this marker is a finished download of one commit."""
    marker = {
        "repo_id": ref.repo_id,
        "holds": holds,
        "revision": ref.revision,
        "commit": commit,
        "files": {f: (folder / f).stat().st_size for f in files},
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)

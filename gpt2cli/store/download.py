"""The download transaction: one commit's config, tokenizer and safetensors fetched into a hidden
staging folder under a per-model lock, verified, marked complete and renamed into place; and the
translation of huggingface_hub / HTTP / OS exceptions into one-line errors that say what to do.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

try:  # fcntl is POSIX-only; elsewhere concurrent downloads of one model are simply not serialized.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

from gpt2cli.errors import CheckpointError, DownloadError, GPT2CLIError, ModelNotFoundError, UsageError
from gpt2cli.store import layout
from gpt2cli.store.hub import ALIASES, HubRef, endpoint, read_marker
from gpt2cli.store.layout import CONFIG_FILE, MARKER, SINGLE_WEIGHTS, TOKENIZER_FILES

_STAGING_NOTE = ".gpt2cli-staging"  # the commit a staging folder is downloading, so resumes never mix commits
_API_TIMEOUT = 10.0  # seconds to wait for the Hub's metadata answer: a black-holed network must not hang us


@dataclass(frozen=True)
class _RepoInfo:
    commit: str
    sizes: dict[str, int | None]  # every file of the repo at that commit -> its size if the Hub said
    model_type: str | None


def download(ref: HubRef, folder: Path, *, force: bool, progress: bool) -> Path:
    """Downloads into a hidden staging sibling, then renames it into place under a per-model lock.

    The staging folder survives a failure so the next run resumes it; the final folder only ever
    appears complete, with its marker, so an interrupted download never looks like a model.
    """
    _check_endpoint()  # before huggingface_hub is imported: it prints a bad one's error on stdout
    root = folder.parent
    _make_root(root)
    staging = root / f".tmp-{folder.name}"
    with _hub_errors(ref, root), _model_lock(root, folder.name, ref, progress):
        if not force and read_marker(folder) is not None:
            return folder  # another process finished it while we waited for the lock
        if folder.exists() and not (folder / MARKER).exists():
            raise UsageError(
                f"{folder} exists but was not downloaded by gpt2cli, so it is left alone; use it with "
                f"--model {folder}, or move it away to download {ref.display}"
            )
        info = _fetch_repo_info(ref)
        files = _select_files(ref, info)
        try:
            _prepare_staging(staging, info.commit, fresh=force)
            _snapshot(ref, info.commit, files, staging, progress)
            _verify(ref, staging, files, info.sizes)
            _finish(staging, ref, info.commit, files)
            _replace_folder(staging, folder)
        except OSError as e:
            if e.errno == errno.ENOSPC:  # a resume would not save the space the partial files hold
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
        raise DownloadError(
            f"cannot create the weights folder {root} ({e.strerror}); "
            "choose another with --weights-dir or GPT2CLI_WEIGHTS"
        ) from e


@contextmanager
def _model_lock(root: Path, folder_name: str, ref: HubRef, progress: bool) -> Iterator[None]:
    """An exclusive flock per model, so two processes downloading one model never interleave."""
    locks = root / ".locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{folder_name}.lock", "a+b") as handle:
        if fcntl is None:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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
    """One API call: the commit the revision points to, its file list with sizes, and its model type."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint(), library_name="gpt2cli")
    info = api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True, timeout=_API_TIMEOUT)
    if not info.sha:
        raise DownloadError(f"the Hub did not say which commit {ref.display} is at; try again later")
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    config = info.config if isinstance(info.config, dict) else {}
    return _RepoInfo(commit=info.sha, sizes=sizes, model_type=config.get("model_type"))


def _select_files(ref: HubRef, info: _RepoInfo) -> list[str]:
    """The files to fetch: config, tokenizer, and safetensors weights (single file or all shards)."""
    where = f"{ref.repo_id} (commit {info.commit[:12]})"
    if info.model_type not in (None, "gpt2"):
        raise CheckpointError(
            f"{where} is a {info.model_type!r} model; gpt2cli runs GPT-2 architecture models only"
        )
    names = set(info.sizes)
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
    return required + weights


def _prepare_staging(staging: Path, commit: str, *, fresh: bool) -> None:
    """Reuses a staging folder left by an interrupted run of the same commit; otherwise starts clean."""
    note = staging / _STAGING_NOTE
    try:
        reusable = not fresh and note.read_text(encoding="utf-8") == commit
    except OSError:
        reusable = False
    if not reusable:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        note.write_text(commit, encoding="utf-8")


@lru_cache(maxsize=1)
def _quiet_tqdm() -> type:
    """A huggingface_hub tqdm that never draws, for runs whose stderr is not a terminal."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class QuietTqdm(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def _erasing_tqdm(bars: list) -> type:
    """huggingface_hub's tqdm, erased when closed and remembered in `bars`: snapshot_download leaves
    some bars open, and they were redrawn over (and after) everything printed later."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class ErasingTqdm(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["leave"] = False
            super().__init__(*args, **kwargs)
            bars.append(self)

    return ErasingTqdm


@contextmanager
def _closing(bars: list) -> Iterator[None]:
    """Closes (so erases) every bar once the download is over, before anything else is written."""
    try:
        yield
    finally:
        for bar in reversed(bars):
            try:
                bar.close()
            except Exception:  # noqa: BLE001 - a bar that cannot redraw (stderr gone) must not fail the download
                pass


def _snapshot(ref: HubRef, commit: str, files: list[str], staging: Path, progress: bool) -> None:
    """Fetches exactly `files` of one commit into `staging` (files already there are kept: a resume)."""
    from huggingface_hub import snapshot_download

    bars: list = []
    with _library_warnings(shown=progress), _closing(bars):
        snapshot_download(
            ref.repo_id,
            revision=commit,  # a commit hash: config, tokenizer and weights all come from one revision
            local_dir=staging,
            allow_patterns=files,
            endpoint=endpoint(),
            library_name="gpt2cli",
            tqdm_class=_erasing_tqdm(bars) if progress else _quiet_tqdm(),
            etag_timeout=_API_TIMEOUT,
        )


@contextmanager
def _library_warnings(*, shown: bool) -> Iterator[None]:
    """huggingface_hub logs retries ("Trying to resume download...") as warnings: useful beside progress
    bars on a terminal, noise in a script, whose stderr gets our one-line error if the retries fail."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    if not shown:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _verify(ref: HubRef, staging: Path, files: list[str], sizes: dict[str, int | None]) -> None:
    """Every file is there with the size the Hub announced; huggingface_hub may return a partial folder
    when the connection drops after listing, so we never trust its return alone."""
    for name in files:
        path = staging / name
        expected = sizes.get(name)
        if not path.is_file() or (expected is not None and path.stat().st_size != expected):
            raise DownloadError(
                f"download of {ref.display} is incomplete ({name} missing or truncated); "
                "run the command again to resume it"
            )


def _finish(staging: Path, ref: HubRef, commit: str, files: list[str]) -> None:
    """Drops download bookkeeping so the folder holds just the model, then marks it complete."""
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's local_dir metadata
    (staging / _STAGING_NOTE).unlink(missing_ok=True)
    _write_marker(staging, ref, commit, files)


def _replace_folder(staging: Path, folder: Path) -> None:
    """Renames `staging` to `folder`; an old copy (a --force refresh) is moved aside first, then deleted."""
    old = None
    if folder.exists():
        old = folder.with_name(f".old-{folder.name}-{os.urandom(4).hex()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

def _write_marker(folder: Path, ref: HubRef, commit: str, files: list[str]) -> None:
    """Written last, atomically: a folder with this marker is a finished download of one commit."""
    marker = {
        "repo_id": ref.repo_id,
        "revision": ref.revision,
        "commit": commit,
        "files": {f: (folder / f).stat().st_size for f in files},
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)



@contextmanager
def _hub_errors(ref: HubRef, root: Path) -> Iterator[None]:
    """Lets gpt2cli errors through and turns every other exception into one."""
    try:
        yield
    except GPT2CLIError:
        raise
    except Exception as e:  # noqa: BLE001 - no huggingface_hub / httpx / OS exception may escape
        raise _convert_error(e, ref, root) from e


_RETRY = "run the command again to resume"
_ALTERNATIVES = "pass --model PATH to a model folder, or --offline to use downloaded models only"


def _convert_error(e: Exception, ref: HubRef, root: Path) -> GPT2CLIError:
    """The gpt2cli error for an exception raised while talking to the Hub or writing the download."""
    hf = _hf_errors()
    what = ref.display
    hub_url = endpoint() or "https://huggingface.co"
    if isinstance(e, hf["GatedRepoError"]):
        return ModelNotFoundError(
            f"{ref.repo_id} is gated on the Hub; accept its terms on the Hub and set HF_TOKEN, or {_ALTERNATIVES}"
        )
    if isinstance(e, hf["RepositoryNotFoundError"]):
        return ModelNotFoundError(
            f"no model repo {ref.repo_id!r} on the Hub at {hub_url} (or it is private: set HF_TOKEN); "
            f"check the name, or use one of {', '.join(ALIASES)}"
        )
    if isinstance(e, hf["RevisionNotFoundError"]):
        return ModelNotFoundError(
            f"revision {ref.revision!r} not found in {ref.repo_id}; "
            "pass an existing branch, tag or commit to --revision"
        )
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return DownloadError(
            f"disk full while downloading {what} into {root}; free some space, or choose another folder "
            "with --weights-dir or GPT2CLI_WEIGHTS"
        )
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DownloadError(
            f"cannot write to {root} ({e.strerror}); choose another folder with --weights-dir or GPT2CLI_WEIGHTS"
        )
    connect_errors, transport_errors = _network_errors()
    if isinstance(e, (*connect_errors, hf["OfflineModeIsEnabled"], hf["LocalEntryNotFoundError"])):
        return DownloadError(  # --offline would not help here: this model is not on disk
            f"cannot reach the Hub at {hub_url} to download {what}; check the network and HF_ENDPOINT, or run "
            "`gpt2cli download` where the Hub is reachable and pass --model PATH to the folder it prints"
        )
    if isinstance(e, hf["EntryNotFoundError"]):
        return DownloadError(f"the Hub is missing a file of {what} that it listed ({_first_line(e)}); {_RETRY}")
    if isinstance(e, hf["HfHubHTTPError"]):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", "error")
        if status in (401, 403):
            return DownloadError(
                f"the Hub refused access to {ref.repo_id} (HTTP {status}); set HF_TOKEN, or {_ALTERNATIVES}"
            )
        return DownloadError(
            f"the Hub at {hub_url} answered HTTP {status} for {what}; try again later, or {_ALTERNATIVES}"
        )
    if isinstance(e, (*transport_errors, ConnectionError)):
        return DownloadError(
            f"the connection to the Hub broke while downloading {what} ({_first_line(e)}); {_RETRY}, or {_ALTERNATIVES}"
        )
    return DownloadError(f"downloading {what} failed ({type(e).__name__}: {_first_line(e)}); {_RETRY}")


class _Never(Exception):
    """Stands in for an exception class this huggingface_hub version does not have."""


def _hf_errors() -> dict[str, type[BaseException]]:
    """huggingface_hub's exception classes by name, wherever this version keeps them."""
    import huggingface_hub.utils as utils

    try:
        import huggingface_hub.errors as errors
    except ImportError:  # before huggingface_hub 0.24
        errors = utils
    names = (
        "GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError",
        "LocalEntryNotFoundError", "HfHubHTTPError", "OfflineModeIsEnabled",
    )  # fmt: skip
    return {n: getattr(errors, n, None) or getattr(utils, n, None) or _Never for n in names}


def _network_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(could not connect, connection broke) classes of the HTTP clients huggingface_hub has used:
    httpx2 (2.x), httpx (1.x), requests (0.x). Only the ones already imported can have raised."""
    connect: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for module, connect_names, transport_name in (
        ("httpx2", ("ConnectError", "ConnectTimeout"), "TransportError"),
        ("httpx", ("ConnectError", "ConnectTimeout"), "TransportError"),
        ("requests.exceptions", ("ConnectionError", "ConnectTimeout"), "RequestException"),
    ):
        mod = sys.modules.get(module)
        if mod is None:
            continue
        connect += [getattr(mod, n) for n in connect_names if hasattr(mod, n)]
        if hasattr(mod, transport_name):
            transport.append(getattr(mod, transport_name))
    return tuple(connect), tuple(transport)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

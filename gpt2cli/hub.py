"""Model name / Hub repo id / local path -> a folder on disk holding config, tokenizer and safetensors.

Owns where downloaded weights live, downloading them from the Hugging Face Hub (huggingface_hub is
imported lazily: it costs ~0.2 s and most runs never touch the network), and listing what is on disk.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import time
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

ALIASES: dict[str, str] = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}

MARKER = ".gpt2cli-complete.json"
CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
SINGLE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
_SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")
# Weights as Python pickles (never loaded: unpickling runs code) or formats we do not read; their
# presence explains why a repo without safetensors is refused.
_PICKLE_WEIGHTS = re.compile(r"[^/]*\.(bin|pt|pth|ckpt|pkl)")
_OTHER_WEIGHTS = re.compile(r"[^/]*\.(h5|msgpack|onnx|gguf)")
# The Hub's repo-id rules: letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters.
_REPO_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]", re.ASCII)
_STAGING_NOTE = ".gpt2cli-staging"  # the commit a staging folder is downloading, so resumes never mix commits
_API_TIMEOUT = 10.0  # seconds to wait for the Hub's metadata answer: a black-holed network must not hang us
_DEFAULT_REVISIONS = (None, "main")
_PROJECT_NAME = re.compile(r"""^name\s*=\s*["']gpt2cli["']""", re.MULTILINE)


@dataclass(frozen=True)
class ModelEntry:
    """One row of `gpt2cli models`: an alias or a downloaded model, and where it lives."""

    name: str
    repo_id: str
    folder: Path
    downloaded: bool
    size_bytes: int
    revision: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class HubRef:
    """A model on the Hub as the user named it: alias or repo id, pinned revision or the default branch."""

    name: str
    repo_id: str
    revision: str | None = None

    @property
    def display(self) -> str:
        return self.name if self.revision in _DEFAULT_REVISIONS else f"{self.name}@{self.revision}"


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def resolve_model(
    name: str,
    *,
    revision: str | None = None,
    weights_dir: Path | None = None,
    offline: bool = False,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Returns the folder of model `name`, downloading it on first use.

    `name` is an existing folder (returned as is), an alias from ALIASES or an owner/name Hub repo.
    A model already on disk is used without any network request, so runs are fast and work offline.
    """
    local = _local_folder(name, revision)
    if local is not None:
        return local
    ref = parse_hub_name(name, revision)
    folder = model_folder(ref, weights_dir)
    if not force and _read_marker(folder) is not None:
        return folder
    if _offline(offline):
        if force:
            raise UsageError(f"cannot re-download {ref.display} in offline mode; drop --force, or go online")
        pin = f" --revision {ref.revision}" if ref.revision not in _DEFAULT_REVISIONS else ""
        raise ModelNotFoundError(
            f"model {ref.display} is not downloaded (looked in {folder}) and offline mode is on; "
            f"run `gpt2cli download {ref.name}{pin}` while online, or pass --model PATH to a model folder"
        )
    return _download(ref, folder, force=force, progress=progress)


def download_model(
    name: str,
    *,
    revision: str | None = None,
    weights_dir: Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Downloads model `name` into the weights folder (again if `force`) and returns its folder.

    Without `force` a complete copy on disk is kept as it is and no request is made.
    """
    if _local_folder(name, revision) is not None:
        raise UsageError(f"{name!r} is a local folder; there is nothing to download (use it with --model {name})")
    return resolve_model(name, revision=revision, weights_dir=weights_dir, force=force, progress=progress)


def list_models(weights_dir: Path | None = None) -> list[ModelEntry]:
    """Every alias and every downloaded model, with its folder and size on disk; makes no request."""
    root = weights_root(weights_dir)
    entries: list[ModelEntry] = []
    alias_folders: set[Path] = set()
    for alias, repo_id in ALIASES.items():
        folder = model_folder(HubRef(alias, repo_id), root)
        alias_folders.add(folder)
        entries.append(_entry(alias, repo_id, folder))
    others = []
    for folder in _model_subfolders(root):
        marker = _read_marker(folder)
        if marker is None or folder in alias_folders:
            continue
        ref = HubRef(marker["repo_id"], marker["repo_id"], marker.get("revision"))
        others.append(_entry(ref.display, ref.repo_id, folder, marker))
    return entries + sorted(others, key=lambda e: e.name)


def weights_root(weights_dir: Path | None = None) -> Path:
    """The folder holding one subfolder per downloaded model.

    In order: the explicit argument (--weights-dir), $GPT2CLI_WEIGHTS, the checkout's weights/ when
    running from a source checkout, else a per-user cache folder ($XDG_CACHE_HOME/gpt2cli).
    """
    if weights_dir is not None:
        return Path(weights_dir).expanduser().absolute()
    env = os.environ.get("GPT2CLI_WEIGHTS")
    if env:
        return Path(env).expanduser().absolute()
    checkout = _checkout_weights()
    if checkout is not None:
        return checkout
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache).expanduser() / "gpt2cli").absolute()


def parse_hub_name(name: str, revision: str | None = None) -> HubRef:
    """Alias or owner/name -> HubRef; anything else is a name we cannot find."""
    if revision is not None and not revision.strip():
        raise UsageError("--revision must not be empty: give a branch, tag or commit, or leave it out")
    if name in ALIASES:
        return HubRef(name, ALIASES[name], revision)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model folder {name!r} does not exist; pass --model PATH to a GPT-2 model folder")
    if _REPO_ID.fullmatch(name) and len(name) <= 96:
        return HubRef(name, name, revision)
    raise ModelNotFoundError(
        f"unknown model {name!r}: use one of {', '.join(ALIASES)}, an owner/name Hub repo, or a folder path"
    )


def model_folder(ref: HubRef, weights_dir: Path | None = None) -> Path:
    """The folder a Hub model lives in: readable (`openai-community--gpt2`), one per pinned revision."""
    folder = ref.repo_id.replace("/", "--")
    if ref.revision not in _DEFAULT_REVISIONS:
        folder += "@" + _safe_revision(ref.revision)
    return weights_root(weights_dir) / folder


def local_copy(name: str, *, revision: str | None = None, weights_dir: Path | None = None) -> Path | None:
    """The complete folder of Hub model `name` if it is on disk; None otherwise (and for local folders
    or names that are not Hub models). Makes no request."""
    if Path(name).expanduser().is_dir():
        return None
    try:
        folder = model_folder(parse_hub_name(name, revision), weights_dir)
    except GPT2CLIError:
        return None
    return folder if is_downloaded(folder) else None


def is_downloaded(folder: Path) -> bool:
    """Whether `folder` holds a finished download (its marker is there and every file has its size)."""
    return _read_marker(Path(folder)) is not None


# ---------------------------------------------------------------------------------------------
# Names and folders
# ---------------------------------------------------------------------------------------------


def _local_folder(name: str, revision: str | None) -> Path | None:
    """An existing directory named by `name`; a folder always wins over a Hub repo of the same name."""
    if not name.strip():
        raise UsageError("--model must not be empty: give a model name, an owner/name Hub repo or a folder")
    path = Path(name).expanduser()
    if not path.is_dir():
        return None
    if revision is not None:
        raise UsageError(f"--revision applies to Hub models, and {name!r} is a local folder; drop --revision")
    return path


def _looks_like_path(name: str) -> bool:
    """`./x`, `/x`, `~/x`, `a/b/c`, `x/`: meant as a folder, never as an owner/name repo id."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name


def _safe_revision(revision: str) -> str:
    """A revision usable in a folder name; a hash suffix keeps `a/b` and `a_b` apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", revision)
    if safe != revision:
        import hashlib

        safe += "-" + hashlib.sha1(revision.encode()).hexdigest()[:8]
    return safe


@lru_cache(maxsize=1)
def _checkout_weights() -> Path | None:
    return find_checkout_weights(Path(__file__).resolve().parent)


def find_checkout_weights(package_dir: Path) -> Path | None:
    """The weights/ folder of the source checkout holding `package_dir`, if the package runs from one
    (its parent has gpt2cli's pyproject.toml and a weights/ folder); None for an installed package."""
    project = package_dir.parent
    pyproject = project / "pyproject.toml"
    if not (project / "weights").is_dir() or not pyproject.is_file():
        return None
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    # A regex, not tomllib: it is not in Python 3.10, and the line is ours.
    return project / "weights" if _PROJECT_NAME.search(text) else None


def _offline(offline: bool) -> bool:
    """Offline if asked, or if HF_HUB_OFFLINE is set (read now, not when huggingface_hub was imported)."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _endpoint() -> str | None:
    """$HF_ENDPOINT read at call time (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None


# ---------------------------------------------------------------------------------------------
# On disk: marker, listing
# ---------------------------------------------------------------------------------------------


def _read_marker(folder: Path) -> dict | None:
    """The completeness marker of `folder` if it is there and every file it lists has its recorded size."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        for rel, size in files.items():
            if (folder / rel).stat().st_size != size:
                return None
        if not isinstance(marker["repo_id"], str):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return marker


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


def _entry(name: str, repo_id: str, folder: Path, marker: dict | None = None) -> ModelEntry:
    marker = marker if marker is not None else _read_marker(folder)
    return ModelEntry(
        name=name,
        repo_id=repo_id,
        folder=folder,
        downloaded=marker is not None,
        size_bytes=folder_size(folder),
        revision=marker.get("revision") if marker else None,
        commit=marker.get("commit") if marker else None,
    )


def _model_subfolders(root: Path) -> list[Path]:
    """Visible subfolders of the weights root (staging, locks and old copies are hidden)."""
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def folder_size(folder: Path) -> int:
    """Bytes of all files under `folder` (0 if it does not exist)."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RepoInfo:
    commit: str
    sizes: dict[str, int | None]  # every file of the repo at that commit -> its size if the Hub said
    model_type: str | None


def _download(ref: HubRef, folder: Path, *, force: bool, progress: bool) -> Path:
    """Downloads into a hidden staging sibling, then renames it into place under a per-model lock.

    The staging folder survives a failure so the next run resumes it; the final folder only ever
    appears complete, with its marker, so an interrupted download never looks like a model.
    """
    root = folder.parent
    _make_root(root)
    staging = root / f".tmp-{folder.name}"
    with _hub_errors(ref, root), _model_lock(root, folder.name, ref, progress):
        if not force and _read_marker(folder) is not None:
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

    api = HfApi(endpoint=_endpoint(), library_name="gpt2cli")
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
    weights = _weight_files(names, where)
    pickles = sorted(n for n in names if _PICKLE_WEIGHTS.fullmatch(n))
    others = sorted(n for n in names if _OTHER_WEIGHTS.fullmatch(n))
    if not weights and pickles:
        raise CheckpointError(
            f"{where} has weights only as {', '.join(pickles)}, not safetensors; gpt2cli never loads pickle "
            "files because unpickling can run arbitrary code: pick a revision or repo with model.safetensors"
        )
    if not weights and others:
        raise CheckpointError(
            f"{where} has weights only as {', '.join(others)}; gpt2cli reads safetensors only: "
            "pick a revision or repo with model.safetensors"
        )
    required = [CONFIG_FILE, *TOKENIZER_FILES]
    missing = [f for f in required if f not in names] + ([] if weights else [SINGLE_WEIGHTS])
    if missing:
        raise ModelNotFoundError(
            f"{where} lacks {', '.join(missing)}; gpt2cli needs config.json, vocab.json, merges.txt and "
            "safetensors weights: pick another repo or --revision"
        )
    return required + weights


def _weight_files(names: set[str], where: str) -> list[str]:
    if SINGLE_WEIGHTS in names:
        return [SINGLE_WEIGHTS]
    shards = sorted(n for n in names if _SHARD.fullmatch(n))
    if not shards:
        return []
    totals = {int(_SHARD.fullmatch(n).group(2)) for n in shards}
    numbers = {int(_SHARD.fullmatch(n).group(1)) for n in shards}
    if len(totals) != 1 or numbers != set(range(1, max(totals) + 1)) or SHARD_INDEX not in names:
        raise ModelNotFoundError(
            f"{where} has an incomplete set of safetensors shards (or no {SHARD_INDEX}); pick another --revision"
        )
    return [SHARD_INDEX, *shards]


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


def _snapshot(ref: HubRef, commit: str, files: list[str], staging: Path, progress: bool) -> None:
    """Fetches exactly `files` of one commit into `staging` (files already there are kept: a resume)."""
    from huggingface_hub import snapshot_download

    with _library_warnings(shown=progress):
        snapshot_download(
            ref.repo_id,
            revision=commit,  # a commit hash: config, tokenizer and weights all come from one revision
            local_dir=staging,
            allow_patterns=files,
            endpoint=_endpoint(),
            library_name="gpt2cli",
            tqdm_class=None if progress else _quiet_tqdm(),
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


# ---------------------------------------------------------------------------------------------
# Errors: huggingface_hub / httpx / OS exceptions -> one-line gpt2cli errors that say what to do
# ---------------------------------------------------------------------------------------------


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
    endpoint = _endpoint() or "https://huggingface.co"
    if isinstance(e, hf["GatedRepoError"]):
        return ModelNotFoundError(
            f"{ref.repo_id} is gated on the Hub; accept its terms on the Hub and set HF_TOKEN, or {_ALTERNATIVES}"
        )
    if isinstance(e, hf["RepositoryNotFoundError"]):
        return ModelNotFoundError(
            f"no model repo {ref.repo_id!r} on the Hub at {endpoint} (or it is private: set HF_TOKEN); "
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
        return DownloadError(
            f"cannot reach the Hub at {endpoint} to download {what}; check the network, or {_ALTERNATIVES}"
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
            f"the Hub at {endpoint} answered HTTP {status} for {what}; try again later, or {_ALTERNATIVES}"
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

"""Model names -> folders: aliases, Hub repo ids, local folders, where downloads live, and what is on disk.

Makes no network request (download.py does); huggingface_hub is never imported here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gpt2cli.errors import ModelNotFoundError, UsageError
from gpt2cli.store.layout import MARKER, TOKENIZER_ONLY, WHOLE_MODEL, read_small_text

ALIASES: dict[str, str] = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}

# The Hub's repo-id rules: letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters.
_REPO_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]", re.ASCII)
_DEFAULT_REVISIONS = (None, "main")
_PROJECT_NAME = re.compile(r"""^name\s*=\s*["']gpt2cli["']""", re.MULTILINE)

@dataclass(frozen=True)
class ModelEntry:
    """One row of `gpt2cli models`: an alias or a downloaded model, and where it lives."""

    name: str
    repo_id: str
    folder: Path
    downloaded: bool
    size_bytes: int  # the folder and any partial download of it
    revision: str | None = None
    commit: str | None = None
    state: str = "no"  # "yes", "no", "tokenizer" (only the tokenizer files), "partial" (a download under way or interrupted)
    partial_bytes: int = 0  # bytes in the hidden staging folder of an unfinished download


@dataclass(frozen=True)
class HubRef:
    """A model on the Hub as the user named it: alias or repo id, pinned revision or the default branch."""

    name: str
    repo_id: str
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        """A revision other than the default branch."""
        return self.revision not in _DEFAULT_REVISIONS

    @property
    def display(self) -> str:
        return f"{self.name}@{self.revision}" if self.pinned else self.name

def list_models(weights_dir: Path | None = None) -> list[ModelEntry]:
    """Every alias, every downloaded model and every partial download, with folder and size; makes no request."""
    root = weights_root(weights_dir)
    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    for alias, repo_id in ALIASES.items():
        folder = model_folder(HubRef(alias, repo_id), root)
        seen.add(folder)
        entries.append(_entry(alias, repo_id, folder))
    others = []
    for folder in _model_subfolders(root):
        marker = read_marker(folder, need=TOKENIZER_ONLY)
        if marker is None or folder in seen:
            continue
        seen.add(folder)
        ref = HubRef(marker["repo_id"], marker["repo_id"], marker.get("revision"))
        others.append(_entry(ref.display, ref.repo_id, folder))
    for staging in _staging_subfolders(root):
        folder = root / staging.name.removeprefix(STAGING_PREFIX)
        if folder in seen:
            continue
        seen.add(folder)
        owner, _, rest = folder.name.partition("--")
        name, _, revision = rest.partition("@")
        repo_id = f"{owner}/{name}"
        others.append(_entry(f"{repo_id}@{revision}" if revision else repo_id, repo_id, folder))
    return entries + sorted(others, key=lambda e: e.name)


STAGING_PREFIX = ".tmp-"


def staging_folder(folder: Path) -> Path:
    """The hidden sibling a download of `folder` is fetched into before it is renamed into place."""
    return folder.parent / f"{STAGING_PREFIX}{folder.name}"


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
        path = _expand(name)
        if path is not None and path_is(path, Path.exists):
            raise ModelNotFoundError(f"{name!r} is a file, not a model folder; pass --model PATH to a GPT-2 model folder")
        raise ModelNotFoundError(f"model folder {name!r} does not exist; pass --model PATH to a GPT-2 model folder")
    if _REPO_ID.fullmatch(name) and len(name) <= 96:
        return HubRef(name, name, revision)
    raise ModelNotFoundError(
        f"unknown model {name!r}: use one of {', '.join(ALIASES)}, an owner/name Hub repo, or a folder path"
    )


def model_folder(ref: HubRef, weights_dir: Path | None = None) -> Path:
    """The folder a Hub model lives in: readable (`openai-community--gpt2`), one per pinned revision."""
    folder = ref.repo_id.replace("/", "--")
    if ref.pinned:
        folder += "@" + _safe_revision(ref.revision)
    return weights_root(weights_dir) / folder


def is_downloaded(folder: Path) -> bool:
    """Whether `folder` holds a finished download of the whole model (its marker and every file it lists)."""
    return read_marker(Path(folder)) is not None

def local_folder(name: str, revision: str | None) -> Path | None:
    """An existing directory named by `name`; a folder always wins over a Hub repo of the same name."""
    if not name.strip():
        raise UsageError("--model must not be empty: give a model name, an owner/name Hub repo or a folder")
    path = _expand(name)
    try:
        if path is None or not path.is_dir():
            return None
    except OSError as e:  # EACCES, ENAMETOOLONG: is_dir() passes over only "no such folder"
        if not _looks_like_path(name):
            return None  # a name or owner/name that is no readable folder here: the Hub's
        raise ModelNotFoundError(
            f"cannot open model folder {name!r} ({e.strerror}); check the path and its permissions, "
            "or pass --model PATH to another GPT-2 model folder"
        ) from None
    if revision is not None:
        raise UsageError(f"--revision applies to Hub models, and {name!r} is a local folder; drop --revision")
    return path


def _expand(name: str) -> Path | None:
    """`name` as a path with ~ expanded; None when it names a home folder that does not exist (~nobody/x)."""
    try:
        return Path(name).expanduser()
    except (RuntimeError, KeyError, ValueError):
        return None


def path_is(path: Path, check) -> bool:
    """check(path) (Path.exists, Path.is_dir), False where the path cannot be looked up at all (a name
    longer than the system allows): no folder is there."""
    try:
        return check(path)
    except OSError:
        return False


def _looks_like_path(name: str) -> bool:
    """`./x`, `/x`, `~/x`, `a/b/c`, `x/`: meant as a folder, never as an owner/name repo id."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name


def _safe_revision(revision: str) -> str:
    """A revision usable in a folder name; a hash suffix keeps `a/b` and `a_b` apart, and long ones
    (a branch name may have hundreds of characters) short enough for a file name with the repo's."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", revision)
    if safe != revision or len(safe) > _MAX_REVISION:
        import hashlib

        safe = safe[:_MAX_REVISION] + "-" + hashlib.sha1(revision.encode()).hexdigest()[:8]
    return safe


_MAX_REVISION = 64  # owner--name (at most 97) + "@" + this + the hash + ".lock" or ".tmp-": under 255


@lru_cache(maxsize=1)
def _checkout_weights() -> Path | None:
    return find_checkout_weights(Path(__file__).resolve().parents[1])  # gpt2cli/, this file being in gpt2cli/store/


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


def offline_mode(offline: bool) -> bool:
    """Offline if asked, or if HF_HUB_OFFLINE is set (read now, not when huggingface_hub was imported)."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def endpoint() -> str | None:
    """$HF_ENDPOINT read at call time (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None

def read_marker(folder: Path, need: str = WHOLE_MODEL) -> dict | None:
    """The marker of a finished download in `folder`, if it is there, well formed, every file it lists
    is present, and it holds `need` (WHOLE_MODEL; or TOKENIZER_ONLY, which a whole model also satisfies).

    A listed file whose size changed (the user edited config.json) still counts as present: gpt2cli
    never replaces a folder the user changed unless asked (`download --force`); see changed_files().
    """
    try:
        marker = json.loads(read_small_text(Path(folder) / MARKER))
        files, holds = marker["files"], marker.get("holds", WHOLE_MODEL)
        if not isinstance(marker["repo_id"], str) or not isinstance(files, dict) or holds not in (WHOLE_MODEL, TOKENIZER_ONLY):
            return None
        if need == WHOLE_MODEL and holds != WHOLE_MODEL:
            return None
        for rel, size in files.items():
            if not _plain_name(rel) or isinstance(size, bool) or not isinstance(size, int):
                return None
            if not (Path(folder) / rel).is_file():
                return None
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return None
    return marker


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def changed_files(folder: Path, marker: dict) -> list[str]:
    """The files a marker lists whose size is no longer the one downloaded (edited by the user, or damaged)."""
    changed = []
    for rel, size in marker["files"].items():
        try:
            if (Path(folder) / rel).stat().st_size != size:
                changed.append(rel)
        except OSError:
            changed.append(rel)
    return changed


def _entry(name: str, repo_id: str, folder: Path) -> ModelEntry:
    marker = read_marker(folder, need=TOKENIZER_ONLY)
    staged = path_is(staging_folder(folder), Path.is_dir)
    partial = folder_size(staging_folder(folder)) if staged else 0
    if marker is not None:
        state = "yes" if marker.get("holds", WHOLE_MODEL) == WHOLE_MODEL else "tokenizer"
    else:
        state = "partial" if staged else "no"
    return ModelEntry(
        name=name,
        repo_id=repo_id,
        folder=folder,
        downloaded=state == "yes",
        size_bytes=folder_size(folder) + partial,
        revision=marker.get("revision") if marker else None,
        commit=marker.get("commit") if marker else None,
        state=state,
        partial_bytes=partial,
    )


def _model_subfolders(root: Path) -> list[Path]:
    """Visible subfolders of the weights root (staging, locks and old copies are hidden)."""
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _staging_subfolders(root: Path) -> list[Path]:
    try:
        # a symlink there is not a download of ours (rm removes only the link): nothing to size or list
        return sorted(p for p in root.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir() and not p.is_symlink())
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

"""A model name -> its folder on disk, downloading it on first use: what every command calls.

A folder on disk is used as it is; a Hub model already downloaded is used with no network request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpt2cli.errors import ModelNotFoundError, UsageError
from gpt2cli.store import download
from gpt2cli.store.hub import local_folder, model_folder, offline_mode, parse_hub_name, read_marker


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
    local = local_folder(name, revision)
    if local is not None:
        return local
    ref = parse_hub_name(name, revision)
    folder = model_folder(ref, weights_dir)
    if not force and read_marker(folder) is not None:
        return folder
    if offline_mode(offline):
        if force:
            raise UsageError(f"cannot re-download {ref.display} in offline mode; drop --force, or go online")
        pin = f" --revision {ref.revision}" if ref.pinned else ""
        raise ModelNotFoundError(
            f"model {ref.display} is not downloaded (looked in {folder}) and offline mode is on; "
            f"run `gpt2cli download {ref.name}{pin}` while online, or pass --model PATH to a model folder"
        )
    return download.download(ref, folder, force=force, progress=progress)


@dataclass(frozen=True)
class Download:
    folder: Path
    fetched: bool  # False: a complete copy was already on disk, and nothing was requested


def download_model(
    name: str,
    *,
    revision: str | None = None,
    weights_dir: Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> Download:
    """Downloads model `name` into the weights folder (again if `force`).

    Without `force` a complete copy on disk is kept as it is and no request is made.
    """
    if local_folder(name, revision) is not None:
        raise UsageError(f"{name!r} is a local folder; there is nothing to download (use it with --model {name})")
    folder = model_folder(parse_hub_name(name, revision), weights_dir)
    already = not force and read_marker(folder) is not None
    folder = resolve_model(name, revision=revision, weights_dir=weights_dir, force=force, progress=progress)
    return Download(folder, fetched=not already)

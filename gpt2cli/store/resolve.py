"""A model name -> its folder on disk, downloading it on first use: what every command calls.

A folder on disk is used as it is; a Hub model already downloaded is used with no network request.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gpt2cli.errors import ModelNotFoundError, UsageError
from gpt2cli.store import download
from gpt2cli.store.hub import changed_files, local_folder, model_folder, offline_mode, parse_hub_name, read_marker
from gpt2cli.store.layout import TOKENIZER_ONLY, WHOLE_MODEL


def resolve_model(
    name: str,
    *,
    revision: str | None = None,
    weights_dir: Path | None = None,
    offline: bool = False,
    force: bool = False,
    progress: bool = False,
    need: str = WHOLE_MODEL,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Returns the folder of model `name`, downloading it on first use.

    `name` is an existing folder (returned as is), an alias from ALIASES or an owner/name Hub repo.
    A model already on disk is used without any network request, so runs are fast and work offline;
    one whose files the user changed is used as it is (`warn` hears about it), never replaced.
    `need` TOKENIZER_ONLY fetches only vocab.json and merges.txt when the model is not on disk.
    """
    local = local_folder(name, revision)
    if local is not None:
        return local
    ref = parse_hub_name(name, revision)
    folder = model_folder(ref, weights_dir)
    marker = None if force else read_marker(folder, need=need)
    if marker is not None:
        changed = changed_files(folder, marker)
        pin = f" --revision {shlex.quote(ref.revision)}" if ref.pinned else ""
        if changed and warn is not None:
            warn(
                f"{', '.join(changed)} in {folder} differ from the files downloaded from the Hub; using them as they "
                f"are (`gpt2cli download {ref.name}{pin} --force` restores the Hub's files and keeps files you added)"
            )
        return folder
    if offline_mode(offline):
        pin = f" --revision {shlex.quote(ref.revision)}" if ref.pinned else ""
        if force:
            raise UsageError(f"cannot re-download {ref.display} in offline mode; drop --force, or go online")
        raise ModelNotFoundError(
            f"model {ref.display} is not downloaded (looked in {folder}) and offline mode is on; "
            f"run `gpt2cli download {ref.name}{pin}` while online, or pass --model PATH to a model folder"
        )
    holds = TOKENIZER_ONLY if need == TOKENIZER_ONLY else WHOLE_MODEL
    return download.download(ref, folder, force=force, progress=progress, holds=holds)


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
    warn: Callable[[str], None] | None = None,
) -> Download:
    """Downloads model `name` into the weights folder (again if `force`).

    Without `force` a complete copy on disk is kept as it is and no request is made.
    """
    if local_folder(name, revision) is not None:
        raise UsageError(f"{name!r} is a local folder; there is nothing to download (use it with --model {name})")
    folder = model_folder(parse_hub_name(name, revision), weights_dir)
    already = not force and read_marker(folder) is not None
    if not (already or force) and offline_mode(False):  # (--force offline is refused by resolve_model)
        raise UsageError(f"cannot download {name}: offline mode is on (HF_HUB_OFFLINE); unset HF_HUB_OFFLINE to download it")
    folder = resolve_model(name, revision=revision, weights_dir=weights_dir, force=force, progress=progress, warn=warn)
    return Download(folder, fetched=not already)

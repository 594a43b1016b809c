"""`gpt2cli rm`: deletes what gpt2cli downloaded for a model, and nothing else.

The files a folder's marker lists and the marker itself go; files the user added stay (and so does
the folder, then). A folder without a marker was not made by gpt2cli and is refused; so is a local
folder named by path. A partial download (the hidden staging folder) goes too.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from gpt2cli.errors import ModelNotFoundError, UsageError
from gpt2cli.store.download import model_lock
from gpt2cli.store.hub import folder_size, local_folder, model_folder, parse_hub_name, path_is, staging_folder
from gpt2cli.store.layout import MARKER, read_small_text


@dataclass(frozen=True)
class Plan:
    """What `rm` would delete: the listed files of the folder, and the staging folder if any."""

    name: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    staging: Path | None = None
    kept: list[str] = field(default_factory=list)  # entries of the folder gpt2cli did not download
    size_bytes: int = 0


def plan_removal(name: str, *, revision: str | None = None, weights_dir: Path | None = None) -> Plan:
    """What removing model `name` deletes; refuses local folders and folders gpt2cli did not make."""
    if local_folder(name, revision) is not None:
        raise UsageError(
            f"{name!r} is a local folder, not a downloaded model; gpt2cli removes only what it downloaded: "
            "delete the folder yourself if you mean to"
        )
    ref = parse_hub_name(name, revision)
    folder = model_folder(ref, weights_dir)
    staging = staging_folder(folder)
    # a symlink in the staging folder's place is not ours: rm removes the link, never what it points to
    staging = staging if path_is(staging, Path.is_dir) or path_is(staging, Path.is_symlink) else None
    files: list[Path] = []
    kept: list[str] = []
    if path_is(folder, Path.exists):
        listed = _listed_files(folder)
        if listed is None:
            raise UsageError(
                f"{folder} was not downloaded by gpt2cli (it has no readable {MARKER}), so it is left alone; delete it "
                "yourself if you mean to"
            )
        files = [folder / n for n in listed if (folder / n).is_file()] + [folder / MARKER]
        kept = sorted(p.name for p in folder.iterdir() if p.name not in listed and p.name != MARKER)
    if not files and staging is None:
        raise ModelNotFoundError(
            f"model {ref.display} is not downloaded (looked in {folder}), so there is nothing to remove; "
            "check the name: `gpt2cli models` lists the downloaded ones"
        )
    size = sum(_size(p) for p in files) + (folder_size(staging) if staging and not staging.is_symlink() else 0)
    return Plan(ref.display, folder, files, staging, kept, size)


def remove(plan: Plan) -> None:
    """Deletes what `plan` lists, under the model's download lock (a running download is not cut under it)."""
    from gpt2cli.store.hub import HubRef

    root = plan.folder.parent
    with model_lock(root, plan.folder.name, HubRef(plan.name, plan.name), progress=False, wait=False):
        marker = plan.folder / MARKER
        if marker in plan.files:
            marker.unlink(missing_ok=True)  # first: a half-removed folder must not look downloaded
        for path in plan.files:
            path.unlink(missing_ok=True)
        if plan.files and not plan.kept:
            try:
                os.rmdir(plan.folder)
            except OSError:
                pass  # something appeared meanwhile: it is the user's, keep it
        if plan.staging is not None:
            if plan.staging.is_symlink():
                plan.staging.unlink()
            else:
                shutil.rmtree(plan.staging)


def _listed_files(folder: Path) -> list[str] | None:
    """The file names the folder's marker lists (None: no readable marker, so not gpt2cli's)."""
    try:
        files = json.loads(read_small_text(folder / MARKER))["files"]
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        return None
    if not isinstance(files, dict):
        return None
    return [n for n in files if isinstance(n, str) and n and "/" not in n and n not in (".", "..")]


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0

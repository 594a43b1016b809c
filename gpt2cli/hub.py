"""Model name / repo id / local path -> a folder on disk holding the model's files."""

from __future__ import annotations

from pathlib import Path

from gpt2cli.errors import ModelNotFoundError


def resolve_model(
    name: str,
    *,
    revision: str | None = None,
    weights_dir: Path | None = None,
    offline: bool = False,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Returns the folder of model `name` (a local folder for now; Hub names come with the Hub issue)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise ModelNotFoundError(f"model {name!r} not found: no such folder; pass --model PATH to a GPT-2 model folder")

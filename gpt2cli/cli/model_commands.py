"""download, models and rm: the models on disk."""

from __future__ import annotations

from typing import Annotated

import typer

from gpt2cli.cli import render
from gpt2cli.cli.options import (
    JsonOpt, RevisionOpt, WeightsDirOpt,
)  # fmt: skip
from gpt2cli.cli.output import Writer, note, results_only, stderr_is_tty
from gpt2cli.errors import UsageError
from gpt2cli.cli.common import command_group, examples

commands = command_group()


@commands.command(
    epilog=examples(
        "gpt2cli download gpt2",
        "gpt2cli download openai-community/gpt2-medium --revision main",
        "gpt2cli download distilgpt2 --weights-dir ~/models --force",
        "gpt2cli generate -m \"$(gpt2cli download gpt2-large)\" \"Hello\"",
    ),
)
def download(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="A name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2) or Hub repo owner/name.")
    ],
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Download again even if the model is on disk (restores files you edited, keeps files you added)."
        ),
    ] = False,
) -> None:
    """Download a model's config, tokenizer and safetensors weights from the Hub; print its folder."""
    from gpt2cli.store.hub import folder_size
    from gpt2cli.store.resolve import download_model

    _check_model(model, revision)
    with results_only():
        done = download_model(
            model, revision=revision, weights_dir=weights_dir, force=force, progress=stderr_is_tty(), warn=note
        )
    if done.fetched:
        note(f"downloaded {model} ({render.human_size(folder_size(done.folder))})")
    else:
        note(f"{model} is already downloaded (--force downloads it again)")
    out = Writer()
    out.write(f"{done.folder}\n")
    out.end()


@commands.command(
    epilog=examples(
        "gpt2cli models",
        "gpt2cli models --weights-dir ~/models",
        "gpt2cli models --json | jq -r 'select(.downloaded) | .folder'",
    ),
)
def models(weights_dir: WeightsDirOpt = None, json_out: JsonOpt = False) -> None:
    """List the model names and every downloaded model: downloaded or not, size on disk, folder."""
    from gpt2cli.store.hub import list_models

    entries = list_models(weights_dir)
    out = Writer()
    if json_out:
        for e in entries:
            out.json_line(render.model_record(e))
    else:
        out.write(render.models_table(entries))
    out.end()


@commands.command(
    epilog=examples(
        "gpt2cli rm gpt2-medium",
        "gpt2cli rm someone/tiny-gpt2 --revision v1 -y",
    ),
)
def rm(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A downloaded model: name or Hub repo owner/name.")],
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a downloaded model (or its partial download): only the files gpt2cli downloaded; files you
    added stay, and folders gpt2cli did not make are never touched."""
    import sys

    from gpt2cli.store.remove import plan_removal, remove

    _check_model(model, revision)
    plan = plan_removal(model, revision=revision, weights_dir=weights_dir)
    what = render.removal_summary(plan)
    if not yes:
        if not (sys.stdin is not None and sys.stdin.isatty()):
            raise UsageError(f"would delete {what}; pass -y (--yes) to confirm when stdin is not a terminal")
        if not typer.confirm(f"Delete {what}?", default=False, err=True):
            note("nothing removed")
            raise typer.Exit(1)
    remove(plan)
    kept = f"; kept your files in {plan.folder}: {', '.join(plan.kept)}" if plan.kept else ""
    note(f"removed {what}{kept}")


def _check_model(model: str, revision: str | None) -> None:
    """download's and rm's MODEL, said in their terms: they take a model name or an owner/name Hub repo
    (the store's messages are generate's, naming --model and folders)."""
    from gpt2cli.errors import ModelNotFoundError
    from gpt2cli.store.hub import ALIASES, local_folder, parse_hub_name

    if not model.strip():
        raise UsageError("MODEL must not be empty: give a model name or an owner/name Hub repo")
    if local_folder(model, revision) is not None:
        return  # each command says what it does not do with a folder
    try:
        parse_hub_name(model, revision)
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"MODEL must be a model name ({', '.join(ALIASES)}) or an owner/name Hub repo, got {model!r}"
        ) from None

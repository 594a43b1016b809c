"""What the commands share: the help's look, the examples epilog, and finding and loading a model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from gpt2cli.cli import render
from gpt2cli.cli.output import note, results_only, stderr_is_tty


def command_group() -> typer.Typer:
    """A group of commands that app.py merges into the top level (each command module has one)."""
    return typer.Typer(rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})


def examples(*lines: str) -> str:
    """A command's "Examples" epilog: one command per line, never rewrapped (click's \\b)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def options_given(ctx: typer.Context, names) -> list[str]:
    """Of these parameters, the ones the user gave (on the command line or from the environment), as their
    long options (top_k -> --top-k): for refusing options that would silently do nothing."""
    # compared by name: typer may carry its own copy of click, with its own ParameterSource
    return [
        "--" + name.replace("_", "-") for name in names
        if getattr(ctx.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")
    ]  # fmt: skip


def model_folder(
    model: str, revision: Optional[str], weights_dir: Optional[Path], offline: bool, tokenizer_only: bool = False
) -> Path:
    """The model's folder on disk, downloading it on first use (progress bars only on a terminal);
    `tokenizer_only`: a model not on disk brings only its tokenizer files."""
    from gpt2cli.store.layout import TOKENIZER_ONLY, WHOLE_MODEL
    from gpt2cli.store.resolve import resolve_model

    with results_only():
        return resolve_model(
            model, revision=revision, weights_dir=weights_dir, offline=offline, progress=stderr_is_tty(),
            need=TOKENIZER_ONLY if tokenizer_only else WHOLE_MODEL, warn=note,
        )  # fmt: skip


def open_session(model: str, revision: Optional[str], weights_dir: Optional[Path], offline: bool):
    """The model's Session: resolved to a folder (downloading on first use), weights and tokenizer loaded."""
    from gpt2cli.session import Session

    return Session.open(model_folder(model, revision, weights_dir, offline))


def show_stats(prompt_len: int, generated: int, started: float, first_token: Optional[float]) -> None:
    elapsed = time.perf_counter() - started
    rate = generated / elapsed if elapsed > 0 else float("inf")
    ttft = f", first token after {first_token - started:.2f} s" if first_token else ""
    note(f"{render.count(prompt_len, 'prompt token')}, {generated} new in {elapsed:.2f} s ({rate:.1f} tokens/s{ttft})")

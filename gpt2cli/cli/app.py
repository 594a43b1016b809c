"""The gpt2cli command line: the Typer app, its --version, and the commands of text_commands.py
(generate, score, tokenize), decoding_commands.py (beam, compare), batch_command.py (batch) and
model_commands.py (download, models, rm). Each command turns its options into one call on a Session
(or the model store) and hands the result to a renderer; process.py runs the app.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gpt2cli.cli import batch_command, decoding_commands, model_commands, text_commands

# typer labels each argument in help with its Python type ("PROMPT <str>"): noise for users.
if hasattr(typer.core, "TyperArgument") and hasattr(typer.core.TyperArgument, "display_type_rich"):
    typer.core.TyperArgument.display_type_rich = lambda self, ctx: None

# Plain click help (rich_markup_mode=None): rich's boxed tables leave descriptions ~20 columns wide
# in an 80-column terminal; click's two-column list keeps them ~45 wide and reads the same when piped.
app = typer.Typer(
    name="gpt2cli",
    help="Run GPT-2 checkpoints on the CPU with a NumPy engine: generate, compare decodings, score text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from gpt2cli import __version__

        typer.echo(f"gpt2cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


for group in (text_commands, decoding_commands, batch_command, model_commands):
    app.add_typer(group.commands)

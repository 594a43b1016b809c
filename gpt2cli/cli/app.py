"""The commands: each turns its options into one call on a Session (or the model store) and hands
the result to a renderer. The process around them (signals, exit codes, errors) is process.py's.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt2cli.cli import render
from gpt2cli.cli.options import (
    AllowSpecialOpt, EarlyStopping, EarlyStoppingOpt, JsonOpt, MaxTokensOpt, ModelOpt, OfflineOpt, OverflowOpt,
    PromptArg, RevisionOpt, SeedOpt, stop_strings, TemperatureOpt, TextArg, TopKOpt, TopPOpt, WeightsDirOpt,
)  # fmt: skip
from gpt2cli.cli.output import Writer, note, prefill_progress, results_only, stderr_is_tty
from gpt2cli.cli.prompt import read_prompt
from gpt2cli.decoding.generate import Overflow
from gpt2cli.errors import UsageError

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


def examples(*lines: str) -> str:
    """A command's "Examples" epilog: one command per line, never rewrapped (click's \\b)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def model_folder(model: str, revision: Optional[str], weights_dir: Optional[Path], offline: bool) -> Path:
    """The model's folder on disk, downloading it on first use (progress bars only on a terminal)."""
    from gpt2cli.store.resolve import resolve_model

    with results_only():
        return resolve_model(model, revision=revision, weights_dir=weights_dir, offline=offline, progress=stderr_is_tty())


def open_session(model: str, revision: Optional[str], weights_dir: Optional[Path], offline: bool):
    """The model's Session: resolved to a folder (downloading on first use), weights and tokenizer loaded."""
    from gpt2cli.session import Session

    return Session.open(model_folder(model, revision, weights_dir, offline))


def show_stats(prompt_len: int, generated: int, started: float, first_token: Optional[float]) -> None:
    elapsed = time.perf_counter() - started
    rate = generated / elapsed if elapsed > 0 else float("inf")
    ttft = f", first token after {first_token - started:.2f} s" if first_token else ""
    note(f"{render.count(prompt_len, 'prompt token')}, {generated} new in {elapsed:.2f} s ({rate:.1f} tokens/s{ttft})")


@app.command(
    epilog=examples(
        "gpt2cli generate \"The meaning of life is\"",
        "gpt2cli generate -m ./my-finetuned-gpt2 -n 50 \"Hello\"",
        "echo \"Once upon\" | gpt2cli generate -n 20 --seed 1",
        "gpt2cli generate -t 0 -n 50 \"def fib(n):\" --stop $'\\n\\n'",
        "gpt2cli generate -N 3 --json \"Hello\" | jq .text",
    ),
)
def generate(
    prompt: PromptArg = None,
    model: ModelOpt = "gpt2",
    max_tokens: MaxTokensOpt = 100,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    stop: Annotated[
        Optional[list[str]],
        typer.Option(
            "--stop", metavar="TEXT",
            help="End the output before this text (repeatable). \\n, \\t and \\\\ are read as newline, tab and "
            "backslash: --stop '\\n\\n' ends at a blank line; write a literal backslash-n as '\\\\n'.",
        ),
    ] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Keep going past <|endoftext|>.")] = False,
    echo: Annotated[bool, typer.Option("--echo", help="Print the prompt before the continuation.")] = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print the text only when it is complete.")] = False,
    num_samples: Annotated[
        int, typer.Option("-N", "--num-samples", max=256, metavar="N", help="Samples decoded together, printed one after another.")
    ] = 1,
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    on_overflow: OverflowOpt = Overflow.SLIDE,
    stats: Annotated[
        Optional[bool], typer.Option("--stats/--no-stats", help="Timing on stderr (default: when stderr is a terminal).")
    ] = None,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Continue a prompt, streaming the new text to stdout as it is generated."""
    from gpt2cli.decoding.generate import check_options
    from gpt2cli.decoding.sampling import Sampler, SamplingOptions
    from gpt2cli.decoding.text import InOrder

    check_options(max_tokens, num_samples, on_overflow)  # before the model loads, so a typo fails at once
    stops = stop_strings(stop)
    sampler = Sampler(SamplingOptions(temperature, top_k, top_p), seed)
    text = read_prompt(prompt)
    session = open_session(model, revision, weights_dir, offline)
    ids = session.prompt_ids(text, allow_special)
    run = session.generate(
        ids, sampler, max_tokens, num_samples=num_samples, ignore_eos=ignore_eos, logprobs=json_out,
        on_overflow=on_overflow, stops=stops, warn=note, progress=prefill_progress(),
    )  # fmt: skip
    out = Writer()
    stream = not (no_stream or json_out)
    shown = InOrder(run.rows, lambda i: render.sample_separator(i, num_samples))
    started, first = time.perf_counter(), None
    if echo and not json_out:
        out.write(text)
    for _ in run:
        first = first or time.perf_counter()
        if stream:
            out.write(shown.take())
    if json_out:
        for row in run.rows:
            out.json_line(render.completion_record(row, run.prompt_tokens, prompt=text if echo else None))
    else:
        out.write(shown.rest())
    out.end()
    if stats if stats is not None else stderr_is_tty():
        show_stats(run.prompt_tokens, sum(len(r.tokens) for r in run.rows), started, first)


@app.command(
    epilog=examples(
        "gpt2cli score \"The cat sat on the mat.\"",
        "cat essay.txt | gpt2cli score --json | jq .perplexity",
    ),
)
def score(
    text: TextArg = None,
    model: ModelOpt = "gpt2",
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Per-token log-probabilities of TEXT, with <|endoftext|> prepended as context."""
    body = read_prompt(text)
    session = open_session(model, revision, weights_dir, offline)
    scored = session.score(session.tokenizer.encode(body, allow_special=allow_special), prefill_progress("scoring"))
    out = Writer()
    if json_out:
        out.json_line(render.score_record(scored))
    else:
        out.write(render.score_table(scored, session.tokenizer))
    out.end()


@app.command(
    epilog=examples(
        "gpt2cli tokenize \"Hello world\"",
        "echo 'naïve café' | gpt2cli tokenize --json",
    ),
)
def tokenize(
    text: TextArg = None,
    model: ModelOpt = "gpt2",
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Print the token ids of TEXT (space-separated), or with --json each id with its bytes."""
    from gpt2cli.store.tokenizer import Tokenizer

    body = read_prompt(text)
    tokenizer = Tokenizer.from_folder(model_folder(model, revision, weights_dir, offline))
    ids = tokenizer.encode(body, allow_special=allow_special)
    out = Writer()
    if json_out:
        out.json_line(render.tokens_record(ids, tokenizer))
    else:
        out.write(" ".join(map(str, ids)) + "\n")
    out.end()


@app.command(
    epilog=examples(
        "gpt2cli beam \"The meaning of life is\"",
        "gpt2cli beam -b 8 -r 3 --length-penalty 2 --no-repeat-ngram 3 \"Once upon a time\"",
        "echo \"Hello\" | gpt2cli beam --no-compare > best.txt",
        "gpt2cli beam --json \"Hello\" | jq '.beams[].score'",
    ),
)
def beam(
    prompt: PromptArg = None,
    model: ModelOpt = "gpt2",
    max_tokens: MaxTokensOpt = 40,
    beams: Annotated[int, typer.Option("-b", "--beams", max=256, metavar="B", help="Beams searched together (1 = greedy).")] = 4,
    num_return: Annotated[
        Optional[int], typer.Option("-r", "--num-return", metavar="R", help="Best hypotheses to show, 1 to --beams; default: all of them.")
    ] = None,
    length_penalty: Annotated[
        float,
        typer.Option("--length-penalty", metavar="X", help="Score = logprob / length ** this; > 0 favours longer hypotheses."),
    ] = 1.0,
    early_stopping: EarlyStoppingOpt = EarlyStopping.FALSE,
    no_repeat_ngram: Annotated[
        int, typer.Option("--no-repeat-ngram", metavar="N", help="No n-gram of this size appears twice (prompt included); 0 = off.")
    ] = 0,
    compare: Annotated[
        bool,
        typer.Option("--compare/--no-compare", help="Also show greedy decoding and one seeded sample."),
    ] = True,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = 50,
    seed: Annotated[int, typer.Option("--seed", min=0, metavar="SEED", help="Seed of the comparison sample.")] = 0,
    width: Annotated[
        Optional[int], typer.Option("--width", metavar="COLUMNS", help="Table width in columns; default: the terminal's (or $COLUMNS).")
    ] = None,
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Beam search, step for step as transformers does it. On a terminal: a table of every beam with
    greedy and a sample beside it; piped: the best beam's text only; --json: everything."""
    from gpt2cli.decoding.beam import validate_options
    from gpt2cli.decoding.sampling import Sampler, SamplingOptions

    options = dict(
        num_beams=beams, num_return=beams if num_return is None else num_return, max_new_tokens=max_tokens,
        no_repeat_ngram_size=no_repeat_ngram, early_stopping=early_stopping.value_for_search,
        length_penalty=length_penalty,
    )  # fmt: skip
    validate_options(**options)  # before the model loads, so a typo fails at once
    if width is not None and width < 20:
        raise UsageError(f"--width must be at least 20 columns, got {width}")
    sampler = Sampler(SamplingOptions(temperature, top_k, 1.0), seed)  # checks --temperature, --top-k
    text = read_prompt(prompt)
    session = open_session(model, revision, weights_dir, offline)
    ids = session.prompt_ids(text, allow_special)
    out = Writer()
    table = out.is_tty and not json_out
    found = session.beam(ids, progress=prefill_progress(), **options)
    if not (json_out or table):
        out.write(found[0].text)  # piped: only the best beam, ready for the next program
        out.end()
        return
    greedy = sample = None
    if compare:
        greedy = session.decode_one(ids, Sampler(SamplingOptions(0.0, 0, 1.0)), max_tokens, length_penalty)
        sample = session.decode_one(ids, sampler, max_tokens, length_penalty)
    if json_out:
        result = {"prompt_tokens": len(ids), "beams": [render.decoded_record(d) for d in found]}
        if compare:
            result |= {"greedy": render.decoded_record(greedy), "sample": render.decoded_record(sample)}
        out.json_line(result)
    else:
        out.write(render.beam_table(text, len(ids), found, width or shutil.get_terminal_size().columns, greedy, sample))
    out.end()


@app.command(
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
    force: Annotated[bool, typer.Option("--force", help="Download again even if the model is already on disk.")] = False,
) -> None:
    """Download a model's config, tokenizer and safetensors weights from the Hub; print its folder."""
    from gpt2cli.store.hub import folder_size
    from gpt2cli.store.resolve import download_model

    with results_only():
        done = download_model(model, revision=revision, weights_dir=weights_dir, force=force, progress=stderr_is_tty())
    if done.fetched:
        note(f"downloaded {model} ({render.human_size(folder_size(done.folder))})")
    else:
        note(f"{model} is already downloaded (--force downloads it again)")
    out = Writer()
    out.write(f"{done.folder}\n")
    out.end()


@app.command(
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

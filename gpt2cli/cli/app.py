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
    NoRepeatNgramOpt, PromptArg, RepetitionPenaltyOpt, RevisionOpt, SeedOpt, stop_strings, TemperatureOpt, TextArg, TopKOpt,
    TopPOpt, WeightsDirOpt,
)  # fmt: skip
from gpt2cli.cli.output import ProgressLine, Writer, note, prefill_progress, results_only, stderr_is_tty
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
    temperature: Annotated[
        Optional[float], typer.Option("-t", "--temperature", metavar="T", help="Sampling temperature; 0 = greedy (default 1.0).")
    ] = None,
    top_k: Annotated[
        Optional[int],
        typer.Option(
            "-k", "--top-k", metavar="K",
            help="Sample among the k most likely tokens, 0 = off (default 50); with --penalty-alpha, the "
            "candidates contrastive search compares (default 4).",
        ),
    ] = None,  # fmt: skip
    top_p: TopPOpt = 1.0,
    min_p: Annotated[
        float, typer.Option("--min-p", metavar="P", help="Drop tokens less likely than this times the top token; 0 = off.")
    ] = 0.0,
    typical_p: Annotated[
        float, typer.Option("--typical-p", metavar="P", help="Typical sampling: keep the most typical tokens up to this mass; 1 = off.")
    ] = 1.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    no_repeat_ngram: NoRepeatNgramOpt = 0,
    penalty_alpha: Annotated[
        Optional[float],
        typer.Option(
            "--penalty-alpha", metavar="A",
            help="Contrastive search (deterministic): each step picks among the -k most likely tokens by "
            "(1 - A) * probability - A * similarity to the text so far.",
        ),
    ] = None,
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
    from gpt2cli.decoding.text import InOrder
    from gpt2cli.session import Request

    request = Request(
        max_tokens, temperature, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram, penalty_alpha,
        seed, stop_strings(stop), ignore_eos, num_samples, on_overflow,
    ).check()  # before the model loads, so a typo fails at once
    text = read_prompt(prompt)
    session = open_session(model, revision, weights_dir, offline)
    ids = session.prompt_ids(text, allow_special)
    run = session.run(ids, request, logprobs=json_out, warn=note, progress=prefill_progress())
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
        "gpt2cli score --stride 512 --json < book.txt | jq .perplexity",
    ),
)
def score(
    text: TextArg = None,
    model: ModelOpt = "gpt2",
    stride: Annotated[
        Optional[int],
        typer.Option(
            "--stride", metavar="S",
            help="Score text of any length: windows of the context's length every STRIDE tokens, each token scored "
            "once with at least context - STRIDE tokens before it (transformers' sliding-window perplexity).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Per-token log-probabilities of TEXT, with <|endoftext|> prepended as context."""
    body = read_prompt(text)
    session = open_session(model, revision, weights_dir, offline)
    ids = session.tokenizer.encode(body, allow_special=allow_special)
    if stride is None:
        scored = session.score(ids, prefill_progress("scoring"))
    else:
        windows = ProgressLine("scoring", unit="window") if stderr_is_tty() else None
        scored = session.score_strided(ids, stride, windows)
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
    tokenizer = Tokenizer.from_folder(model_folder(model, revision, weights_dir, offline, tokenizer_only=True))
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
        "gpt2cli beam -b 6 --groups 3 --diversity-penalty 1.0 \"Once upon a time\"",
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
    no_repeat_ngram: NoRepeatNgramOpt = 0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    groups: Annotated[
        int, typer.Option("--groups", metavar="G", help="Diverse beam search: groups of beams that avoid each other's tokens (divides --beams).")
    ] = 1,
    diversity_penalty: Annotated[
        float,
        typer.Option("--diversity-penalty", metavar="F", help="With --groups > 1: cost of a token per earlier group that chose it this step (> 0)."),
    ] = 0.0,
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
    from gpt2cli.decoding.group_beam import validate_group_options
    from gpt2cli.decoding.sampling import Sampler, SamplingOptions

    options = dict(
        num_beams=beams, num_return=beams if num_return is None else num_return, max_new_tokens=max_tokens,
        no_repeat_ngram_size=no_repeat_ngram, early_stopping=early_stopping.value_for_search,
        length_penalty=length_penalty, repetition_penalty=repetition_penalty,
    )  # fmt: skip
    validate_options(**options)  # before the model loads, so a typo fails at once
    if groups != 1 or diversity_penalty != 0.0:
        if groups == 1:
            raise UsageError("--diversity-penalty needs --groups > 1; add --groups (a divisor of --beams) or drop it")
        validate_group_options(num_beams=beams, num_groups=groups, diversity_penalty=diversity_penalty)
        options |= dict(num_groups=groups, diversity_penalty=diversity_penalty)
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
        "gpt2cli compare \"The meaning of life is\"",
        "gpt2cli compare -n 60 -s greedy -s contrastive:alpha=0.6,k=4 -s top-p:p=0.92,temperature=0.7 \"Once upon\"",
        "gpt2cli compare --json \"Hello\" | jq '.rows[] | [.name, .rep_2]'",
        "gpt2cli compare --list",
    ),
)
def compare(
    prompt: PromptArg = None,
    model: ModelOpt = "gpt2",
    max_tokens: MaxTokensOpt = 40,
    strategy: Annotated[
        Optional[list[str]],
        typer.Option("-s", "--strategy", metavar="SPEC", help="A decoding as NAME or NAME:key=value,... (repeatable); see --list."),
    ] = None,
    list_strategies: Annotated[bool, typer.Option("--list", help="List the decodings and their settings.")] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, metavar="SEED", help="Seed of the sampled rows (the table is reproducible).")] = 0,
    width: Annotated[
        Optional[int], typer.Option("--width", metavar="COLUMNS", help="Table width in columns; default: the terminal's (or $COLUMNS).")
    ] = None,
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    on_overflow: OverflowOpt = Overflow.SLIDE,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Several decodings of one prompt side by side, with the numbers that say which one repeats (rep-2,
    rep-4, distinct-2) and how likely each is (mean log-probability under the model)."""
    from gpt2cli.decoding import strategies
    from gpt2cli.decoding.generate import check_options, fit_prompt

    out = Writer()
    if list_strategies:
        out.write(render.strategies_list())
        out.end()
        return
    chosen = [strategies.parse(spec).check() for spec in (strategy or strategies.DEFAULT_SET)]
    check_options(max_tokens, 1, on_overflow)
    if width is not None and width < 20:
        raise UsageError(f"--width must be at least 20 columns, got {width}")
    text = read_prompt(prompt)
    session = open_session(model, revision, weights_dir, offline)
    # Every row sees the same context, and beams do not slide: a prompt that does not fit is cut.
    mode = Overflow.TRUNCATE if on_overflow is Overflow.SLIDE else on_overflow
    ids = fit_prompt(session.prompt_ids(text, allow_special), session.model.config.n_positions, max_tokens, mode, note)
    table = out.is_tty and not json_out
    progress = ProgressLine("comparing", delay=0.0, unit="decoding") if stderr_is_tty() else None
    rows = []
    for i, chosen_strategy in enumerate(chosen):
        if progress is not None:
            progress(i, len(chosen))
        rows.append(session.compare(ids, chosen_strategy, max_tokens, seed))
        if not (json_out or table):  # piped: each row as it finishes
            out.write(f"{render.compared_heading(rows[-1])}\n{rows[-1].text}\n")
    if progress is not None:
        progress(len(chosen), len(chosen))
    if json_out:
        out.json_line({"prompt_tokens": len(ids), "rows": [render.compared_record(r) for r in rows]})
    elif table:
        out.write(render.compare_table(text, len(ids), rows, width or shutil.get_terminal_size().columns))
    out.end()


@app.command(
    epilog=examples(
        "gpt2cli batch prompts.jsonl -o results.jsonl -n 64",
        "gpt2cli batch --lines prompts.txt -t 0 -n 20 | jq -r .text",
        "gpt2cli batch --score texts.jsonl -o scores.jsonl",
        "(rerun the same command after an interruption: records already in -o FILE are skipped)",
    ),
)
def batch(
    source: Annotated[str, typer.Argument(metavar="INPUT", help="JSON Lines file of records (or - for stdin).")],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", metavar="FILE", help="Append results to this file; a rerun skips the ids it holds.")
    ] = None,
    lines: Annotated[bool, typer.Option("--lines", help="INPUT is plain text: one prompt per line, ids are line numbers.")] = False,
    score_texts: Annotated[bool, typer.Option("--score", help="Records hold `text` to score, as `gpt2cli score --json`.")] = False,
    stride: Annotated[Optional[int], typer.Option("--stride", metavar="S", help="With --score: as score's --stride.")] = None,
    ordered: Annotated[bool, typer.Option("--ordered", help="Write results in input order (they already are: records run in order).")] = False,
    on_ray: Annotated[bool, typer.Option("--ray", help="Run on a Ray cluster (pip install \"gpt2cli[ray]\").")] = False,
    ray_address: Annotated[
        Optional[str],
        typer.Option("--ray-address", metavar="ADDRESS", help="With --ray: the cluster (auto, ray://host:port); default $RAY_ADDRESS, else a local Ray."),
    ] = None,
    ray_actors: Annotated[
        Optional[int], typer.Option("--ray-actors", min=1, metavar="N", help="With --ray: actors decoding (default: the cluster's CPUs).")
    ] = None,
    model: ModelOpt = "gpt2",
    max_tokens: MaxTokensOpt = 100,
    temperature: Annotated[
        Optional[float], typer.Option("-t", "--temperature", metavar="T", help="Sampling temperature; 0 = greedy (default 1.0).")
    ] = None,
    top_k: Annotated[Optional[int], typer.Option("-k", "--top-k", metavar="K", help="As generate's -k (default 50; 4 with --penalty-alpha).")] = None,
    top_p: TopPOpt = 1.0,
    min_p: Annotated[float, typer.Option("--min-p", metavar="P", help="As generate's --min-p; 0 = off.")] = 0.0,
    typical_p: Annotated[float, typer.Option("--typical-p", metavar="P", help="As generate's --typical-p; 1 = off.")] = 1.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    no_repeat_ngram: NoRepeatNgramOpt = 0,
    penalty_alpha: Annotated[Optional[float], typer.Option("--penalty-alpha", metavar="A", help="As generate's: contrastive search.")] = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, metavar="SEED", help="A record without its own seed samples with one derived from this and its id.")
    ] = 0,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", metavar="TEXT", help="End each output before this text (repeatable).")] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Keep going past <|endoftext|>.")] = False,
    allow_special: AllowSpecialOpt = False,
    on_overflow: OverflowOpt = Overflow.SLIDE,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Run many prompts (or texts to score) from a file: one JSON result per record, written as each
    finishes; resumable with -o. Each record may override any decoding option (see README)."""
    import sys

    from gpt2cli.batch.local import run_records
    from gpt2cli.batch.records import Output, read_records
    from gpt2cli.session import Request

    defaults = Request(
        max_tokens, temperature, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram, penalty_alpha, None, stop_strings(stop), ignore_eos, 1,
        on_overflow,
    ).check()  # fmt: skip
    if stride is not None and not score_texts:
        raise UsageError("--stride goes with --score (it says how long texts are scored); add --score or drop --stride")
    if (ray_address or ray_actors) and not on_ray:
        raise UsageError("--ray-address and --ray-actors go with --ray; add --ray or drop them")
    if on_ray:
        from gpt2cli.batch.ray import import_ray

        import_ray()  # before anything else, so a missing Ray is said at once
    stream = _open_input(source)
    writer = Writer()
    out = Output(output, writer.write)
    progress = _batch_progress() if stderr_is_tty() else (lambda tally: None)
    records = read_records(stream, lines=lines, field="text" if score_texts else "prompt")
    options = dict(defaults=defaults, seed=seed, score=score_texts, stride=stride, allow_special=allow_special, on_record=progress)
    try:
        if on_ray:
            from gpt2cli.batch.ray import ModelSpec, run_records_on_ray
            from gpt2cli.session import check_stride
            from gpt2cli.store.config import read_config

            if stride is not None:  # checked once here, not in every record
                check_stride(read_config(model_folder(model, revision, weights_dir, offline) / "config.json").n_positions, stride)
            spec = ModelSpec(model, revision, None if weights_dir is None else str(weights_dir), offline)
            tally = run_records_on_ray(
                spec, records, out, address=ray_address, actors=ray_actors, show_progress=stderr_is_tty(), **options
            )
        else:
            session = open_session(model, revision, weights_dir, offline)
            if stride is not None:
                session.check_stride(stride)
            tally = run_records(session, records, out, **options)
    finally:
        out.close()
        if stream is not sys.stdin:
            stream.close()
        if stderr_is_tty():
            sys.stderr.write("\r\033[K")
    writer.end()
    if tally.skipped:
        note(f"{tally.skipped} record{'s' if tally.skipped != 1 else ''} already in {output}: skipped")
    if tally.duplicates:
        note(f"{tally.duplicates} record{'s' if tally.duplicates != 1 else ''} repeated an earlier id: skipped")
    if tally.failed:
        note(f"{tally.failed} of {tally.done + tally.failed} records failed: each has an \"error\" line in the output")
        raise typer.Exit(6)


def _open_input(source: str):
    import sys

    if source == "-":
        return sys.stdin
    try:
        return open(source, encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read INPUT {source} ({e.strerror}); give a JSON Lines file or - for stdin") from None


def _batch_progress():
    import sys

    def show(tally) -> None:
        try:
            sys.stderr.write(
                f"\r\033[Kbatch: {tally.done} done, {tally.failed} failed, {tally.tokens_per_second:.1f} tokens/s"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    return show


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


@app.command(
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

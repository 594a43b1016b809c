"""generate, score and tokenize: a prompt or a text in, its continuation, scores or tokens out."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from gpt2cli.cli import render
from gpt2cli.cli.options import (
    IgnoreEosOpt, MinPOpt, PenaltyAlphaOpt, SamplingTemperatureOpt, SamplingTopKOpt, StopOpt, TypicalPOpt,
    AllowSpecialOpt, JsonOpt, MaxTokensOpt, ModelOpt, OfflineOpt, OverflowOpt,
    NoRepeatNgramOpt, PromptArg, RepetitionPenaltyOpt, RevisionOpt, SeedOpt, stop_strings, TextArg, TopPOpt, WeightsDirOpt,
)  # fmt: skip
from gpt2cli.cli.output import ProgressLine, Writer, note, prefill_progress, stderr_is_tty
from gpt2cli.cli.prompt import read_prompt
from gpt2cli.decoding.generate import Overflow
from gpt2cli.cli.common import command_group, examples, model_folder, open_session, show_stats

commands = command_group()


@commands.command(
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
    temperature: SamplingTemperatureOpt = None,
    top_k: SamplingTopKOpt = None,
    top_p: TopPOpt = 1.0,
    min_p: MinPOpt = 0.0,
    typical_p: TypicalPOpt = 1.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    no_repeat_ngram: NoRepeatNgramOpt = 0,
    penalty_alpha: PenaltyAlphaOpt = None,
    seed: SeedOpt = None,
    stop: StopOpt = None,
    ignore_eos: IgnoreEosOpt = False,
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
    from gpt2cli.request import Request

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
    echoed = text if echo else ""  # before every sample, as --json --echo gives each its prompt
    shown = InOrder(run.rows, lambda i: render.sample_separator(i, num_samples) + echoed)
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


@commands.command(
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


@commands.command(
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

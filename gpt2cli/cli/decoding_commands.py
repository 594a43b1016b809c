"""beam and compare: decodings of one prompt side by side."""

from __future__ import annotations

import shutil
from typing import Annotated, Optional

import typer

from gpt2cli.cli import render
from gpt2cli.cli.options import (
    AllowSpecialOpt, CompareOverflowOpt, EarlyStopping, EarlyStoppingOpt, JsonOpt, MaxTokensOpt, ModelOpt, OfflineOpt,
    NoRepeatNgramOpt, PromptArg, RepetitionPenaltyOpt, RevisionOpt, TemperatureOpt, TopKOpt,
    WeightsDirOpt,
)  # fmt: skip
from gpt2cli.cli.output import ProgressLine, Writer, note, prefill_progress, stderr_is_tty
from gpt2cli.cli.prompt import read_prompt
from gpt2cli.decoding.beam import MAX_BEAMS
from gpt2cli.decoding.generate import Overflow
from gpt2cli.errors import UsageError
from gpt2cli.cli.common import command_group, examples, open_session, options_given

commands = command_group()


@commands.command(
    epilog=examples(
        "gpt2cli beam \"The meaning of life is\"",
        "gpt2cli beam -b 8 -r 3 --length-penalty 2 --no-repeat-ngram 3 \"Once upon a time\"",
        "gpt2cli beam -b 6 --groups 3 --diversity-penalty 1.0 \"Once upon a time\"",
        "echo \"Hello\" | gpt2cli beam --no-compare > best.txt",
        "gpt2cli beam --json \"Hello\" | jq '.beams[].score'",
    ),
)
def beam(
    ctx: typer.Context,
    prompt: PromptArg = None,
    model: ModelOpt = "gpt2",
    max_tokens: MaxTokensOpt = 40,
    beams: Annotated[int, typer.Option("-b", "--beams", max=MAX_BEAMS, metavar="B", help="Beams searched together (1 = greedy).")] = 4,
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
    if not compare:
        _refuse_sample_options(ctx)
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


@commands.command(
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
    on_overflow: CompareOverflowOpt = Overflow.TRUNCATE,
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
    ids = fit_prompt(session.prompt_ids(text, allow_special), session.model.config.n_positions, max_tokens, mode, note, slides=False)
    table = out.is_tty and not json_out
    progress = ProgressLine("comparing", delay=0.0, unit="decoding") if stderr_is_tty() else None
    rows, shared = [], session.prefills(ids, max_tokens, chosen)  # the prompt prefilled once for every row
    for i, chosen_strategy in enumerate(chosen):
        if progress is not None:
            progress(i, len(chosen))
        rows.append(session.compare(ids, chosen_strategy, max_tokens, seed, shared))
        if not (json_out or table):  # piped: each row as it finishes
            out.write(f"{render.compared_heading(rows[-1])}\n{rows[-1].text}\n")
    if progress is not None:
        progress(len(chosen), len(chosen))
    if json_out:
        out.json_line({"prompt_tokens": len(ids), "rows": [render.compared_record(r) for r in rows]})
    elif table:
        out.write(render.compare_table(text, len(ids), rows, width or shutil.get_terminal_size().columns))
    out.end()


def _refuse_sample_options(ctx: typer.Context) -> None:
    """-t, -k and --seed shape only the comparison sample: with --no-compare there is none, and an
    option given that does nothing would let the user believe it shaped the beams."""
    given = options_given(ctx, ("temperature", "top_k", "seed"))
    if given:
        one = len(given) == 1
        raise UsageError(
            f"{', '.join(given)} {'sets' if one else 'set'} the comparison sample, which --no-compare drops "
            f"(beam search does not sample); drop {'it' if one else 'them'}, or drop --no-compare"
        )

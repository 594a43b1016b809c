"""batch: many records from a file, one result line each, locally or on Ray."""

from __future__ import annotations

import time

from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt2cli.cli.options import (
    IgnoreEosOpt, MinPOpt, PenaltyAlphaOpt, SamplingTemperatureOpt, SamplingTopKOpt, StopOpt, TypicalPOpt,
    AllowSpecialOpt, MaxTokensOpt, ModelOpt, OfflineOpt, OverflowOpt,
    NoRepeatNgramOpt, RepetitionPenaltyOpt, RevisionOpt, stop_strings, TopPOpt, WeightsDirOpt,
)  # fmt: skip
from gpt2cli.cli.output import Writer, erase_line, note, stderr_is_tty
from gpt2cli.decoding.generate import Overflow
from gpt2cli.errors import UsageError
from gpt2cli.cli.common import command_group, examples, model_folder, open_session, options_given

commands = command_group()


@commands.command(
    epilog=examples(
        "gpt2cli batch prompts.jsonl -o results.jsonl -n 64",
        "gpt2cli batch --lines prompts.txt -t 0 -n 20 | jq -r .text",
        "gpt2cli batch --score texts.jsonl -o scores.jsonl",
        "(rerun the same command after an interruption: records already in -o FILE are skipped)",
    ),
)
def batch(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="INPUT", help="JSON Lines file of records (or - for stdin).")],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", metavar="FILE", help="Append results to this file; a rerun skips the ids it holds. - is stdout, as without -o.")
    ] = None,
    lines: Annotated[bool, typer.Option("--lines", help="INPUT is plain text: one prompt per line, ids are line numbers.")] = False,
    score_texts: Annotated[bool, typer.Option("--score", help="Records hold `text` to score, as `gpt2cli score --json`.")] = False,
    stride: Annotated[Optional[int], typer.Option("--stride", metavar="S", help="With --score: as score's --stride.")] = None,
    ordered: Annotated[bool, typer.Option("--ordered", help="Write results in input order (else each as it finishes).")] = False,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "-b", "--batch-size", min=1, metavar="N",
            help="Records decoding (or, with --score, texts scored) together; 1: one at a time, bit for bit as generate and score. Default: 32, fewer if memory is short.",
        ),
    ] = None,
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
    temperature: SamplingTemperatureOpt = None,
    top_k: SamplingTopKOpt = None,
    top_p: TopPOpt = 1.0,
    min_p: MinPOpt = 0.0,
    typical_p: TypicalPOpt = 1.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    no_repeat_ngram: NoRepeatNgramOpt = 0,
    penalty_alpha: PenaltyAlphaOpt = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, metavar="SEED", help="A record without its own seed samples with one derived from this and its id.")
    ] = 0,
    stop: StopOpt = None,
    ignore_eos: IgnoreEosOpt = False,
    allow_special: AllowSpecialOpt = False,
    on_overflow: OverflowOpt = Overflow.SLIDE,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Run many prompts (or texts to score) from a file: one JSON result per record, written as each
    finishes; resumable with -o. Each record may override any decoding option (see README)."""
    import sys

    from gpt2cli.batch.engine import check_slots, default_batch_size
    from gpt2cli.batch.local import run_records
    from gpt2cli.batch.records import Output, read_records
    from gpt2cli.request import Request

    defaults = Request(
        max_tokens, temperature, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram, penalty_alpha, None, stop_strings(stop), ignore_eos, 1,
        on_overflow,
    ).check()  # fmt: skip
    if output is not None and str(output) == "-":  # as INPUT's -, and curl's or wget's: stdout, not a file named -
        output = None
    if stride is not None and not score_texts:
        raise UsageError("--stride goes with --score (it says how long texts are scored); add --score or drop --stride")
    if score_texts:
        _refuse_decoding_options(ctx)
    if (ray_address or ray_actors) and not on_ray:
        raise UsageError("--ray-address and --ray-actors go with --ray; add --ray or drop them")
    if on_ray:
        from gpt2cli.batch.ray import import_ray

        import_ray()  # before anything else, so a missing Ray is said at once
    stream = _open_input(source)
    writer = Writer()
    try:
        _refuse_input_as_output(stream, output)
        out = Output(output, writer.write, score=score_texts)
    except BaseException:
        _close_input(stream, source)
        raise
    progress = _batch_progress(_count_records(source, lines)) if stderr_is_tty() else (lambda tally: None)
    records = read_records(stream, lines=lines, field="text" if score_texts else "prompt")
    slow = _may_stall(stream)
    finished = False
    options = dict(defaults=defaults, seed=seed, score=score_texts, stride=stride, allow_special=allow_special, on_record=progress)
    try:
        if on_ray:
            from gpt2cli.batch.ray import ModelSpec, run_records_on_ray
            from gpt2cli.decoding.scores import check_stride
            from gpt2cli.store.config import read_config

            config = read_config(model_folder(model, revision, weights_dir, offline) / "config.json")
            if stride is not None:  # checked once here, not in every record
                check_stride(config.n_positions, stride)
            engines = _actors_here(ray_address, ray_actors)
            batch_size = batch_size or default_batch_size(config, engines=engines)
            if not score_texts:
                check_slots(config, batch_size, engines)
            spec = ModelSpec(model, revision, None if weights_dir is None else str(weights_dir), offline)
            tally = run_records_on_ray(
                spec, records, out, address=ray_address, actors=ray_actors, show_progress=stderr_is_tty(),
                batch_size=batch_size, ordered=ordered, **options,
            )  # fmt: skip
        else:
            session = open_session(model, revision, weights_dir, offline)
            if stride is not None:
                session.check_stride(stride)
            batch_size = batch_size or default_batch_size(session.config)
            if not score_texts:
                needed = check_slots(session.config, batch_size)
                if stderr_is_tty() and batch_size > 1:
                    note(f"up to {batch_size} records decode together; their keys and values take up to {needed / 1e9:.1f} GB")
            tally = run_records(session, records, out, batch_size=batch_size, ordered=ordered, slow=slow, **options)
        finished = True
    finally:
        out.close()
        # a run cut short may leave the thread that reads a slow INPUT ahead (batch.readahead) waiting
        # in a read: closing would wait for that read; the process's end closes it
        if finished or not slow:
            _close_input(stream, source)
        if stderr_is_tty():
            sys.stderr.write(erase_line())
    writer.end()
    if tally.skipped:
        note(f"{tally.skipped} record{'s' if tally.skipped != 1 else ''} already in {output}: skipped")
    if tally.failed_before:  # a rerun resuming a run that failed them has failed them too (exit 6)
        one = tally.failed_before == 1
        note(
            f"{tally.failed_before} of them failed in an earlier run: {'it has' if one else 'each has'} an \"error\" line "
            f"in {output} (delete {'that line' if one else 'those lines'} to run {'it' if one else 'them'} again)"
        )
    if tally.duplicates:
        note(f"{tally.duplicates} record{'s' if tally.duplicates != 1 else ''} repeated an earlier id: skipped")
    if tally.failed:
        note(f"{tally.failed} of {tally.done + tally.failed} records failed: each has an \"error\" line in the output")
    if tally.failed or tally.failed_before:
        raise typer.Exit(6)


def _refuse_decoding_options(ctx: typer.Context) -> None:
    """With --score, a decoding option given on the command line (or from the environment) is refused:
    silently doing nothing with it would let a user believe it shaped the scores. They are the record
    settings (records.SETTINGS), each the long option of its name."""
    from gpt2cli.batch.records import SETTINGS

    given = options_given(ctx, sorted(SETTINGS))
    if given:
        raise UsageError(f"{', '.join(given)} {'says' if len(given) == 1 else 'say'} how text is generated, and --score generates none; drop {'it' if len(given) == 1 else 'them'}")


def _actors_here(address: str | None, actors: int | None) -> int:
    """How many of --ray's actors (each an engine with its own slots and weight copies) share this
    machine's memory: all of them on a local Ray started for the run (one per CPU unless --ray-actors
    says, as Ray counts them), else one, as on a cluster node like this one."""
    import os

    if address or os.environ.get("RAY_ADDRESS"):
        return 1
    return actors or os.cpu_count() or 1


def _open_input(source: str):
    import io
    import os
    import sys

    errors = _replace_noting(source)
    # Lines end at "\n" only (a "\r" before it is dropped by read_records): a lone "\r" inside a line
    # is text, so that --lines' ids are the line numbers wc, sed and editors count.
    if source == "-":
        # INPUT is UTF-8 whatever the locale says (as a file INPUT is): a non-UTF-8 locale (LANG=C
        # without Python's UTF-8 mode, a Latin-1 one) would otherwise decode stdin's records its way.
        if sys.stdin is None:  # closed (`<&-`): read as empty, as generate reads it
            return io.StringIO()
        if not hasattr(sys.stdin, "buffer"):
            return sys.stdin
        if _may_stall(sys.stdin):
            # A pipe or terminal is read ahead by a thread that may still wait in a read when the
            # command ends: it reads a file of its own over a copy of the descriptor, since Python
            # cannot shut down while another thread holds its own stdin's reader.
            return open(os.dup(sys.stdin.fileno()), encoding="utf-8", errors=errors, newline="\n")
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors=errors, newline="\n")
    try:
        return open(source, encoding="utf-8", errors=errors, newline="\n")
    except OSError as e:
        raise UsageError(f"cannot read INPUT {source} ({e.strerror}); give a JSON Lines file or - for stdin") from None


def _may_stall(stream) -> bool:
    """Whether INPUT can keep the batch waiting for its next record: anything but a regular file (a
    pipe from a program still writing, a terminal, a socket, a FIFO)."""
    import os
    import stat

    try:
        return not stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # an input with no file behind it: all there already
        return False


def _close_input(stream, source: str) -> None:
    """Closes a file INPUT (or stdin's copy); for stdin itself, lets go of the UTF-8 reader _open_input
    put over it without closing stdin (closing, or collecting, the reader would close the bytes
    underneath)."""
    import sys

    if stream is sys.stdin:
        return
    if source == "-" and sys.stdin is not None and getattr(stream, "buffer", None) is sys.stdin.buffer:
        stream.detach()
    else:
        stream.close()


def _replace_noting(source: str) -> str:
    """A decoding error handler for INPUT: bytes that are not UTF-8 become U+FFFD, as in a prompt, and
    the first time that happens a note says so (a Latin-1 file's accents would otherwise turn into
    U+FFFD in the prompts without a word)."""
    import codecs

    from gpt2cli.cli.prompt import note_not_utf8

    said = []

    def replace(error: UnicodeDecodeError):
        if not said:
            said.append(True)
            note_not_utf8("stdin" if source == "-" else f"INPUT {source}", " (save it as UTF-8)")
        return "\ufffd", error.end

    name = f"gpt2cli-batch-input-{id(said)}"
    codecs.register_error(name, replace)
    return name


def _refuse_input_as_output(stream, output: Path | None) -> None:
    """-o naming INPUT itself (or the file stdin reads) would append results to the records being read,
    and take the records for results already done; -o naming the pipe or FIFO INPUT reads would feed
    the results back in as records and, holding a writer of it, wait forever for INPUT's end: both
    are refused before either is touched."""
    import os
    import stat

    if output is None:
        return
    try:
        given, written = os.fstat(stream.fileno()), os.stat(output)
    except (OSError, ValueError, AttributeError):  # no -o file yet, or an input with no file behind it
        return
    if not os.path.samestat(given, written):
        return
    if stat.S_ISREG(written.st_mode):
        raise UsageError(f"-o {output} is the INPUT file itself; give -o another file for the results")
    if stat.S_ISFIFO(written.st_mode):  # results would come back as records, and INPUT never end (this run holds a writer)
        raise UsageError(f"-o {output} is the pipe INPUT reads from; give -o another file for the results")


def _count_records(source: str, lines: bool) -> int | None:
    """How many records a regular INPUT file holds (its non-blank lines; with --lines, every line, as
    read_records makes each a record), for the progress line's ETA; None for stdin or anything that
    cannot be read twice."""
    import os
    import stat

    try:
        if source == "-" or not stat.S_ISREG(os.stat(source).st_mode):
            return None
        with open(source, "rb") as f:
            return sum(1 for line in f if lines or line.strip())
    except OSError:
        return None


def _batch_progress(total: int | None):
    import sys

    def show(tally) -> None:
        finished = tally.done + tally.failed
        line = f"batch: {tally.done} done, {tally.failed} failed, {tally.tokens_per_second:.1f} tokens/s"
        left = None if total is None else total - tally.skipped - tally.duplicates - finished
        elapsed = time.perf_counter() - tally.started
        if left is not None and finished and elapsed > 0:
            line += f", {left} left, ETA {_duration(left * elapsed / finished)}"
        try:
            sys.stderr.write(f"{erase_line()}{line}")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    return show


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"

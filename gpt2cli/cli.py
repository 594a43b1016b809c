"""The gpt2cli command line: parses options, reads prompts from argument and stdin, runs the
decoders, and turns every known failure into one line on stderr and an exit code.

Exit codes: 0 ok, 1 unexpected error, 2 usage (bad option, unknown model, missing files),
3 broken checkpoint or tokenizer, 4 download failure, 130 interrupted (Ctrl-C), 141 stdout
closed (e.g. `| head`), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt2cli.errors import GPT2CLIError, UsageError
from gpt2cli.output import OutputClosed, Writer, note, stderr_is_tty

app = typer.Typer(
    name="gpt2cli",
    help="Run GPT-2 checkpoints on the CPU with a NumPy engine: generate, compare decodings, score text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --- options shared by several commands, declared once ---
ModelOpt = Annotated[
    str,
    typer.Option(
        "-m", "--model", envvar="GPT2CLI_MODEL", show_envvar=True,
        help="Model: a folder with config.json, model.safetensors, vocab.json, merges.txt; "
        "or a name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2) or Hub repo owner/name.",
    ),
]  # fmt: skip
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Hub branch, tag or commit to use.")]
WeightsDirOpt = Annotated[
    Optional[Path],
    typer.Option("--weights-dir", envvar="GPT2CLI_WEIGHTS", help="Folder holding downloaded models."),
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never touch the network (as HF_HUB_OFFLINE=1).")]
PromptArg = Annotated[
    Optional[str],
    typer.Argument(help="Prompt text; omit it or pass - to read stdin (piped stdin also comes before PROMPT)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
AllowSpecialOpt = Annotated[
    bool, typer.Option("--allow-special", help="Treat <|endoftext|> in the text as the special token, not as text.")
]
MaxTokensOpt = Annotated[int, typer.Option("-n", "--max-tokens", min=1, help="How many new tokens, at most.")]
TemperatureOpt = Annotated[float, typer.Option("-t", "--temperature", min=0.0, help="Sampling temperature; 0 = greedy.")]
TopKOpt = Annotated[int, typer.Option("-k", "--top-k", min=0, help="Sample among the k most likely tokens; 0 = off.")]
TopPOpt = Annotated[
    float, typer.Option("-p", "--top-p", help="Nucleus sampling mass in (0, 1]; 1 = off.")
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed: the same seed and options give the same text.")]
OverflowOpt = Annotated[
    str,
    typer.Option(
        "--on-overflow",
        help="When prompt + new tokens exceed the context: slide (keep going on the most recent window), "
        "truncate (drop the prompt's start), error (exit 2).",
    ),
]


# --- helpers the commands share ---
@dataclass
class Loaded:
    model: "object"
    tokenizer: "object"
    folder: Path


def load(model: str, revision: Optional[str], weights_dir: Optional[Path], offline: bool) -> Loaded:
    """Resolves the model name to a folder (downloading on first use) and loads engine and tokenizer."""
    from gpt2cli import hub
    from gpt2cli.checkpoint import load_model
    from gpt2cli.errors import CheckpointError
    from gpt2cli.tokenizer import Tokenizer

    folder = hub.resolve_model(
        model, revision=revision, weights_dir=weights_dir, offline=offline, progress=stderr_is_tty()
    )
    engine = load_model(folder)
    tokenizer = Tokenizer.from_folder(folder)
    if tokenizer.n_vocab > engine.config.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has {tokenizer.n_vocab} tokens but config.json's vocab_size is "
            f"{engine.config.vocab_size}; the tokenizer files do not belong to these weights"
        )
    return Loaded(engine, tokenizer, folder)


def _decode_input(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        note(f"{where} is not valid UTF-8: invalid bytes were replaced with U+FFFD")
        return raw.decode("utf-8", errors="replace")


def read_prompt(prompt: Optional[str]) -> str:
    """The prompt text: piped stdin first (one trailing newline dropped), then the PROMPT argument.

    PROMPT `-` or omitted reads stdin; a terminal on stdin with no PROMPT means an empty prompt.
    """
    parts = []
    stdin_is_tty = sys.stdin is None or sys.stdin.isatty()
    if prompt == "-" or (not stdin_is_tty and sys.stdin is not None):
        raw = sys.stdin.buffer.read() if sys.stdin is not None else b""
        text = _decode_input(raw, "stdin")
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if text or prompt == "-":
            parts.append(text)
    if prompt is not None and prompt != "-":
        # argv arrives surrogate-escaped when it is not UTF-8
        parts.append(_decode_input(prompt.encode("utf-8", errors="surrogateescape"), "the PROMPT argument"))
    return "\n".join(parts)


def prompt_tokens(loaded: Loaded, text: str, allow_special: bool) -> list[int]:
    """Token ids of the prompt; an empty prompt is <|endoftext|> (unconditional generation)."""
    ids = loaded.tokenizer.encode(text, allow_special=allow_special)
    return ids or [loaded.tokenizer.eot]


def show_stats(prompt_len: int, generated: int, started: float, first_token: Optional[float]) -> None:
    elapsed = time.perf_counter() - started
    rate = generated / elapsed if elapsed > 0 else float("inf")
    ttft = f", first token after {first_token - started:.2f} s" if first_token else ""
    note(f"{prompt_len} prompt tokens, {generated} new in {elapsed:.2f} s ({rate:.1f} tokens/s{ttft})")


@dataclass
class Sample:
    """What one generated row has produced so far."""

    text: "object"  # decoding.SampleText
    detok: "object"  # tokenizer.Detokenizer
    tokens: list
    logprobs: list
    finish_reason: Optional[str] = None


@app.command(
    epilog="Examples:\n\n"
    "  gpt2cli generate -m ./weights/gpt2 \"The meaning of life is\"\n\n"
    "  echo \"Once upon\" | gpt2cli generate -n 20 --seed 1\n\n"
    "  gpt2cli generate -t 0 -n 50 \"def fib(n):\" --stop \"\\n\\n\"\n\n"
    "  gpt2cli generate -N 3 --json \"Hello\" | jq .text",
)
def generate(
    prompt: PromptArg = None,
    model: ModelOpt = "gpt2",
    max_tokens: MaxTokensOpt = 100,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="End the output before this text (repeatable).")] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Keep going past <|endoftext|>.")] = False,
    echo: Annotated[bool, typer.Option("--echo", help="Print the prompt before the continuation.")] = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print the text only when it is complete.")] = False,
    num_samples: Annotated[
        int, typer.Option("-N", "--num-samples", min=1, max=256, help="Samples decoded together, printed one after another.")
    ] = 1,
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    on_overflow: OverflowOpt = "slide",
    stats: Annotated[
        Optional[bool], typer.Option("--stats/--no-stats", help="Timing on stderr (default: when stderr is a terminal).")
    ] = None,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Continue a prompt, streaming the new text to stdout as it is generated."""
    from gpt2cli.decoding import OVERFLOW_MODES, SampleText, generate as decode
    from gpt2cli.sampling import Sampler, SamplingOptions
    from gpt2cli.tokenizer import Detokenizer

    if on_overflow not in OVERFLOW_MODES:
        raise UsageError(f"--on-overflow must be one of {', '.join(OVERFLOW_MODES)}, got {on_overflow!r}")
    sampler = Sampler(SamplingOptions(temperature, top_k, top_p), seed)
    text = read_prompt(prompt)
    loaded = load(model, revision, weights_dir, offline)
    ids = prompt_tokens(loaded, text, allow_special)
    out = Writer()
    stream = not (no_stream or json_out)
    stops = tuple(stop or ())
    samples = [Sample(SampleText(stops), Detokenizer(loaded.tokenizer), [], []) for _ in range(num_samples)]
    shown = 0  # the sample being streamed; the others are buffered until its turn
    started, first = time.perf_counter(), None

    def separator(i: int) -> str:
        return f"\n\n--- sample {i + 1} of {num_samples} ---\n"

    if echo and not json_out:
        out.write(text)
    steps = decode(
        loaded.model, ids, sampler, max_tokens,
        num_samples=num_samples, eos_token_id=loaded.model.config.eos_token_id, ignore_eos=ignore_eos,
        logprobs=json_out, on_overflow=on_overflow, warn=note,
    )  # fmt: skip
    try:
        for step in steps:
            first = first or time.perf_counter()
            for row, sample in enumerate(samples):
                if sample.finish_reason:
                    continue
                token = int(step.tokens[row])
                if step.eos[row]:
                    sample.finish_reason = "eos"
                    continue
                sample.tokens.append(token)
                if step.logprobs is not None:
                    sample.logprobs.append(float(step.logprobs[row]))
                sample.text.add(sample.detok.feed(token))
                if sample.text.stopped:
                    sample.finish_reason = "stop"
            while stream and shown < num_samples:
                current = samples[shown]
                out.write(current.text.take())
                if not current.finish_reason:
                    break
                out.write(_flush(current))
                shown += 1
                if shown < num_samples:
                    out.write(separator(shown))
            if all(s.finish_reason for s in samples):
                break
    finally:
        steps.close()
    for sample in samples:
        sample.finish_reason = sample.finish_reason or "length"
    if stream:
        for i in range(shown, num_samples):
            out.write(_flush(samples[i]))
            if i + 1 < num_samples:
                out.write(separator(i + 1))
    elif json_out:
        for sample in samples:
            kept = sample.text.kept_tokens() if sample.finish_reason == "stop" else len(sample.tokens)
            _flush(sample)
            out.json_line({
                "text": sample.text.text,
                "tokens": sample.tokens[:kept],
                "logprobs": sample.logprobs[:kept],
                "finish_reason": sample.finish_reason,
                "prompt_tokens": len(ids),
                "completion_tokens": kept,
            })  # fmt: skip
    else:
        for i, sample in enumerate(samples):
            out.write(_flush(sample))
            if i + 1 < num_samples:
                out.write(separator(i + 1))
    out.end()
    if stats if stats is not None else stderr_is_tty():
        show_stats(len(ids), sum(len(s.tokens) for s in samples), started, first)


def _flush(sample: Sample) -> str:
    """The rest of a finished sample's text: held-back bytes of an unfinished character included."""
    if not sample.text.stopped:
        sample.text.add(sample.detok.flush(), new_token=False)
    return sample.text.finish()


@app.command(
    epilog="Examples:\n\n"
    "  gpt2cli score \"The cat sat on the mat.\"\n\n"
    "  cat essay.txt | gpt2cli score --json | jq .perplexity",
)
def score(
    text: Annotated[Optional[str], typer.Argument(help="Text to score; omit it or pass - to read stdin.")] = None,
    model: ModelOpt = "gpt2",
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Per-token log-probabilities of TEXT, with <|endoftext|> prepended as context."""
    import numpy as np

    from gpt2cli.sampling import log_softmax

    body = read_prompt(text)
    loaded = load(model, revision, weights_dir, offline)
    ids = loaded.tokenizer.encode(body, allow_special=allow_special)
    if not ids:
        raise UsageError("nothing to score: the text is empty")
    n_ctx = loaded.model.config.n_positions
    if len(ids) + 1 > n_ctx:
        raise UsageError(
            f"the text has {len(ids)} tokens but the model's context scores at most {n_ctx - 1}; split the text"
        )
    seq = np.asarray([[loaded.tokenizer.eot] + ids])  # [1, T+1]
    logits = loaded.model.forward(seq[:, :-1], loaded.model.new_cache(1, len(ids)), all_logits=True)[0]  # [T, V]
    logprobs = log_softmax(logits)[np.arange(len(ids)), ids]  # [T]
    total = float(logprobs.sum())
    perplexity = math.exp(-total / len(ids))
    out = Writer()
    if json_out:
        out.json_line({
            "tokens": ids,
            "logprobs": [float(x) for x in logprobs],
            "total_logprob": total,
            "perplexity": perplexity,
        })  # fmt: skip
    else:
        rows = [f"{'token':>8}  {'logprob':>9}  text"]
        for token, lp in zip(ids, logprobs):
            piece = loaded.tokenizer.token_bytes(token).decode("utf-8", errors="backslashreplace")
            rows.append(f"{token:>8}  {lp:>9.4f}  {json.dumps(piece, ensure_ascii=False)}")
        rows.append(f"total logprob {total:.4f} over {len(ids)} tokens, perplexity {perplexity:.3f}")
        out.write("\n".join(rows) + "\n")
    out.end()


@app.command(
    epilog="Examples:\n\n  gpt2cli tokenize \"Hello world\"\n\n  echo 'naïve café' | gpt2cli tokenize --json",
)
def tokenize(
    text: Annotated[Optional[str], typer.Argument(help="Text to tokenize; omit it or pass - to read stdin.")] = None,
    model: ModelOpt = "gpt2",
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Print the token ids of TEXT (space-separated), or with --json each id with its bytes."""
    from gpt2cli import hub
    from gpt2cli.tokenizer import Tokenizer

    body = read_prompt(text)
    folder = hub.resolve_model(model, revision=revision, weights_dir=weights_dir, offline=offline, progress=stderr_is_tty())
    tokenizer = Tokenizer.from_folder(folder)
    ids = tokenizer.encode(body, allow_special=allow_special)
    out = Writer()
    if json_out:
        out.json_line({
            "ids": ids,
            "tokens": [
                {"id": i, "bytes": list(tokenizer.token_bytes(i)),
                 "text": tokenizer.token_bytes(i).decode("utf-8", errors="replace")}
                for i in ids
            ],
        })  # fmt: skip
    else:
        out.write(" ".join(map(str, ids)) + "\n")
    out.end()


# --- beam command ---


# --- hub commands (download, models) ---


class Terminated(Exception):
    """SIGTERM, turned into an exception so that the same clean exit path as Ctrl-C runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: runs the app and maps every known failure to one stderr line and an exit code."""
    exc = _click_exceptions()
    debug = os.environ.get("GPT2CLI_DEBUG") == "1"
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (tests calling main() in a thread)
        pass
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:  # a usage error like any other: the help goes to stderr, not stdout
        with contextlib.redirect_stdout(sys.stderr):
            command.main(args=["--help"], prog_name="gpt2cli", standalone_mode=False)
        return 2
    code = 0
    try:
        result = command.main(args=args, prog_name="gpt2cli", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except exc.UsageError as e:
        where = f"; see '{e.ctx.command_path} --help'" if e.ctx else ""
        note(f"error: {_one_line(e.format_message())}{where}")
        code = 2
    except GPT2CLIError as e:
        if debug:
            raise
        note(f"error: {_one_line(e)}")
        code = e.exit_code
    except (BrokenPipeError, OutputClosed):
        # The reader went away (`| head`): stop quietly, as `yes | head` does.
        _silence_stdout()
        code = 141
    except (KeyboardInterrupt, typer.Abort):
        _end_line_on_terminal()
        code = 130
    except Terminated:
        _end_line_on_terminal()
        code = 143
    except MemoryError:
        if debug:
            raise
        note("error: out of memory; try a smaller model, fewer --num-samples or --beams")
        code = 1
    except OSError as e:
        if debug:
            raise
        note(f"error: {_one_line(e)}")
        code = 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: never a traceback for users
        if debug:
            raise
        note(f"internal error: {type(e).__name__}: {_one_line(e)}; rerun with GPT2CLI_DEBUG=1 and report the traceback")
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = code or 141
    except (ValueError, OSError):
        pass
    return code


def _click_exceptions():
    """The exception classes of the click that typer runs on (newer typer vendors its own copy)."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _end_line_on_terminal() -> None:
    try:
        if sys.stdout.isatty():
            sys.stdout.write("\n")
            sys.stdout.flush()
    except (OSError, ValueError):
        pass


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())

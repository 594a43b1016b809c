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
from gpt2cli.output import OutputClosed, Writer, note, prefill_progress, stderr_is_tty

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
TextArg = Annotated[Optional[str], typer.Argument(help="The text; omit it or pass - to read stdin.")]
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
SeedOpt = Annotated[Optional[int], typer.Option("--seed", min=0, help="Random seed: the same seed and options give the same text.")]
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


def model_folder(model: str, revision: Optional[str], weights_dir: Optional[Path], offline: bool) -> Path:
    """The model's folder on disk, downloading it on first use (progress bars only on a terminal)."""
    from gpt2cli import hub

    return hub.resolve_model(model, revision=revision, weights_dir=weights_dir, offline=offline, progress=stderr_is_tty())


def load(model: str, revision: Optional[str], weights_dir: Optional[Path], offline: bool) -> Loaded:
    """Resolves the model name to a folder (downloading on first use) and loads engine and tokenizer."""
    from gpt2cli.checkpoint import load_model
    from gpt2cli.errors import CheckpointError
    from gpt2cli.tokenizer import Tokenizer

    folder = model_folder(model, revision, weights_dir, offline)
    engine = load_model(folder)
    tokenizer = Tokenizer.from_folder(folder)
    if tokenizer.n_vocab > engine.config.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has {tokenizer.n_vocab} tokens but config.json's vocab_size is "
            f"{engine.config.vocab_size}; the tokenizer files do not belong to these weights: re-download the model"
        )
    return Loaded(engine, tokenizer)


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
    stdin_piped = sys.stdin is not None and not sys.stdin.isatty()
    if prompt == "-" or stdin_piped:
        try:
            raw = sys.stdin.buffer.read() if sys.stdin is not None else b""
        except OSError as e:  # e.g. EIO from a terminal that went away
            raise UsageError(f"cannot read stdin ({e.strerror or e}); pass the prompt as an argument") from None
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
    "  gpt2cli generate \"The meaning of life is\"\n\n"
    "  gpt2cli generate -m ./my-finetuned-gpt2 -n 50 \"Hello\"\n\n"
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
    from gpt2cli.decoding import SampleText, check_overflow_mode, generate as decode
    from gpt2cli.sampling import Sampler, SamplingOptions
    from gpt2cli.tokenizer import Detokenizer

    check_overflow_mode(on_overflow)  # before the model loads, so a typo fails at once
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

    steps = decode(
        loaded.model, ids, sampler, max_tokens,
        num_samples=num_samples, eos_token_id=loaded.model.config.eos_token_id, ignore_eos=ignore_eos,
        logprobs=json_out, on_overflow=on_overflow, warn=note, prefill_progress=prefill_progress(),
    )  # fmt: skip
    if echo and not json_out:
        out.write(text)
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
                **({"prompt": text} if echo else {}),
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
    text: TextArg = None,
    model: ModelOpt = "gpt2",
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Per-token log-probabilities of TEXT, with <|endoftext|> prepended as context."""
    import numpy as np

    from gpt2cli.decoding import check_logits
    from gpt2cli.sampling import log_softmax

    body = read_prompt(text)
    loaded = load(model, revision, weights_dir, offline)
    ids = loaded.tokenizer.encode(body, allow_special=allow_special)
    if not ids:
        raise UsageError("nothing to score: the text is empty")
    n_ctx = loaded.model.config.n_positions
    if len(ids) > n_ctx:
        raise UsageError(f"the text has {len(ids)} tokens but the model's context scores at most {n_ctx}; split the text")
    seq = np.asarray([[loaded.tokenizer.eot] + ids])  # [1, T+1]
    cache = loaded.model.new_cache(1, len(ids))
    logits = loaded.model.forward(seq[:, :-1], cache, all_logits=True, progress=prefill_progress("scoring"))[0]  # [T, V]
    logprobs = log_softmax(check_logits(logits))[np.arange(len(ids)), ids]  # [T]
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
    text: TextArg = None,
    model: ModelOpt = "gpt2",
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Print the token ids of TEXT (space-separated), or with --json each id with its bytes."""
    from gpt2cli.tokenizer import Tokenizer

    body = read_prompt(text)
    tokenizer = Tokenizer.from_folder(model_folder(model, revision, weights_dir, offline))
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
EarlyStoppingOpt = Annotated[
    str,
    typer.Option(
        "--early-stopping",
        help="When beam search ends (transformers' meanings): true = once --beams hypotheses have finished; "
        "false = also once no running beam can beat the finished ones at its current length; "
        "never = judge that at --max-tokens when --length-penalty > 0.",
    ),
]
_EARLY_STOPPING = {"true": True, "false": False, "never": "never"}


def _hypothesis_json(loaded: Loaded, tokens: list[int], score: float, logprob: float, finish_reason: str) -> dict:
    """One decoding in the beam command's JSON shape; the text leaves out a final <|endoftext|>."""
    eos = loaded.model.config.eos_token_id
    shown = tokens[:-1] if tokens and tokens[-1] == eos else tokens
    return {
        "text": loaded.tokenizer.decode(shown),
        "tokens": tokens,
        "score": score,
        "logprob": logprob,
        "finish_reason": finish_reason,
    }


def _decode_one(loaded: Loaded, ids: list[int], sampler, max_tokens: int, length_penalty: float) -> dict:
    """A single greedy or sampled continuation (ending on <|endoftext|> if it comes), as a beam would be."""
    from gpt2cli.decoding import generate as decode

    eos = loaded.model.config.eos_token_id
    tokens, logprobs, reason = [], [], "length"
    steps = decode(loaded.model, ids, sampler, max_tokens, eos_token_id=eos, logprobs=True, on_overflow="error")
    try:
        for step in steps:
            tokens.append(int(step.tokens[0]))
            logprobs.append(float(step.logprobs[0]))
            if tokens[-1] == eos:
                reason = "eos"
                break
    finally:
        steps.close()
    logprob = math.fsum(logprobs)
    return _hypothesis_json(loaded, tokens, logprob / len(tokens) ** length_penalty, logprob, reason)


@app.command(
    epilog="Examples:\n\n"
    "  gpt2cli beam \"The meaning of life is\"\n\n"
    "  gpt2cli beam -b 8 -r 3 --length-penalty 2 --no-repeat-ngram 3 \"Once upon a time\"\n\n"
    "  echo \"Hello\" | gpt2cli beam --no-compare > best.txt\n\n"
    "  gpt2cli beam --json \"Hello\" | jq '.beams[].score'",
)
def beam(
    prompt: PromptArg = None,
    model: ModelOpt = "gpt2",
    max_tokens: MaxTokensOpt = 40,
    beams: Annotated[int, typer.Option("-b", "--beams", min=1, max=256, help="Beams searched together (1 = greedy).")] = 4,
    num_return: Annotated[
        Optional[int], typer.Option("-r", "--num-return", help="Best hypotheses to show, 1 to --beams; default: all of them.")
    ] = None,
    length_penalty: Annotated[
        float,
        typer.Option("--length-penalty", help="Score = logprob / length ** this; > 0 favours longer hypotheses."),
    ] = 1.0,
    early_stopping: EarlyStoppingOpt = "false",
    no_repeat_ngram: Annotated[
        int, typer.Option("--no-repeat-ngram", help="No n-gram of this size appears twice (prompt included); 0 = off.")
    ] = 0,
    compare: Annotated[
        bool,
        typer.Option("--compare/--no-compare", help="Also show greedy decoding and one seeded sample."),
    ] = True,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = 50,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the comparison sample.")] = 0,
    width: Annotated[
        Optional[int], typer.Option("--width", help="Table width in columns; default: the terminal's (or $COLUMNS).")
    ] = None,
    json_out: JsonOpt = False,
    allow_special: AllowSpecialOpt = False,
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Beam search, step for step as transformers does it. On a terminal: a table of every beam with
    greedy and a sample beside it; piped: the best beam's text only; --json: everything."""
    import shutil

    from gpt2cli.beam import beam_search, validate_options
    from gpt2cli.output import DecodingRow, render_beam_table
    from gpt2cli.sampling import Sampler, SamplingOptions

    stopping = _EARLY_STOPPING.get(early_stopping.strip().lower())
    if stopping is None:
        raise UsageError(f"--early-stopping must be true, false or never, got {early_stopping!r}")
    num_return = beams if num_return is None else num_return
    validate_options(
        num_beams=beams, num_return=num_return, max_new_tokens=max_tokens,
        no_repeat_ngram_size=no_repeat_ngram, early_stopping=stopping, length_penalty=length_penalty,
    )  # fmt: skip
    if width is not None and width < 20:
        raise UsageError(f"--width must be at least 20 columns, got {width}")
    sampler = Sampler(SamplingOptions(temperature, top_k, 1.0), seed)  # validates --temperature, --top-k
    text = read_prompt(prompt)
    loaded = load(model, revision, weights_dir, offline)
    ids = prompt_tokens(loaded, text, allow_special)
    out = Writer()
    table = out.is_tty and not json_out
    hyps = beam_search(
        loaded.model, ids, num_beams=beams, max_new_tokens=max_tokens, length_penalty=length_penalty,
        early_stopping=stopping, no_repeat_ngram_size=no_repeat_ngram,
        eos_token_id=loaded.model.config.eos_token_id, num_return=num_return, prefill_progress=prefill_progress(),
    )  # fmt: skip
    found = [_hypothesis_json(loaded, h.tokens, h.score, h.logprob, h.finish_reason) for h in hyps]
    if not (json_out or table):
        out.write(found[0]["text"])  # piped: only the best beam, ready for the next program
        out.end()
        return
    result = {"prompt_tokens": len(ids), "beams": found}
    if compare:
        greedy = Sampler(SamplingOptions(temperature=0.0, top_k=0, top_p=1.0))
        result["greedy"] = _decode_one(loaded, ids, greedy, max_tokens, length_penalty)
        result["sample"] = _decode_one(loaded, ids, sampler, max_tokens, length_penalty)
    if json_out:
        out.json_line(result)
    else:
        labelled = [(f"beam {i + 1}", entry) for i, entry in enumerate(found)]
        if compare:
            labelled = [("greedy", result["greedy"])] + labelled + [("sample", result["sample"])]
        rows = [
            DecodingRow(label, e["score"], e["logprob"] / len(e["tokens"]), e["finish_reason"], e["text"])
            for label, e in labelled
        ]
        out.write(render_beam_table(text, len(ids), rows, width or shutil.get_terminal_size().columns))
    out.end()


# --- hub commands (download, models) ---
@app.command(
    epilog="Examples:\n\n"
    "  gpt2cli download gpt2\n\n"
    "  gpt2cli download openai-community/gpt2-medium --revision main\n\n"
    "  gpt2cli download distilgpt2 --weights-dir ~/models --force\n\n"
    "  gpt2cli generate -m \"$(gpt2cli download gpt2-large)\" \"Hello\"",
)
def download(
    model: Annotated[
        str, typer.Argument(help="A name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2) or Hub repo owner/name.")
    ],
    revision: RevisionOpt = None,
    weights_dir: WeightsDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if the model is already on disk.")] = False,
) -> None:
    """Download a model's config, tokenizer and safetensors weights from the Hub; print its folder."""
    from gpt2cli import hub

    on_disk = None if force else hub.local_copy(model, revision=revision, weights_dir=weights_dir)
    folder = hub.download_model(
        model, revision=revision, weights_dir=weights_dir, force=force, progress=stderr_is_tty()
    )
    if on_disk is not None:
        note(f"{model} is already downloaded (--force downloads it again)")
    else:
        note(f"downloaded {model} ({_human_size(hub.folder_size(folder))})")
    out = Writer()
    out.write(f"{folder}\n")
    out.end()


@app.command(
    epilog="Examples:\n\n"
    "  gpt2cli models\n\n"
    "  gpt2cli models --weights-dir ~/models\n\n"
    "  gpt2cli models --json | jq -r 'select(.downloaded) | .folder'",
)
def models(weights_dir: WeightsDirOpt = None, json_out: JsonOpt = False) -> None:
    """List the model names and every downloaded model: downloaded or not, size on disk, folder."""
    from gpt2cli import hub

    entries = hub.list_models(weights_dir)
    out = Writer()
    if json_out:
        for e in entries:
            out.json_line({
                "name": e.name, "repo_id": e.repo_id, "revision": e.revision, "commit": e.commit,
                "downloaded": e.downloaded, "size_bytes": e.size_bytes, "folder": str(e.folder),
            })  # fmt: skip
    else:
        width = max(len("NAME"), *(len(e.name) for e in entries))
        rows = [f"{'NAME':<{width}}  {'DOWNLOADED':<10}  {'SIZE':>9}  FOLDER"]
        for e in entries:
            size = _human_size(e.size_bytes) if e.size_bytes else "-"
            rows.append(f"{e.name:<{width}}  {'yes' if e.downloaded else 'no':<10}  {size:>9}  {e.folder}")
        out.write("\n".join(rows) + "\n")
    out.end()


def _human_size(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as the Hub shows sizes)."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Terminated(BaseException):
    """SIGINT or SIGTERM, raised by our handler so that one clean exit path runs for both.

    A BaseException, so no `except Exception` on the way (ours, click's, a library's) swallows it;
    not a KeyboardInterrupt, which click turns into a bare exit code before main() sees it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


def _on_signal(signum, frame):
    raise Terminated(signum)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: runs the app and maps every known failure to one stderr line and an exit code."""
    exc = _click_exceptions()
    debug = os.environ.get("GPT2CLI_DEBUG") == "1"
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:  # a usage error like any other: the help goes to stderr, not stdout
        try:
            with contextlib.redirect_stdout(sys.stderr):
                command.main(args=["--help"], prog_name="gpt2cli", standalone_mode=False)
        except (OSError, ValueError):  # stderr closed: the exit code still says what happened
            pass
        return 2
    previous = _catch_signals()
    try:
        try:
            code = _run_command(command, args, exc, debug)
        except Terminated as e:  # the signal came while an error was being reported
            code = e.exit_code
        return _flush_stdout(code)
    finally:
        _restore_signals(previous)


def _run_command(command, args: list[str], exc, debug: bool) -> int:
    """Runs the command; every exception becomes one stderr line and an exit code (a traceback too
    under GPT2CLI_DEBUG=1, for bug reports, with the same exit code)."""

    def fail(message: str, code: int) -> int:
        if debug:
            import traceback

            traceback.print_exc()
        note(message)
        return code

    try:
        result = command.main(args=args, prog_name="gpt2cli", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except exc.UsageError as e:
        where = f"; see '{e.ctx.command_path} --help'" if e.ctx else ""
        return fail(f"error: {_one_line(e.format_message())}{where}", 2)
    except exc.ClickException as e:
        return fail(f"error: {_one_line(e.format_message())}", e.exit_code)
    except GPT2CLIError as e:
        return fail(f"error: {_one_line(e)}", e.exit_code)
    except (BrokenPipeError, OutputClosed):
        # The reader went away (`| head`): stop quietly, as `yes | head` does.
        _silence_stdout()
        return 141
    except (Terminated, KeyboardInterrupt, typer.Abort) as e:
        # What was printed stays: the Writer only ever wrote whole characters, and bytes still in
        # stdout's buffer go out with the final flush. A terminal gets its line ended.
        _end_line_on_terminal()
        return getattr(e, "exit_code", 130)
    except SystemExit as e:
        # click exits by itself (status 1) when a write it makes (e.g. --help) hits a closed pipe.
        if isinstance(e.__context__, BrokenPipeError):
            _silence_stdout()
            return 141
        raise
    except MemoryError:
        return fail("error: out of memory; try a smaller model, fewer --num-samples or --beams", 1)
    except OSError as e:
        return fail(f"error: {_one_line(e)}", 1)
    except Exception as e:  # noqa: BLE001 - the last line of defence: never a traceback for users
        return fail(
            f"internal error: {type(e).__name__}: {_one_line(e)}; rerun with GPT2CLI_DEBUG=1 and report the traceback", 1
        )


def _flush_stdout(code: int) -> int:
    """Pushes out what stdout still buffers; a reader gone by now still means 141."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return code or 141
    except (ValueError, OSError):
        pass
    except Terminated as e:  # a signal while the last bytes drain (a reader that stopped reading)
        _silence_stdout()  # so the interpreter's own final flush cannot block again
        return code or e.exit_code
    return code


def _catch_signals() -> dict:
    """SIGINT and SIGTERM raise Terminated from here on; returns the handlers to restore.

    A signal the parent set to be ignored (`nohup`, background jobs) stays ignored.
    """
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            old = signal.getsignal(signum)
            if old is not signal.SIG_IGN:
                signal.signal(signum, _on_signal)
                previous[signum] = old
        except (ValueError, OSError):  # not the main thread (main() called from a thread)
            pass
    return previous


def _restore_signals(previous: dict) -> None:
    for signum, handler in previous.items():
        try:
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, OSError, TypeError):
            pass


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
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    finally:
        os.close(devnull)


def _end_line_on_terminal() -> None:
    try:
        if sys.stdout is not None and sys.stdout.isatty():
            sys.stdout.write("\n")
            sys.stdout.flush()
    except (OSError, ValueError, Terminated):  # Terminated: a second Ctrl-C right after the first
        pass

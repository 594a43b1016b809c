"""A loaded model and its tokenizer, and what can be asked of them: generate, beam search, score.

The CLI (and any other front end) calls these and renders what they return; nothing here prints or
knows about terminals, options or exit codes.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np

from gpt2cli.decoding import beam as beam_module
from gpt2cli.decoding import generate as generate_module
from gpt2cli.decoding.beam import beam_search
from gpt2cli.decoding.generate import NonFiniteLogits, Overflow, check_logits, generate
from gpt2cli.decoding.sampling import Sampler
from gpt2cli.decoding.text import Completion
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.engine.model import GPT2Model, Progress
from gpt2cli.errors import CheckpointError, ModelNotFoundError, OptionError, UsageError
from gpt2cli.spec import GPT2Config
from gpt2cli.store.checkpoint import load_weights
from gpt2cli.store.config import read_config
from gpt2cli.store.layout import CONFIG_FILE, MARKER
from gpt2cli.store.tokenizer import Tokenizer


_LOG_MAX_FLOAT = math.log(sys.float_info.max)


def load_config(folder: Path) -> GPT2Config:
    """A model folder's config.json, after checking the folder is one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such model folder; pass --model a GPT-2 model folder")
    if not (folder / CONFIG_FILE).is_file():
        raise ModelNotFoundError(
            f"{folder}: no config.json, so this is not a model folder; pass --model a GPT-2 model folder"
        )
    return read_config(folder / CONFIG_FILE)


def load_model(folder: Path) -> GPT2Model:
    """A ready GPT2Model from a checkpoint folder (config.json + safetensors)."""
    cfg = load_config(folder)
    return GPT2Model(cfg, load_weights(Path(folder), cfg))


def available_memory() -> int | None:
    """Bytes the system can still hand out without swapping (/proc/meminfo's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel counts in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_memory(needed: int, rows_param: str, rows: int, prompt_tokens: int, max_new_tokens: int) -> None:
    """Raises a usage error, before anything is allocated, when the run's keys and values cannot fit in memory."""
    available = available_memory()
    if available is None or needed <= available:
        return
    raise OptionError(
        f"{{{rows_param}}} {rows} with a {prompt_tokens}-token prompt and {{max_new_tokens}} {max_new_tokens} needs "
        f"~{_size(needed)} for keys and values, {_size(available)} available; "
        f"lower {{{rows_param}}} or {{max_new_tokens}}",
        rows_param, "max_new_tokens",
    )  # fmt: skip


@dataclass(frozen=True)
class Decoded:
    """One finished decoding (a beam, or a greedy or sampled run): its text leaves out a final <|endoftext|>."""

    text: str
    tokens: list[int]
    score: float  # logprob / len(tokens) ** length_penalty, as transformers' sequences_scores
    logprob: float  # sum of the tokens' log-probabilities
    finish_reason: str  # "eos" or "length"


@dataclass(frozen=True)
class Scored:
    tokens: list[int]
    logprobs: np.ndarray  # [T] float32: each token's log-probability given everything before it
    total: float
    perplexity: float


class Session:
    """A model and its tokenizer, loaded once; the weights only when first needed.

    Opened from a folder, the config and tokenizer are read at once and the weights at the first
    call that runs the model, so a run that cannot fit in memory is refused before they load.
    """

    def __init__(self, model: GPT2Model | None, tokenizer: Tokenizer, *, folder: Path | None = None, config: GPT2Config | None = None):
        self._model = model
        self.tokenizer = tokenizer
        self.folder = folder  # where the weights come from (None: a model built in memory)
        self.config = model.config if model is not None else config

    @classmethod
    def open(cls, folder: Path) -> "Session":
        """Reads the folder's config and tokenizer and checks that they belong together."""
        folder = Path(folder)
        config = load_config(folder)
        tokenizer = Tokenizer.from_folder(folder)
        if tokenizer.n_vocab > config.vocab_size:
            raise CheckpointError(
                f"{folder}: the tokenizer has {tokenizer.n_vocab} tokens but config.json's vocab_size is "
                f"{config.vocab_size}; the tokenizer files do not belong to these weights: re-download the model"
            )
        return cls(None, tokenizer, folder=folder, config=config)

    @property
    def model(self) -> GPT2Model:
        if self._model is None:
            self._model = GPT2Model(self.config, load_weights(self.folder, self.config))
        return self._model

    @property
    def eos(self) -> int:
        return self.config.eos_token_id

    @contextmanager
    def _weights_named(self) -> Iterator[None]:
        """NaN/inf logits come out naming the model's folder, with the remedy that fits it."""
        try:
            yield
        except NonFiniteLogits:
            if self.folder is None:
                raise
            downloaded = (self.folder / MARKER).is_file()
            remedy = "re-download the model (gpt2cli download with --force)" if downloaded else "fix or replace its weights"
            raise CheckpointError(
                f"{self.folder}: the model's logits are NaN or infinite: its weights hold NaN/inf values; {remedy}"
            ) from None

    def prompt_ids(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of a prompt; an empty prompt is <|endoftext|> (unconditional generation)."""
        return self.tokenizer.encode(text, allow_special=allow_special) or [self.tokenizer.eot]

    def generate(
        self,
        ids: list[int],
        sampler: Sampler,
        max_new_tokens: int,
        *,
        num_samples: int = 1,
        ignore_eos: bool = False,
        logprobs: bool = False,
        on_overflow: Overflow | str = Overflow.SLIDE,
        stops: tuple[str, ...] = (),
        warn: Callable[[str], None] = lambda message: None,
        progress: Progress | None = None,
    ) -> "Generation":
        """num_samples continuations of ids decoded together; iterate the result to run it step by step.

        Options, the prompt's fit and the memory it needs are checked now, before anything is decoded.
        """
        generate_module.check_options(max_new_tokens, num_samples, on_overflow)
        needed = generate_module.cache_bytes(self.config, len(ids), max_new_tokens, num_samples)
        check_memory(needed, "num_samples", num_samples, len(ids), max_new_tokens)
        steps = generate(
            self.model, ids, sampler, max_new_tokens,
            num_samples=num_samples, eos_token_id=self.eos, ignore_eos=ignore_eos, logprobs=logprobs,
            on_overflow=on_overflow, warn=warn, prefill_progress=progress,
        )  # fmt: skip
        rows = [Completion.start(self.tokenizer.token_bytes, stops) for _ in range(num_samples)]
        return Generation(rows, steps, self._weights_named)

    def beam(self, ids: list[int], *, progress: Progress | None = None, **options) -> list[Decoded]:
        """The best hypotheses of beam search (decoding.beam.beam_search's options), best first."""
        beams, new = options.get("num_beams", 1), options.get("max_new_tokens", 1)
        if isinstance(beams, int) and isinstance(new, int) and beams >= 1 and new >= 1:  # else beam_search says what is wrong
            check_memory(beam_module.cache_bytes(self.config, len(ids), new, beams), "num_beams", beams, len(ids), new)
        with self._weights_named():
            hyps = beam_search(self.model, ids, eos_token_id=self.eos, prefill_progress=progress, **options)
        return [self._decoded(h.tokens, h.score, h.logprob, h.finish_reason) for h in hyps]

    def decode_one(self, ids: list[int], sampler: Sampler, max_new_tokens: int, length_penalty: float = 1.0) -> Decoded:
        """A single greedy or sampled continuation (ending on <|endoftext|> if it comes), scored as a beam is."""
        tokens, logprobs, reason = [], [], "length"
        steps = generate(
            self.model, ids, sampler, max_new_tokens, eos_token_id=self.eos, logprobs=True, on_overflow=Overflow.ERROR
        )
        try:
            with self._weights_named():
                for step in steps:
                    tokens.append(int(step.tokens[0]))
                    logprobs.append(float(step.logprobs[0]))
                    if tokens[-1] == self.eos:
                        reason = "eos"
                        break
        finally:
            steps.close()
        logprob = math.fsum(logprobs)
        return self._decoded(tokens, logprob / len(tokens) ** length_penalty, logprob, reason)

    def score(self, ids: list[int], progress: Progress | None = None) -> Scored:
        """Each token's log-probability given <|endoftext|> and the tokens before it."""
        if not ids:
            raise UsageError("nothing to score: the text is empty")
        n_ctx = self.config.n_positions
        if len(ids) > n_ctx:
            raise UsageError(f"the text has {len(ids)} tokens but the model's context scores at most {n_ctx}; split the text")
        seq = np.asarray([[self.tokenizer.eot] + ids])  # [1, T+1]
        cache = self.model.new_cache(1, len(ids))
        logits = self.model.forward(seq[:, :-1], cache, all_logits=True, progress=progress)[0]  # [T, V]
        with self._weights_named():
            logprobs = log_softmax(check_logits(logits))[np.arange(len(ids)), ids]  # [T]
        total = float(logprobs.sum())
        # A model with huge (finite) logits can make the mean so negative that exp overflows: inf.
        mean = -total / len(ids)
        return Scored(ids, logprobs, total, math.exp(mean) if mean < _LOG_MAX_FLOAT else math.inf)

    def _decoded(self, tokens: list[int], score: float, logprob: float, finish_reason: str) -> Decoded:
        shown = tokens[:-1] if tokens and tokens[-1] == self.eos else tokens
        return Decoded(self.tokenizer.decode(shown), tokens, score, logprob, finish_reason)


class Generation:
    """A running generate(): iterating it decodes one step at a time and updates `rows`.

    Stops early once every row has ended (eos or a stop string); when done, rows that are still
    going end with "length".
    """

    def __init__(self, rows: list[Completion], steps: Iterator, errors: Callable[[], ContextManager] = nullcontext):
        self.rows = rows
        self._steps = steps
        self._errors = errors  # translates the errors decoding raises (Session names the model's folder)

    def __iter__(self) -> Iterator[list[Completion]]:
        try:
            with self._errors():
                yield from self._run()
        finally:
            self._steps.close()
            for sample in self.rows:
                sample.finish_reason = sample.finish_reason or "length"

    def _run(self) -> Iterator[list[Completion]]:
        for step in self._steps:
            for row, sample in enumerate(self.rows):
                if sample.finish_reason:
                    continue
                if step.eos[row]:
                    sample.finish_reason = "eos"
                    continue
                sample.add(int(step.tokens[row]), None if step.logprobs is None else float(step.logprobs[row]))
            yield self.rows
            if all(s.finish_reason for s in self.rows):
                break

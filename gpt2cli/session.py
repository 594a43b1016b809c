"""A loaded model and its tokenizer, and what can be asked of them: generate, beam search, score.

The CLI (and any other front end) calls these and renders what they return; nothing here prints or
knows about terminals, options or exit codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from gpt2cli.decoding.beam import beam_search
from gpt2cli.decoding.generate import Overflow, check_logits, fit_prompt, generate
from gpt2cli.decoding.sampling import Sampler
from gpt2cli.decoding.text import Completion
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.engine.model import GPT2Model, Progress
from gpt2cli.errors import CheckpointError, ModelNotFoundError, UsageError
from gpt2cli.store.checkpoint import load_weights
from gpt2cli.store.config import read_config
from gpt2cli.store.layout import CONFIG_FILE
from gpt2cli.store.tokenizer import Tokenizer


def load_model(folder: Path) -> GPT2Model:
    """A ready GPT2Model from a checkpoint folder (config.json + safetensors)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such model folder; pass --model a GPT-2 model folder")
    if not (folder / CONFIG_FILE).is_file():
        raise ModelNotFoundError(
            f"{folder}: no config.json, so this is not a model folder; pass --model a GPT-2 model folder"
        )
    cfg = read_config(folder / CONFIG_FILE)
    return GPT2Model(cfg, load_weights(folder, cfg))


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
    """A model and its tokenizer, loaded once."""

    def __init__(self, model: GPT2Model, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def open(cls, folder: Path) -> "Session":
        """Loads the folder's weights and tokenizer, and checks that they belong together."""
        model = load_model(folder)
        tokenizer = Tokenizer.from_folder(folder)
        if tokenizer.n_vocab > model.config.vocab_size:
            raise CheckpointError(
                f"{folder}: the tokenizer has {tokenizer.n_vocab} tokens but config.json's vocab_size is "
                f"{model.config.vocab_size}; the tokenizer files do not belong to these weights: re-download the model"
            )
        return cls(model, tokenizer)

    @property
    def eos(self) -> int:
        return self.model.config.eos_token_id

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

        Options and the prompt's fit are checked now, before anything is decoded.
        """
        steps = generate(
            self.model, ids, sampler, max_new_tokens,
            num_samples=num_samples, eos_token_id=self.eos, ignore_eos=ignore_eos, logprobs=logprobs,
            on_overflow=on_overflow, warn=warn, prefill_progress=progress,
        )  # fmt: skip
        rows = [Completion.start(self.tokenizer.token_bytes, stops) for _ in range(num_samples)]
        # generate() has checked the fit already (and warned): this only learns the length it kept
        seen = fit_prompt(ids, self.model.config.n_positions, max_new_tokens, on_overflow, lambda message: None)
        return Generation(rows, steps, len(seen))

    def beam(self, ids: list[int], *, progress: Progress | None = None, **options) -> list[Decoded]:
        """The best hypotheses of beam search (decoding.beam.beam_search's options), best first."""
        hyps = beam_search(self.model, ids, eos_token_id=self.eos, prefill_progress=progress, **options)
        return [self._decoded(h.tokens, h.score, h.logprob, h.finish_reason) for h in hyps]

    def decode_one(self, ids: list[int], sampler: Sampler, max_new_tokens: int, length_penalty: float = 1.0) -> Decoded:
        """A single greedy or sampled continuation (ending on <|endoftext|> if it comes), scored as a beam is."""
        tokens, logprobs, reason = [], [], "length"
        steps = generate(
            self.model, ids, sampler, max_new_tokens, eos_token_id=self.eos, logprobs=True, on_overflow=Overflow.ERROR
        )
        try:
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
        n_ctx = self.model.config.n_positions
        if len(ids) > n_ctx:
            raise UsageError(f"the text has {len(ids)} tokens but the model's context scores at most {n_ctx}; split the text")
        seq = np.asarray([[self.tokenizer.eot] + ids])  # [1, T+1]
        cache = self.model.new_cache(1, len(ids))
        logits = self.model.forward(seq[:, :-1], cache, all_logits=True, progress=progress)[0]  # [T, V]
        logprobs = log_softmax(check_logits(logits))[np.arange(len(ids)), ids]  # [T]
        total = float(logprobs.sum())
        return Scored(ids, logprobs, total, math.exp(-total / len(ids)))

    def _decoded(self, tokens: list[int], score: float, logprob: float, finish_reason: str) -> Decoded:
        shown = tokens[:-1] if tokens and tokens[-1] == self.eos else tokens
        return Decoded(self.tokenizer.decode(shown), tokens, score, logprob, finish_reason)


class Generation:
    """A running generate(): iterating it decodes one step at a time and updates `rows`.

    Stops early once every row has ended (eos or a stop string); when done, rows that are still
    going end with "length".
    """

    def __init__(self, rows: list[Completion], steps: Iterator, prompt_tokens: int):
        self.rows = rows
        self.prompt_tokens = prompt_tokens  # the prompt's tokens the model reads (after --on-overflow's cut)
        self._steps = steps

    def __iter__(self) -> Iterator[list[Completion]]:
        try:
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
        finally:
            self._steps.close()
            for sample in self.rows:
                sample.finish_reason = sample.finish_reason or "length"

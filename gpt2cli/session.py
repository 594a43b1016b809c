"""A loaded model and its tokenizer, and what can be asked of them: generate, beam search, score.

The CLI (and any other front end) calls these and renders what they return; nothing here prints or
knows about terminals, options or exit codes.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np

from gpt2cli.decoding import beam as beam_module
from gpt2cli.decoding import generate as generate_module
from gpt2cli.decoding.beam import beam_search
from gpt2cli.decoding.contrastive import contrastive_search
from gpt2cli.decoding.generate import NonFiniteLogits, Overflow, check_logits, fit_prompt, generate
from gpt2cli.decoding.group_beam import group_beam_search
from gpt2cli.decoding.prefix import Prefills, Prefix
from gpt2cli.decoding.scores import EMPTY_TEXT, Scored, check_scorable, check_stride, perplexity
from gpt2cli.decoding.sampling import Penalties, Sampler, SamplingOptions
from gpt2cli.decoding.strategies import Strategy
from gpt2cli.decoding.text import Completion
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.engine.model import GPT2Model, Progress, layout_copy_bytes
from gpt2cli.errors import CheckpointError, ModelNotFoundError, UsageError
from gpt2cli.request import Request, check_memory
from gpt2cli.spec import GPT2Config
from gpt2cli.store.checkpoint import load_weights
from gpt2cli.store.config import read_config
from gpt2cli.store.layout import CONFIG_FILE, MARKER, check_readable, remedy
from gpt2cli.store.tokenizer import Tokenizer


def load_config(folder: Path) -> GPT2Config:
    """A model folder's config.json, after checking the folder is one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such model folder; pass --model a GPT-2 model folder")
    check_readable(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ModelNotFoundError(
            f"{folder}: no config.json, so this is not a model folder; pass --model a GPT-2 model folder"
        )
    return read_config(folder / CONFIG_FILE)


def load_model(folder: Path) -> GPT2Model:
    """A ready GPT2Model from a checkpoint folder (config.json + safetensors)."""
    cfg = load_config(folder)
    return GPT2Model(cfg, load_weights(Path(folder), cfg))


@dataclass(frozen=True)
class Decoded:
    """One finished decoding (a beam, or a greedy or sampled run): its text leaves out a final <|endoftext|>."""

    text: str
    tokens: list[int]
    score: float  # logprob / len(tokens) ** length_penalty, as transformers' sequences_scores
    logprob: float  # sum of the tokens' log-probabilities
    finish_reason: str  # "eos" or "length"


@dataclass(frozen=True)
class Compared:
    """One row of `compare`: a strategy's continuation and the numbers beside it."""

    strategy: "Strategy"
    text: str
    tokens: list[int]  # the continuation, with a final <|endoftext|> if it ended on one
    logprobs: list[float]  # each token's log-probability under the model's raw distribution
    finish_reason: str  # "eos" or "length"

    @property
    def mean_logprob(self) -> float | None:
        return math.fsum(self.logprobs) / len(self.logprobs) if self.logprobs else None


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
                f"{config.vocab_size}; the tokenizer files do not belong to these weights: {remedy(folder)}"
            )
        return cls(None, tokenizer, folder=folder, config=config)

    @property
    def model(self) -> GPT2Model:
        if self._model is None:
            self._model = GPT2Model(self.config, load_weights(self.folder, self.config))
        return self._model

    def copies_to_come(self) -> int:
        """Bytes of the engine's weight copies (engine.model.layout_copy_bytes) this session's model has
        still to make: all of them before the weights load, none once a run has decoded."""
        return layout_copy_bytes(self.config) if self._model is None else self._model.pending_copy_bytes()

    @property
    def eos(self) -> int:
        return self.config.eos_token_id

    @contextmanager
    def naming_weights(self) -> Iterator[None]:
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
        penalties: Penalties = Penalties(),
        contrastive: tuple[float, int] | None = None,
        stops: tuple[str, ...] = (),
        warn: Callable[[str], None] = lambda message: None,
        progress: Progress | None = None,
        prefix: Prefix | None = None,
    ) -> "Generation":
        """num_samples continuations of ids decoded together; iterate the result to run it step by step.

        contrastive=(penalty_alpha, top_k): contrastive search instead of the sampler (one row; it does
        not slide). Options and the prompt's fit are checked now, before anything is decoded.
        prefix: the prompt already prefilled (Prefills: every_position's for contrastive search,
        last_position's otherwise), shared with other decodings.
        """
        generate_module.check_options(max_new_tokens, num_samples, on_overflow)
        rows_param, rows = ("num_samples", num_samples) if contrastive is None else ("top_k", contrastive[1])
        if contrastive is None:
            needed = generate_module.cache_bytes(self.config, len(ids), max_new_tokens, num_samples)
        else:  # the k candidates' rows (never more than the vocabulary has) hold the whole sequence each
            needed = generate_module.cache_bytes(self.config, len(ids), max_new_tokens, 1) * min(rows, self.config.vocab_size)
        check_memory(needed, rows_param, rows, len(ids), max_new_tokens, self.copies_to_come())
        if contrastive is not None:
            if Overflow.of(on_overflow) is Overflow.TRUNCATE:
                ids = fit_prompt(ids, self.config.n_positions, max_new_tokens, Overflow.TRUNCATE, warn, slides=False)
            alpha, top_k = contrastive
            steps = contrastive_search(
                self.model, ids, penalty_alpha=alpha, top_k=top_k, max_new_tokens=max_new_tokens,
                eos_token_id=None if ignore_eos else self.eos, penalties=penalties, logprobs=logprobs,
                prefill_progress=progress, prefix=prefix,
            )  # fmt: skip
            return Generation([Completion.start(self.tokenizer.token_bytes, stops)], steps, len(ids), self.naming_weights)
        steps = generate(
            self.model, ids, sampler, max_new_tokens,
            num_samples=num_samples, eos_token_id=self.eos, ignore_eos=ignore_eos, logprobs=logprobs,
            on_overflow=on_overflow, penalties=penalties, warn=warn, prefill_progress=progress, prefix=prefix,
        )  # fmt: skip
        rows = [Completion.start(self.tokenizer.token_bytes, stops) for _ in range(num_samples)]
        # generate() has checked the fit already (and warned): this only learns the length it kept
        seen = fit_prompt(ids, self.config.n_positions, max_new_tokens, on_overflow, lambda message: None)
        return Generation(rows, steps, len(seen), self.naming_weights)

    def run(
        self, ids: list[int], request: Request, *, logprobs: bool = False, warn: Callable[[str], None] = lambda m: None,
        progress: Progress | None = None,
    ) -> "Generation":
        """The generation a Request asks for (checked now, before anything is decoded)."""
        request.check()
        return self.generate(
            ids, Sampler(request.sampling, request.seed), request.max_tokens, num_samples=request.num_samples,
            ignore_eos=request.ignore_eos, logprobs=logprobs, on_overflow=request.on_overflow,
            penalties=request.penalties, contrastive=request.contrastive, stops=request.stop, warn=warn,
            progress=progress,
        )  # fmt: skip

    def beam(self, ids: list[int], *, progress: Progress | None = None, prefix: Prefix | None = None, **options) -> list[Decoded]:
        """The best hypotheses of beam search (decoding.beam.beam_search's options), best first; with
        num_groups and diversity_penalty, diverse beam search (decoding.group_beam). prefix: ids already
        prefilled (Prefills.last_position), shared with other decodings."""
        beams, new = options.get("num_beams", 1), options.get("max_new_tokens", 1)
        if isinstance(beams, int) and isinstance(new, int) and beams >= 1 and new >= 1:  # else beam_search says what is wrong
            needed = beam_module.cache_bytes(self.config, len(ids), new, beams)
            check_memory(needed, "num_beams", beams, len(ids), new, self.copies_to_come())
        search = group_beam_search if "num_groups" in options else beam_search  # 1 group: beam_search
        with self.naming_weights():
            hyps = search(self.model, ids, eos_token_id=self.eos, prefill_progress=progress, prefix=prefix, **options)
        return [self._decoded(h.tokens, h.score, h.logprob, h.finish_reason) for h in hyps]

    def decode_one(self, ids: list[int], sampler: Sampler, max_new_tokens: int, length_penalty: float = 1.0) -> Decoded:
        """A single greedy or sampled continuation (ending on <|endoftext|> if it comes), scored as a beam is."""
        tokens, logprobs, reason = [], [], "length"
        steps = generate(
            self.model, ids, sampler, max_new_tokens, eos_token_id=self.eos, logprobs=True, on_overflow=Overflow.ERROR
        )
        try:
            with self.naming_weights():
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
        check_scorable(ids, self.config.n_positions)
        seq = np.asarray([[self.tokenizer.eot] + ids])  # [1, T+1]
        cache = self.model.new_cache(1, len(ids))
        logits = self.model.forward(seq[:, :-1], cache, all_logits=True, progress=progress)[0]  # [T, V]
        with self.naming_weights():
            logprobs = log_softmax(check_logits(logits))[np.arange(len(ids)), ids]  # [T]
        return Scored.of(ids, logprobs)

    def token_logprobs(self, ids: list[int], continuation: list[int], prefix: Prefix | None = None) -> list[float]:
        """Each continuation token's log-probability under the raw distribution, given ids and the tokens
        before it: the last position's logits of ids' prefill (Prefix.last_position: prefix, shared, or
        one of our own), then one pass over the continuation from a copy of its keys and values."""
        if not continuation:
            return []
        needed = len(ids) + len(continuation) - 1  # positions: the last token is never fed
        if prefix is None:
            prefix = Prefix.last_position(self.model, ids, needed)
        else:
            prefix.check(ids, needed)
        logits = prefix.logits  # [1, V]: the first token's
        if len(continuation) > 1:
            cache = prefix.cache.repeat(1)  # this pass's own copy of the prompt's keys and values, dropped after
            rest = self.model.forward(np.asarray([continuation[:-1]]), cache, all_logits=True)[0]  # [n-1, V]
            logits = np.concatenate([logits, rest])  # [n, V]
        with self.naming_weights():
            return log_softmax(check_logits(logits))[np.arange(len(continuation)), continuation].astype(float).tolist()

    def prefills(self, ids: list[int], max_new_tokens: int, strategies: "list[Strategy] | None" = None) -> Prefills:
        """ids' prefills for compare() rows of up to max_new_tokens: the prompt runs through the model once
        (for both kinds at once when the strategies include contrastive search)."""
        both = any(s.name == "contrastive" for s in strategies or ())
        return Prefills(self.model, ids, min(self.config.n_positions, len(ids) + max_new_tokens), both=both)

    def compare(
        self, ids: list[int], strategy: Strategy, max_new_tokens: int, seed: int | None = 0, prefills: Prefills | None = None
    ) -> Compared:
        """One strategy's continuation of ids (which must leave room for max_new_tokens in the context),
        from ids' shared prefills (self.prefills) or, without, prefilling them itself: the same row, bit
        for bit. Rows are never batched together: a batched product rounds differently from one row's,
        and each row must equal its decoding run alone. A row allocates what its decoding does after a
        prefill (sampled: a copy of the prompt's keys and values; beam: the beams' new positions only;
        diverse beam, contrastive: a copy per beam or candidate), and its log-probability pass a copy."""
        s, penalties = strategy.settings, strategy.penalties()
        last = prefills.last_position() if prefills else None
        if strategy.name in ("beam", "diverse-beam"):
            best = self.beam(ids, max_new_tokens=max_new_tokens, prefix=last, **strategy.beam_options())[0]
            tokens, reason = best.tokens, best.finish_reason
        else:
            searched = (s["alpha"], s["k"]) if strategy.name == "contrastive" else None
            sampler = Sampler(SamplingOptions(0.0, 0, 1.0) if searched else strategy.sampling(), seed)
            start = None if prefills is None else prefills.every_position() if searched else last
            run = self.generate(
                ids, sampler, max_new_tokens, penalties=penalties, contrastive=searched, on_overflow=Overflow.ERROR,
                prefix=start,
            )  # fmt: skip
            for _ in run:
                pass
            row = run.rows[0]
            reason = row.finish_reason
            tokens = row.tokens + ([self.eos] if reason == "eos" else [])
        shown = tokens[:-1] if tokens and tokens[-1] == self.eos else tokens
        return Compared(strategy, self.tokenizer.decode(shown), tokens, self.token_logprobs(ids, tokens, last), reason)

    def check_stride(self, stride: int) -> int:
        """Raises InvalidValue unless 1 <= stride <= the context; returns the context."""
        return check_stride(self.config.n_positions, stride)

    def score_strided(self, ids: list[int], stride: int, progress: Progress | None = None) -> Scored:
        """Scores a text of any length with transformers' sliding-window recipe ("Perplexity of
        fixed-length models"), on <|endoftext|> + ids: windows of the context's length start every
        `stride` tokens, and each window scores only the tokens no earlier window scored, so every
        token is scored once, with at least n_ctx - stride tokens of history where the text has them."""
        n_ctx = self.check_stride(stride)
        if not ids:
            raise UsageError(EMPTY_TEXT)
        x = np.asarray([self.tokenizer.eot] + ids)  # [T+1]
        logprobs = np.full(len(ids), np.nan, np.float32)  # [T]: logprobs[j - 1] is x[j]'s
        begin, scored, windows = 0, 1, -(-max(len(x) - n_ctx, 0) // stride) + 1
        for window in range(windows):
            end = min(begin + n_ctx, len(x))
            h = self.model.hidden_states(x[None, begin:end], self.model.new_cache(1, end - begin))[0]  # [w, n_embd]
            # The positions no earlier window scored; a window's first token has no history in it (only
            # with stride == n_ctx), so, as in the recipe, it stays unscored (NaN).
            targets = np.arange(max(scored, begin + 1), end)
            with self.naming_weights():
                lp = log_softmax(check_logits(self.model.logits(h[targets - begin - 1])))  # [n, V]
            logprobs[targets - 1] = lp[np.arange(len(targets)), x[targets]]
            scored = end
            if progress is not None:
                progress(window + 1, windows)
            begin += stride
        counted = ~np.isnan(logprobs)
        total = float(logprobs[counted].sum(dtype=np.float64))
        return Scored(ids, logprobs, total, perplexity(total, int(counted.sum())))

    def _decoded(self, tokens: list[int], score: float, logprob: float, finish_reason: str) -> Decoded:
        shown = tokens[:-1] if tokens and tokens[-1] == self.eos else tokens
        return Decoded(self.tokenizer.decode(shown), tokens, score, logprob, finish_reason)


def completion_record(row: Completion, prompt_tokens: int) -> dict:
    """A finished row as `generate --json` and `batch` print it (its held-back text flushed)."""
    kept = row.kept()
    row.flush()
    return {
        "text": row.text.text,
        "tokens": row.tokens[:kept],
        "logprobs": row.logprobs[:kept],
        "finish_reason": row.finish_reason,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": kept,
    }


class Generation:
    """A running generate(): iterating it decodes one step at a time and updates `rows`.

    Stops early once every row has ended (eos or a stop string); when done, rows that are still
    going end with "length".
    """

    def __init__(
        self, rows: list[Completion], steps: Iterator, prompt_tokens: int, errors: Callable[[], ContextManager] = nullcontext
    ):
        self.rows = rows
        self._steps = steps
        self.prompt_tokens = prompt_tokens  # the prompt's tokens the model reads (after --on-overflow's cut)
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

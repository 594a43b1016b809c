"""Diverse (group) beam search, step for step transformers 4.55.4's num_beam_groups / diversity_penalty.

The beams split into groups that search side by side in one batch; within a step the groups choose
in order, and each token an earlier group chose at this step costs the later groups
diversity_penalty per time it was chosen (Hamming diversity). The penalty stays in the scores.
"""

from __future__ import annotations

import numpy as np

from gpt2cli.decoding.beam import _NEG, F32, Hypothesis, beam_search, top_k, validate_options
from gpt2cli.decoding.generate import check_logits
from gpt2cli.decoding.prefix import Prefix
from gpt2cli.decoding.sampling import Penalties, _is_int
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.errors import ContextOverflowError, InvalidValue, UsageError


class _Finished:
    """One group's best finished hypotheses: transformers' BeamHypotheses, ties and all."""

    def __init__(self, size: int, length_penalty: float, early_stopping: bool | str, max_new_tokens: int):
        self.size, self.length_penalty, self.early_stopping = size, length_penalty, early_stopping
        self.max_new_tokens = max_new_tokens
        self.beams: list[tuple[float, Hypothesis]] = []  # in the order added (what the final sort's ties keep)
        self.worst = 1e9

    def add(self, tokens: list[int], logprob: float, finish_reason: str) -> None:
        score = logprob / (len(tokens) ** self.length_penalty)
        if len(self.beams) < self.size or score > self.worst:
            self.beams.append((score, Hypothesis(tokens, score, logprob, finish_reason)))
            if len(self.beams) > self.size:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]  # the worst; the older of equals
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_logprob: float, step: int) -> bool:
        """Whether no running beam can beat the worst finished one (best_logprob: the step's best candidate)."""
        if len(self.beams) < self.size:
            return False
        if self.early_stopping is True:
            return True
        length = step
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            length = self.max_new_tokens  # the longest a running beam can get divides its score most
        return self.worst >= best_logprob / (length**self.length_penalty)


def validate_group_options(*, num_beams: int, num_groups: int, diversity_penalty: float) -> None:
    """Raises InvalidValue for a group count that does not split the beams or a penalty that is not > 0."""
    if not _is_int(num_groups) or num_groups < 1 or not _is_int(num_beams) or num_beams % num_groups:
        raise InvalidValue(
            "num_groups", f"must divide {{num_beams}} ({num_beams}) into equal groups", num_groups, "num_beams"
        )
    if num_groups > 1:
        try:
            ok = bool(np.isfinite(diversity_penalty) and diversity_penalty > 0)
        except TypeError:
            ok = False
        if not ok:
            raise InvalidValue(
                "diversity_penalty", "must be a finite number > 0 when {num_groups} > 1", diversity_penalty, "num_groups"
            )


def group_beam_search(
    model,
    prompt_ids: list[int],
    *,
    num_beams: int,
    num_groups: int,
    diversity_penalty: float,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    num_return: int | None = None,
    prefill_progress=None,
    prefix: Prefix | None = None,
) -> list[Hypothesis]:
    """The best `num_return` hypotheses of all groups, best first, as transformers 4.55.4's
    generate(num_beams=..., num_beam_groups=..., diversity_penalty=...) finds them (pad = eos).

    Each group keeps num_beams / num_groups beams and finished hypotheses and stops on its own
    (early_stopping as in beam_search, judged on the step's best candidate); a finished group
    feeds <|endoftext|> while the others run on, which counts against <|endoftext|> for later groups.
    Scores and logprobs include the diversity penalties paid. num_groups=1 is beam_search. prefix: as
    beam_search's (Prefix.last_position of prompt_ids; read, never written).
    """
    validate_group_options(num_beams=num_beams, num_groups=num_groups, diversity_penalty=diversity_penalty)
    common = dict(
        num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
        early_stopping=early_stopping, no_repeat_ngram_size=no_repeat_ngram_size,
        repetition_penalty=repetition_penalty, num_return=num_beams if num_return is None else num_return,
    )  # fmt: skip
    if num_groups == 1:
        return beam_search(model, prompt_ids, eos_token_id=eos_token_id, prefill_progress=prefill_progress, prefix=prefix, **common)
    validate_options(**common)
    if len(prompt_ids) == 0:
        raise UsageError("beam search needs at least one prompt token (pass [eos] for an empty prompt)")
    cfg = model.config
    total = len(prompt_ids) + max_new_tokens
    if total > cfg.n_positions:
        raise ContextOverflowError(
            f"prompt ({len(prompt_ids)} tokens) + {{max_new_tokens}} ({max_new_tokens}) = {total} tokens exceeds "
            f"the model's context of {cfg.n_positions}; beam search does not slide, so shorten one of them",
            "max_new_tokens",
        )
    search = _GroupSearch(
        model, prompt_ids, num_groups, F32(diversity_penalty), Penalties(repetition_penalty, no_repeat_ngram_size),
        cfg.eos_token_id if eos_token_id is None else eos_token_id,
        [_Finished(num_beams // num_groups, length_penalty, early_stopping, max_new_tokens) for _ in range(num_groups)],
    )  # fmt: skip
    if prefix is None:
        prefix = Prefix.last_position(model, prompt_ids, total, prefill_progress)
    else:
        prefix.check(prompt_ids, total)
    # Every beam's own copy of the prompt's keys and values (reordered in place); a prefill of our own is
    # dropped once copied.
    start = (prefix.logits.copy(), prefix.cache.repeat(num_beams))  # [1, V] (its log-softmax is taken in place)
    del prefix
    search.run(num_beams, max_new_tokens, *start)
    candidates = sorted((b for group in search.finished for b in group.beams), key=lambda b: b[0])
    # transformers pops the best from the end of an ascending stable sort: of equal scores, the last added first.
    return [candidates.pop()[1] for _ in range(common["num_return"])]


class _GroupSearch:
    """The state of one group beam search: sequences, running scores, each group's finished list."""

    def __init__(self, model, prompt_ids, num_groups, diversity, penalties, eos, finished):
        self.model, self.prompt_ids, self.num_groups = model, list(prompt_ids), num_groups
        self.diversity, self.penalties, self.eos, self.finished = diversity, penalties, eos, finished
        self.done = [False] * num_groups

    def run(self, num_beams: int, max_new_tokens: int, logits: np.ndarray, cache) -> None:
        n_prompt = len(self.prompt_ids)
        size = num_beams // self.num_groups
        total = n_prompt + max_new_tokens
        self.n_prompt = n_prompt
        self.sequences = np.empty((num_beams, total), dtype=np.int64)  # [beams, prompt + new]
        self.sequences[:, :n_prompt] = self.prompt_ids
        # Only each group's first beam starts live, so a group's beams do not all pick the same token.
        self.running = np.full(num_beams, _NEG, dtype=F32)  # [beams]
        self.running[::size] = 0.0
        identity = np.arange(num_beams)

        for step in range(1, max_new_tokens + 1):
            cur = n_prompt + step - 1  # tokens in each running sequence
            logprobs = log_softmax(check_logits(logits), inplace=True)  # [beams, V] ([1, V] at step 1)
            if logprobs.shape[0] != num_beams:
                logprobs = np.repeat(logprobs, num_beams, axis=0)  # [beams, V]: every beam is the prompt
            parents, tokens = self.step(logprobs, size, step)  # [beams], [beams]
            before = self.sequences
            self.sequences = before[parents]
            self.sequences[:, cur] = tokens
            if all(self.done) or step == max_new_tokens:
                break
            # At step 1 every cache row holds the same prompt, so the parents need no copying.
            if step > 1 and not np.array_equal(parents, identity):
                same = before[:, :cur] == before[parents, :cur]  # [beams, cur]
                cache.reorder(parents, same_prefix=np.where(same.all(axis=1), cur, same.argmin(axis=1)))
            logits = self.model.forward(tokens[:, None], cache)  # [beams, V]
        for g, group in enumerate(self.finished):  # transformers' finalize: running beams of unfinished groups
            if not self.done[g]:
                for row in range(g * size, (g + 1) * size):
                    group.add(self.sequences[row, n_prompt:].tolist(), float(self.running[row]), "length")

    def step(self, logprobs: np.ndarray, size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Every group's choice for this step, in group order: (parent row, token) per beam row.

        logprobs [beams, V] is changed in place (penalties); self.running takes the new scores.
        """
        num_beams, vocab = logprobs.shape
        parents = np.arange(num_beams)  # [beams]
        tokens = np.full(num_beams, self.eos, dtype=np.int64)  # [beams]: a finished group feeds eos (pad)
        cur = self.n_prompt + step - 1
        for g in range(self.num_groups):
            rows = slice(g * size, (g + 1) * size)
            if self.done[g]:
                self.running[rows] = 0.0
                continue
            block = logprobs[rows]  # [size, V] view
            if g > 0:  # Hamming diversity: the tokens earlier groups chose at this step
                chosen = np.bincount(tokens[: g * size], minlength=vocab)[:vocab]  # [V]
                block -= self.diversity * chosen.astype(F32)
            if self.penalties.active:
                self.penalties.apply(block, self.sequences[rows, :cur])
            local, tokens[rows], self.running[rows] = self.choose(g, block, size, step)
            parents[rows] = g * size + local
        return parents, tokens

    def choose(self, g: int, block: np.ndarray, size: int, step: int):
        """One group's BeamSearchScorer.process: its next beams as (parent within group, token, score)."""
        vocab = block.shape[1]
        totals = (block + self.running[g * size : (g + 1) * size, None]).ravel()  # [size * V]
        top = top_k(totals, 2 * size)  # [2 * size], best first
        top_scores = totals[top]  # [2 * size] float32
        local, picked = np.divmod(top, vocab)  # [2 * size], [2 * size]
        keep: list[int] = []
        for rank in range(len(top)):
            if picked[rank] == self.eos:
                if rank < size:  # only the group's best `size` candidates may finish
                    row = g * size + int(local[rank])
                    tokens = self.sequences[row, self.n_prompt : self.n_prompt + step - 1].tolist() + [self.eos]
                    self.finished[g].add(tokens, float(top_scores[rank]), "eos")
            else:
                keep.append(rank)
            if len(keep) == size:
                break
        assert len(keep) == size, "each parent row has one eos candidate at most, so 2 * size leave size"
        self.done[g] = self.finished[g].is_done(float(top_scores[0]), step)
        return local[keep], picked[keep], top_scores[keep]

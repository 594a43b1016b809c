"""Texts scored together (`batch --score`): grouped by length (batch.engine.prefill_groups), each
group right-padded into one pass (GPT2Model.padded_hidden_states), every real position's hidden
state through the LM head in long products rather than one short one per text.

A text's result is what Session.score gives it, to rounding: a product over many rows rounds
differently from a product over one text's (OpenBLAS picks kernels and tiles by shape), so the
log-probabilities agree to about 1e-6; its tokens, and which texts fail and how, are the same.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from gpt2cli.batch.engine import prefill_groups
from gpt2cli.decoding.generate import check_logits
from gpt2cli.engine.kernels import log_softmax
from gpt2cli.errors import UsageError
from gpt2cli.decoding.scores import Scored, check_scorable
from gpt2cli.session import Session

# Positions per LM-head product: [1024, 50257] float32 logits take 206 MB, what `score` takes for a
# whole GPT-2 context; more rows would only make the product bigger, not faster.
LOGIT_ROWS = 1024


def score_many(session: Session, texts: list[list[int]]) -> Iterator[tuple[int, Scored | UsageError]]:
    """(index in texts, its Scored as Session.score gives it, or the UsageError score raises for it: an
    empty text, or one longer than the context): the errors first, then group by group as each
    pass finishes."""
    valid = []
    for i, ids in enumerate(texts):
        try:
            check_scorable(ids, session.config.n_positions)
        except UsageError as e:
            yield i, e
            continue
        valid.append(i)
    # Each text runs as score runs it: <|endoftext|> and every token but the last, len(ids) positions.
    for group in prefill_groups([len(texts[i]) for i in valid]):
        members = [valid[g] for g in group]
        yield from zip(members, score_group(session, [texts[i] for i in members]))


def score_group(session: Session, texts: list[list[int]]) -> list[Scored]:
    """Non-empty texts that fit the context, scored in one padded pass over a cache as long as the
    longest (not a whole context per text)."""
    model = session.model
    rows = [[session.tokenizer.eot] + ids[:-1] for ids in texts]  # what each token is scored after
    cache = model.new_cache(len(rows), max(len(r) for r in rows))
    h, lengths = model.padded_hidden_states(rows, cache)  # [k, T_max, n_embd], [k]
    del cache  # only the hidden states are needed
    real = np.arange(h.shape[1])[None, :] < lengths[:, None]  # [k, T_max]: positions that are not padding
    states = h[real]  # [N, n_embd]: row 0's positions, then row 1's, ...
    targets = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in texts])  # [N]
    logprobs = np.empty(len(targets), np.float32)  # [N]
    with session.naming_weights():
        for start in range(0, len(targets), LOGIT_ROWS):
            part = slice(start, start + LOGIT_ROWS)
            lp = log_softmax(check_logits(model.logits(states[part])), inplace=True)  # [n, V]
            logprobs[part] = lp[np.arange(len(lp)), targets[part]]
    ends = np.cumsum(lengths)
    return [Scored.of(ids, logprobs[end - len(ids) : end].copy()) for ids, end in zip(texts, ends)]

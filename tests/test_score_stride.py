"""score --stride: transformers' sliding-window perplexity recipe, on <|endoftext|> + the text, each
token scored once; per-token log-probabilities and perplexity equal the recipe run with transformers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpt2cli.errors import InvalidValue
from gpt2cli.session import Session
from tests.support import models as modelfactory
from tests.support.cli import assert_one_error_line, run
from tests.support.reference import load_reference

N_CTX = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return modelfactory.write_model(tmp_path_factory.mktemp("stride") / "m", n_positions=N_CTX, seed=51)


def text_ids(n: int, vocab: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab - 1, n).tolist()


def recipe(ref, ids: list[int], stride: int, eot: int) -> np.ndarray:
    """The guide's loop (windows of max_length every stride, labels -100 but for the new tokens), on
    <|endoftext|> + ids, keeping each scored token's log-probability instead of only the mean loss."""
    import torch

    x = torch.tensor([[eot] + ids])
    seq_len, max_length = x.shape[1], ref.config.n_positions
    out, prev_end = [], 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        window = x[:, begin:end]
        target = window.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            logits = ref(window).logits[0]
        lp = torch.log_softmax(logits[:-1].float(), dim=-1)  # position i predicts window[i + 1]
        labels = target[0, 1:]
        keep = labels != -100
        out.append(lp[keep].gather(1, labels[keep][:, None])[:, 0].numpy())
        prev_end = end
        if end == seq_len:
            break
    return np.concatenate(out)


@pytest.mark.parametrize("n,stride", [(200, 16), (200, 32), (200, 64), (63, 8), (64, 1), (150, 50), (5, 64)])
def test_per_token_logprobs_and_perplexity_equal_the_recipe_in_transformers(folder, n, stride):
    session = Session.open(folder)
    ref = load_reference(folder)
    ids = text_ids(n, session.model.config.vocab_size, seed=n + stride)
    scored = session.score_strided(ids, stride)
    expected = recipe(ref, ids, stride, session.tokenizer.eot)
    ours = scored.logprobs[~np.isnan(scored.logprobs)]
    unscored = 0 if stride < N_CTX else max(0, -(-(n + 1 - N_CTX) // stride))  # each later window's first token
    assert len(scored.logprobs) == n and len(ours) == len(expected) == n - unscored
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert scored.perplexity == pytest.approx(math.exp(-expected.mean()), rel=1e-4)


def test_a_stride_of_the_whole_context_equals_plain_scoring_where_it_fits(folder):
    session = Session.open(folder)
    ids = text_ids(N_CTX - 1, session.model.config.vocab_size, seed=3)
    np.testing.assert_allclose(session.score_strided(ids, N_CTX).logprobs, session.score(ids).logprobs, atol=1e-5)


def test_bad_strides_are_refused_in_library_terms(folder):
    session = Session.open(folder)
    for bad in (0, N_CTX + 1, -3):
        with pytest.raises(InvalidValue, match="stride"):
            session.score_strided([1, 2, 3], bad)


def test_cli_scores_text_longer_than_the_context(folder):
    text = "hello world " * 60  # several windows of a 64-token context
    plain = run("score", "-m", folder, "--json", text)
    assert plain.code == 2  # too long without --stride
    r = run("score", "-m", folder, "--stride", "16", "--json", text)
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    assert len(obj["tokens"]) == len(obj["logprobs"]) > N_CTX
    assert obj["perplexity"] == pytest.approx(math.exp(-obj["total_logprob"] / len(obj["tokens"])))
    batch = run("batch", "--score", "--stride", "16", "-", "-m", folder, stdin=json.dumps({"id": 1, "text": text}) + "\n")
    line = json.loads(batch.out)
    assert line.pop("id") == 1 and line == obj


@pytest.mark.parametrize("args", [["score", "--stride", "0", "text"], ["score", "--stride", "999", "text"],
                                  ["batch", "-", "--stride", "8"], ["batch", "--score", "-", "--stride", "0"]])  # fmt: skip
def test_cli_bad_strides_are_one_line(folder, args):
    r = run(*args[:1], "-m", folder, *args[1:], stdin='{"text": "some text"}\n')
    assert "--stride" in assert_one_error_line(r)

"""The `gpt2cli score` and `gpt2cli tokenize` commands: log-probabilities equal to the engine's, text
as long as the context, token ids and their bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2cli.session import load_model
from tests.support import models as modelfactory
from tests.support.cli import run


def test_score_json_matches_the_engine(real_model):
    result = run("score", "-m", real_model, "--json", "Hello world")
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["tokens"] == [15496, 995]
    model = load_model(real_model)
    logits = model.forward(np.asarray([[50256, 15496]]), model.new_cache(1), all_logits=True)[0].astype(np.float64)
    logz = logits.max(axis=1) + np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1))
    expected = [logits[0, 15496] - logz[0], logits[1, 995] - logz[1]]
    assert obj["logprobs"] == pytest.approx(expected, abs=1e-4)
    assert obj["total_logprob"] == pytest.approx(sum(expected), abs=1e-4)
    assert obj["perplexity"] == pytest.approx(np.exp(-sum(expected) / 2), rel=1e-4)
    table = run("score", "-m", real_model, "Hello world").stdout
    assert "15496" in table and '" world"' in table and "perplexity" in table


def test_score_takes_text_as_long_as_the_context(tmp_path):
    folder = modelfactory.write_model(tmp_path / "m", n_positions=32)
    text = "a" * 32  # the tiny BPE has no "aa" merge: 32 tokens
    ok = run("score", "-m", folder, "--json", text)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["tokens"]) == 32
    too_long = run("score", "-m", folder, text + "a")
    assert too_long.returncode == 2 and "33 tokens" in too_long.stderr and "at most 32" in too_long.stderr


def test_tokenize_prints_ids_and_json_bytes(real_model):
    assert run("tokenize", "-m", real_model, "Hello world").stdout.split() == ["15496", "995"]
    obj = json.loads(run("tokenize", "-m", real_model, "--json", "é").stdout)
    assert obj["ids"] == [2634] and obj["tokens"][0]["bytes"] == [195, 169]
    special = run("tokenize", "-m", real_model, "--allow-special", "<|endoftext|>").stdout.split()
    assert special == ["50256"]
    assert "50256" not in run("tokenize", "-m", real_model, "<|endoftext|>").stdout.split()

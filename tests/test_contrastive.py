"""Contrastive search: token for token as transformers 4.55.4's generate(penalty_alpha, top_k), one
batched pass per step for the k candidates, and the CLI's --penalty-alpha with its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2cli.decoding.contrastive import contrastive_search
from gpt2cli.decoding.sampling import Penalties
from gpt2cli.errors import ContextOverflowError, InvalidValue
from gpt2cli.session import load_model
from tests.support import models as modelfactory
from tests.support.cli import assert_one_error_line, run
from tests.support.reference455 import generate_455_many, until_eos


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("contrastive")
    return {
        "plain": modelfactory.write_model(root / "plain", seed=31),
        "eos-biased": modelfactory.write_model(root / "eos", seed=32, eos_bias=4.0),
        "wide": modelfactory.write_model(root / "wide", seed=33, vocab_size=4096),
    }


def prompts(seed: int, n: int = 3, length: int = 6, vocab: int = 256) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, length).tolist() for _ in range(n)]


def ours(folder, prompt, **kwargs) -> list[int]:
    model = load_model(folder)
    eos = model.config.eos_token_id
    return [int(s.tokens[0]) for s in contrastive_search(model, prompt, eos_token_id=eos, **kwargs)]


CASES = [
    ("plain", 0.6, 4, 1.0), ("plain", 0.3, 6, 1.0), ("plain", 0.9, 2, 1.0), ("plain", 0.6, 4, 1.2),
    ("eos-biased", 0.6, 4, 1.0), ("wide", 0.6, 5, 1.0), ("wide", 0.0, 4, 1.0),
]  # fmt: skip


def case_request(folders, name, alpha, k, penalty):
    eos = load_model(folders[name]).config.eos_token_id
    kwargs = dict(penalty_alpha=alpha, top_k=k, max_new_tokens=24, do_sample=False, pad_token_id=eos, eos_token_id=eos, repetition_penalty=penalty)
    return folders[name], prompts(seed=int(alpha * 10) + k), kwargs


@pytest.fixture(scope="module")
def references(folders):
    """transformers 4.55.4's answers for every case, from one run of its environment."""
    requests = [case_request(folders, *case) for case in CASES]
    return dict(zip(CASES, generate_455_many(requests)))


@pytest.mark.parametrize("name,alpha,k,penalty", CASES)
def test_tokens_equal_transformers_4_55(folders, references, name, alpha, k, penalty):
    folder, batch, kwargs = case_request(folders, name, alpha, k, penalty)
    expected = references[(name, alpha, k, penalty)]
    assert len(expected) == len(batch)
    for prompt, ref in zip(batch, expected):
        got = ours(folder, prompt, penalty_alpha=alpha, top_k=k, max_new_tokens=24, penalties=Penalties(penalty))
        assert got == until_eos(ref["sequences"][0], kwargs["eos_token_id"])


def test_the_candidates_run_as_one_batched_pass_per_step(folders):
    model = load_model(folders["plain"])
    passes = []
    real = model.hidden_states

    def counting(tokens, cache, *args, **kwargs):
        passes.append(np.asarray(tokens).shape)
        return real(tokens, cache, *args, **kwargs)

    model.hidden_states = counting
    steps = list(contrastive_search(model, [1, 2, 3], penalty_alpha=0.6, top_k=4, max_new_tokens=10))
    assert passes[0] == (1, 3)  # the prompt, once
    assert passes[1:] == [(4, 1)] * len(steps)  # then one pass of the 4 candidates per step


def test_bad_values_and_overflow_raise_in_library_terms(folders):
    model = load_model(folders["plain"])
    with pytest.raises(InvalidValue, match="penalty_alpha"):
        contrastive_search(model, [1], penalty_alpha=1.5, top_k=4, max_new_tokens=3)
    with pytest.raises(InvalidValue, match="top_k"):
        contrastive_search(model, [1], penalty_alpha=0.5, top_k=0, max_new_tokens=3)
    with pytest.raises(ContextOverflowError, match="does not slide"):
        contrastive_search(model, [1] * 100, penalty_alpha=0.5, top_k=4, max_new_tokens=model.config.n_positions)


def test_cli_penalty_alpha_is_deterministic_and_matches_the_library(folders):
    folder = folders["plain"]
    first = run("generate", "-m", folder, "--penalty-alpha", "0.6", "-k", "4", "-n", "12", "--json", "Once upon")
    assert first.code == 0, first.err
    again = run("generate", "-m", folder, "--penalty-alpha", "0.6", "-k", "4", "-n", "12", "--json", "Once upon")
    record = json.loads(first.out)
    assert first.out == again.out and record["completion_tokens"] == len(record["tokens"]) <= 12
    from gpt2cli.store.tokenizer import Tokenizer

    prompt = Tokenizer.from_folder(folder).encode("Once upon")
    expected = ours(folder, prompt, penalty_alpha=0.6, top_k=4, max_new_tokens=12)
    assert record["tokens"] == [t for t in expected if t != load_model(folder).config.eos_token_id]


@pytest.mark.parametrize(
    "extra,named",
    [
        (["-t", "0.7"], "--temperature"), (["-p", "0.9"], "--top-p"), (["--min-p", "0.1"], "--min-p"),
        (["-N", "2"], "--num-samples"), (["--seed", "3"], "--seed"), (["--typical-p", "0.5"], "--typical-p"),
    ],
)  # fmt: skip
def test_cli_refuses_sampling_options_with_penalty_alpha(folders, extra, named):
    line = assert_one_error_line(run("generate", "-m", folders["plain"], "--penalty-alpha", "0.6", *extra, "Hi"))
    assert "--penalty-alpha" in line and named in line


@pytest.mark.parametrize(
    "args,named",
    [
        (["--penalty-alpha", "2"], "--penalty-alpha"), (["--penalty-alpha", "0.5", "-k", "0"], "--top-k"),
        (["--repetition-penalty", "0"], "--repetition-penalty"), (["--no-repeat-ngram", "-1"], "--no-repeat-ngram"),
        (["--min-p", "2"], "--min-p"), (["--typical-p", "0"], "--typical-p"),
    ],
)  # fmt: skip
def test_cli_bad_decoding_values_are_one_line_naming_the_option(folders, args, named):
    assert named in assert_one_error_line(run("generate", "-m", folders["plain"], *args, "Hi"))

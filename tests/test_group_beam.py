"""Diverse (group) beam search against transformers 4.55.4's generate(num_beam_groups=...,
diversity_penalty=...) on the very same random checkpoints, and the beam command's --groups."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from gpt2cli.decoding.beam import beam_search
from gpt2cli.decoding.group_beam import group_beam_search
from gpt2cli.errors import InvalidValue
from gpt2cli.session import Session, load_model
from tests.support import cli
from tests.support import models as modelfactory
from tests.support.reference455 import generate_455_many, python_455, until_eos

MAX_NEW = 10

BEAMS_GROUPS = [(4, 2), (6, 3), (6, 2), (8, 4)]
DIVERSITY = [0.5, 2.0]
LENGTH_PENALTIES = [0.0, 1.0, 2.0]
EARLY_STOPPING = [True, False, "never"]
PROCESSORS = [dict(no_repeat_ngram_size=0, repetition_penalty=1.0), dict(no_repeat_ngram_size=2, repetition_penalty=1.3)]
MODELS = ["plain", "eos-biased", "wide-vocab"]


def grid() -> list[dict]:
    """Every (beams/groups, penalty, length penalty, early stopping) once; the model and the
    processor set rotate so that every pair of any two settings occurs (72 searches, not 432)."""
    cases = []
    for i, ((beams, groups), div, lp, es) in enumerate(
        itertools.product(BEAMS_GROUPS, DIVERSITY, LENGTH_PENALTIES, EARLY_STOPPING)
    ):
        options = dict(num_beams=beams, num_groups=groups, diversity_penalty=div, length_penalty=lp, early_stopping=es)
        model, processors = MODELS[(i + i // 3 + i // 9) % 3], PROCESSORS[(i // 3 + i // 18) % 2]
        cases.append(dict(model=model, prompt_seed=i, options=options | processors))
    return cases


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> folder: a plain random model, one that likes <|endoftext|> (groups finish early), and
    one whose vocabulary (4096) is wide enough that beam steps pick candidates by groups (beam.top_k)."""
    root = tmp_path_factory.mktemp("group-beam")
    return {
        "plain": modelfactory.write_model(root / "plain", seed=3),
        "eos-biased": modelfactory.write_model(root / "eos-biased", seed=3, eos_bias=4.0),
        "wide-vocab": modelfactory.write_model(root / "wide-vocab", seed=5, vocab_size=4096),
    }


def prompt_for(model, seed: int, length: int = 5) -> list[int]:
    return np.random.default_rng(seed).integers(0, model.config.eos_token_id, length).tolist()


def reference_455(requests: list[tuple]) -> list[tuple[list[list[int]], list[float]]]:
    """transformers 4.55.4's hypotheses per (folder, [prompt], kwargs), all from one run of its
    environment: (generated tokens up to and with the first eos, sequences_scores)."""
    answers = generate_455_many(requests)
    return [
        ([until_eos(row, kwargs["eos_token_id"]) for row in answer[0]["sequences"]], answer[0]["scores"])
        for (_, _, kwargs), answer in zip(requests, answers)
    ]


def test_group_beam_search_matches_transformers_455_token_for_token(folders):
    python_455()  # skips before any work where 4.55.4 is not installed
    models = {name: load_model(folder) for name, folder in folders.items()}
    cases, requests = grid(), []
    for case in cases:
        eos = models[case["model"]].config.eos_token_id
        o = case["options"]
        kwargs = dict(
            num_beams=o["num_beams"], num_beam_groups=o["num_groups"], diversity_penalty=o["diversity_penalty"],
            length_penalty=o["length_penalty"], early_stopping=o["early_stopping"],
            no_repeat_ngram_size=o["no_repeat_ngram_size"], repetition_penalty=o["repetition_penalty"],
            num_return_sequences=o["num_beams"], max_new_tokens=MAX_NEW, do_sample=False,
            pad_token_id=eos, eos_token_id=eos,
        )  # fmt: skip
        prompt = prompt_for(models[case["model"]], case["prompt_seed"])
        requests.append((folders[case["model"]], [prompt], kwargs))
    references = reference_455(requests)
    finished_early = 0
    for case, request, (ref_tokens, ref_scores) in zip(cases, requests, references):
        hyps = group_beam_search(models[case["model"]], request[1][0], max_new_tokens=MAX_NEW, **case["options"])
        assert [h.tokens for h in hyps] == ref_tokens, case
        np.testing.assert_allclose([h.score for h in hyps], ref_scores, atol=1e-4, rtol=0, err_msg=str(case))
        finished_early += any(h.finish_reason == "eos" for h in hyps)
    assert finished_early >= 10  # the grid exercises groups that finish on <|endoftext|>, not only at the length


def test_one_group_is_plain_beam_search(folders):
    model = load_model(folders["eos-biased"])
    prompt = prompt_for(model, 7)
    options = dict(num_beams=4, max_new_tokens=MAX_NEW, length_penalty=1.5, early_stopping=False)
    assert group_beam_search(model, prompt, num_groups=1, diversity_penalty=0.0, **options) == beam_search(
        model, prompt, **options
    )


def test_groups_with_a_penalty_differ_from_plain_beam_search(folders):
    model = load_model(folders["plain"])
    prompt = prompt_for(model, 11)
    plain = beam_search(model, prompt, num_beams=4, max_new_tokens=MAX_NEW)
    diverse = group_beam_search(model, prompt, num_beams=4, num_groups=4, diversity_penalty=5.0, max_new_tokens=MAX_NEW)
    # Each group has one beam and pays 5.0 for every first token taken before it: four first tokens.
    assert len({h.tokens[0] for h in diverse}) == 4
    assert [h.tokens for h in diverse] != [h.tokens for h in plain]


@pytest.mark.parametrize(
    "num_groups, diversity_penalty, param",
    [(3, 0.5, "num_groups"), (0, 0.5, "num_groups"), (8, 0.5, "num_groups"), (2.0, 0.5, "num_groups"),
     (2, 0.0, "diversity_penalty"), (2, -1.0, "diversity_penalty"), (2, float("nan"), "diversity_penalty"),
     (2, float("inf"), "diversity_penalty")],
)  # fmt: skip
def test_bad_group_options_are_refused_in_library_terms(folders, num_groups, diversity_penalty, param):
    model = load_model(folders["plain"])
    with pytest.raises(InvalidValue) as e:
        group_beam_search(
            model, [1, 2], num_beams=4, num_groups=num_groups, diversity_penalty=diversity_penalty, max_new_tokens=3
        )
    assert e.value.param == param


CLI_ENV = {"HF_HUB_OFFLINE": "1"}


def test_beam_command_runs_groups_and_prints_them_as_json(folders):
    folder = folders["eos-biased"]
    args = ("beam", "-m", str(folder), "-b", "4", "--groups", "2", "--diversity-penalty", "0.5", "-n", str(MAX_NEW))
    r = cli.run(*args, "--json", "--no-compare", "Once upon a time", env=CLI_ENV)
    assert r.code == 0, r.err
    beams = json.loads(r.stdout)["beams"]
    session = Session.open(folder)
    expected = session.beam(
        session.prompt_ids("Once upon a time"), num_beams=4, num_groups=2, diversity_penalty=0.5, max_new_tokens=MAX_NEW,
        num_return=4, no_repeat_ngram_size=0, early_stopping=False, length_penalty=1.0,
    )  # fmt: skip
    assert [b["tokens"] for b in beams] == [d.tokens for d in expected]
    assert [b["score"] for b in beams] == pytest.approx([d.score for d in expected], abs=1e-6)
    piped = cli.run(*args, "Once upon a time", env=CLI_ENV)  # piped: only the best beam's text
    assert piped.code == 0, piped.err
    assert piped.stdout == beams[0]["text"]


@pytest.mark.parametrize(
    "args, flag",
    [(["--groups", "3"], "--groups"), (["--groups", "0", "--diversity-penalty", "1"], "--groups"),
     (["--groups", "2"], "--diversity-penalty"), (["--groups", "2", "--diversity-penalty", "-1"], "--diversity-penalty"),
     (["--groups", "2", "--diversity-penalty", "nan"], "--diversity-penalty"),
     (["--diversity-penalty", "0.5"], "--diversity-penalty")],
)  # fmt: skip
def test_bad_group_options_are_one_usage_line(folders, args, flag):
    r = cli.run("beam", "-m", str(folders["plain"]), "-b", "4", *args, "Hello", env=CLI_ENV)
    line = cli.assert_one_error_line(r, 2)
    assert flag in line, line

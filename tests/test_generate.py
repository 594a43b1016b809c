"""The decoding loop (decoding/generate.py, decoding/text.py): batched samples, eos, overflow modes,
stop strings over streamed text, and the prefill's progress reports."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2cli.decoding.generate import generate
from gpt2cli.decoding.sampling import Sampler, SamplingOptions
from gpt2cli.decoding.text import SampleText
from gpt2cli.errors import ContextOverflowError
from gpt2cli.session import load_model

GREEDY = SamplingOptions(0.0, 0, 1.0)


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model(tiny_model)


def greedy_by_recomputation(model, prompt, n):
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model.forward(np.asarray([seq]), model.new_cache(1))[0].argmax()))
    return seq[len(prompt) :]


def test_greedy_generate_equals_recomputing_argmax_each_step(model):
    steps = list(generate(model, [5, 6, 7], Sampler(GREEDY), 12))
    assert [int(s.tokens[0]) for s in steps] == greedy_by_recomputation(model, [5, 6, 7], 12)


def test_batched_samples_equal_the_same_seeded_rows_one_by_one_for_greedy(model):
    steps = list(generate(model, [1, 2], Sampler(GREEDY), 8, num_samples=3))
    rows = np.stack([s.tokens for s in steps], axis=1)  # [3, 8]
    assert (rows == rows[0]).all()


def test_seeded_sampling_is_reproducible_and_rows_differ(model):
    opts = SamplingOptions(1.0, 0, 1.0)
    a = [s.tokens.tolist() for s in generate(model, [3], Sampler(opts, seed=9), 20, num_samples=4)]
    b = [s.tokens.tolist() for s in generate(model, [3], Sampler(opts, seed=9), 20, num_samples=4)]
    assert a == b
    rows = np.array(a).T
    assert len({tuple(r) for r in rows}) > 1


def test_logprobs_are_of_the_raw_distribution(model):
    steps = list(generate(model, [4, 5], Sampler(SamplingOptions(3.0, 2, 1.0), seed=1), 3, logprobs=True))
    logits = model.forward(np.asarray([[4, 5]]), model.new_cache(1))[0].astype(np.float64)
    first = int(steps[0].tokens[0])
    expected = logits[first] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    assert steps[0].logprobs[0] == pytest.approx(expected, abs=1e-4)


def test_rows_end_at_eos_and_the_loop_stops_when_all_have(tmp_path):
    from tests.support import models as modelfactory

    model = load_model(modelfactory.write_model(tmp_path / "m", eos_bias=6.0, seed=3))
    eos = model.config.eos_token_id
    sampler = Sampler(SamplingOptions(1.0, 0, 1.0), seed=0)
    steps = list(generate(model, [1], sampler, 200, eos_token_id=eos, num_samples=4))
    assert steps[-1].eos.all() and len(steps) < 200
    for row in range(4):
        tokens = [int(s.tokens[row]) for s in steps]
        first = tokens.index(eos)
        assert all(t == eos for t in tokens[first:])  # a finished row only repeats eos
        assert not steps[first - 1].eos[row] if first else True
    ignored = list(generate(model, [1], Sampler(SamplingOptions(1.0, 0, 1.0), seed=0), 50, eos_token_id=eos, ignore_eos=True))
    assert len(ignored) == 50


def test_slide_keeps_generating_past_the_context_and_warns_once(tmp_path):
    from tests.support import models as modelfactory

    model = load_model(modelfactory.write_model(tmp_path / "m", n_positions=32))
    notes = []
    steps = list(generate(model, [1, 2, 3], Sampler(GREEDY), 100, warn=notes.append))
    assert len(steps) == 100
    assert len(notes) == 1 and "context of 32" in notes[0]


def test_error_mode_refuses_with_the_token_counts(model):
    with pytest.raises(ContextOverflowError, match=r"prompt \(120 tokens\).*\(20\).*128"):
        list(generate(model, [1] * 120, Sampler(GREEDY), 20, on_overflow="error"))


def test_truncate_mode_keeps_the_last_prompt_tokens(model):
    notes = []
    prompt = list(range(1, 201))
    steps = list(generate(model, prompt, Sampler(GREEDY), 28, on_overflow="truncate", warn=notes.append))
    assert [int(s.tokens[0]) for s in steps][:5] == greedy_by_recomputation(model, prompt[-100:], 5)
    assert len(notes) == 1 and "last 100 of 200" in notes[0]


def test_stop_string_cuts_text_before_it_and_holds_back_partial_matches():
    text = SampleText(("STOP",))
    shown = []
    for piece in ["Hello ", "wor", "ld S", "TO", "P and more"]:
        text.add(piece)
        shown.append(text.take())
    assert shown == ["Hello ", "wor", "ld ", "", ""]
    assert text.stopped and text.text == "Hello world "
    assert text.finish() == ""
    assert text.kept_tokens() == 3


def test_partial_stop_prefix_is_released_when_the_text_moves_on():
    text = SampleText(("\n\n",))
    text.add("a\n")
    assert text.take() == "a"
    text.add("b")
    assert text.take() == "\nb"
    assert not text.stopped


def test_the_engine_reports_each_layer_of_a_prefill(tiny_model):
    model = load_model(tiny_model)
    calls = []
    steps = generate(model, [1, 2, 3], Sampler(SamplingOptions(0.0, 0, 1.0)), 3, prefill_progress=lambda d, t: calls.append((d, t)))
    tokens = [int(s.tokens[0]) for s in steps]
    n = model.config.n_layer
    assert calls == [(i, n) for i in range(1, n + 1)]  # the prefill only, not the decode steps
    plain = [int(s.tokens[0]) for s in generate(model, [1, 2, 3], Sampler(SamplingOptions(0.0, 0, 1.0)), 3)]
    assert tokens == plain
    assert np.isfinite(model.forward(np.array([[1]]), model.new_cache(1), progress=lambda d, t: None)).all()

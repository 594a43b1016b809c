"""Progress for long prefills: drawn on stderr only when slow, erased when done, fed by the engine."""

from __future__ import annotations

import numpy as np

from gpt2cli.cli.output import ProgressLine
from gpt2cli.decoding.generate import generate
from gpt2cli.decoding.sampling import Sampler, SamplingOptions
from gpt2cli.session import load_model


def test_progress_line_draws_layers_and_erases_itself(capsys):
    line = ProgressLine("reading the prompt", delay=0.0)
    for done in range(1, 4):
        line(done, 3)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "reading the prompt: layer 1/3" in captured.err and "layer 2/3" in captured.err
    assert captured.err.endswith("\r\033[K")  # nothing left on the line for the output that follows


def test_progress_line_stays_silent_for_quick_work(capsys):
    line = ProgressLine("reading the prompt", delay=60.0)
    for done in range(1, 13):
        line(done, 12)
    assert capsys.readouterr().err == ""


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


def test_json_lines_never_carry_nan_or_infinity():
    import io
    import json

    from gpt2cli.cli.output import Writer

    buffer = io.BytesIO()
    Writer(buffer, is_tty=False).json_line({"score": float("-inf"), "xs": [1.5, float("nan")], "n": 3})
    assert json.loads(buffer.getvalue(), parse_constant=lambda c: 1 / 0) == {"score": None, "xs": [1.5, None], "n": 3}

"""The command's output (cli/output.py): the progress line of a long prefill, drawn on stderr only when
slow and erased when done, and JSON lines that never carry NaN or Infinity."""

from __future__ import annotations

from gpt2cli.cli.output import ProgressLine


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


def test_json_lines_never_carry_nan_or_infinity():
    import io
    import json

    from gpt2cli.cli.output import Writer

    buffer = io.BytesIO()
    Writer(buffer, is_tty=False).json_line({"score": float("-inf"), "xs": [1.5, float("nan")], "n": 3})
    assert json.loads(buffer.getvalue(), parse_constant=lambda c: 1 / 0) == {"score": None, "xs": [1.5, None], "n": 3}

"""Command-line options: an invalid value of any option is one error line naming it (exit 2, empty
stdout), and random option values and prompt bytes never crash the command (fuzzed in process)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2cli.cli import process
from gpt2cli.store.tokenizer import Tokenizer
from tests.support.cli import assert_one_error_line, run, run_in_process, run_quick

_NEEDS_MODEL = {"generate", "beam", "score", "tokenize"}

INVALID_VALUES = [
    # (argv after the command name, the option the message must name, what the message must say it accepts)
    (["generate", "-n", "0"], "--max-tokens", "1"),
    (["generate", "-n", "ten"], "--max-tokens", "integer"),
    (["generate", "-t", "-0.5"], "--temperature", "0"),
    (["generate", "-t", "nan"], "--temperature", "0"),
    (["generate", "-t", "inf"], "--temperature", "0"),
    (["generate", "-k", "-1"], "--top-k", "0"),
    (["generate", "-p", "0"], "--top-p", "(0, 1]"),
    (["generate", "-p", "1.5"], "--top-p", "(0, 1]"),
    (["generate", "-p", "nan"], "--top-p", "(0, 1]"),
    (["generate", "-N", "0"], "--num-samples", "1"),
    (["generate", "-N", "257"], "--num-samples", "256"),
    (["generate", "--seed", "x"], "--seed", "integer"),
    (["generate", "--seed", "-1"], "--seed", "0"),
    (["generate", "--on-overflow", "wrap"], "--on-overflow", "slide, truncate, error"),
    (["generate", "--stats=yes"], "--stats", "value"),
    (["beam", "-b", "0"], "--beams", "1"),
    (["beam", "-b", "2", "-r", "3"], "--num-return", "--beams"),
    (["beam", "-r", "0"], "--num-return", "1"),
    (["beam", "-n", "0"], "--max-tokens", "1"),
    (["beam", "--length-penalty", "nan"], "--length-penalty", "finite"),
    (["beam", "--length-penalty", "1e300"], "--length-penalty", "-100 to 100"),
    (["beam", "-b", "257"], "--beams", "256"),
    (["download", "gpt2", "--revision", ""], "--revision", "empty"),
    (["beam", "--early-stopping", "soon"], "--early-stopping", "true, false or never"),
    (["beam", "--no-repeat-ngram", "-1"], "--no-repeat-ngram", "0"),
    (["beam", "--width", "5"], "--width", "20"),
    (["beam", "-t", "-1"], "--temperature", "0"),
    (["beam", "-k", "-2"], "--top-k", "0"),
    (["beam", "--seed", "-1"], "--seed", "0"),
    (["score", "--json=1"], "--json", "value"),
    (["tokenize", "--allow-special=no"], "--allow-special", "value"),
    (["download"], "MODEL", "argument"),
    (["download", "not a repo!"], "not a repo!", "owner/name"),
    (["models", "--weights-dir"], "--weights-dir", "argument"),
    (["models", "--bogus"], "--bogus", "option"),
    (["rm"], "MODEL", "argument"),
    (["rm", "gpt2", "-y", "--weights-dir", ""], "--weights-dir", "empty"),
    (["compare", "-s", "nucleus"], "--strategy", "one of"),
    (["compare", "-s", "top-p:p=2"], "--strategy", "(0, 1]"),
    (["compare", "-n", "0"], "--max-tokens", "1"),
    (["batch", "/nonexistent/records.jsonl"], "INPUT", "JSON Lines"),
    (["batch", "-", "-n", "0"], "--max-tokens", "1"),
]


def _named(case):
    """An INVALID_VALUES entry as a param whose id is the command line."""
    values, marks = (case.values, case.marks) if hasattr(case, "values") else (case, ())
    return pytest.param(*values, id=" ".join(values[0]), marks=marks)


@pytest.mark.parametrize(("argv", "option", "accepts"), [_named(case) for case in INVALID_VALUES])
def test_invalid_option_value_is_one_line_naming_the_option_and_exit_2(tiny_model, argv, option, accepts):
    command = argv[0]
    extra = ["-m", tiny_model] if command in _NEEDS_MODEL else []
    prompt = ["hi"] if command in _NEEDS_MODEL else []
    line = assert_one_error_line(run_quick(*argv, *extra, *prompt))
    assert option in line
    assert accepts in line


def test_every_command_is_covered_by_the_invalid_value_tests():
    """A new command must bring its invalid-value cases here."""
    import typer

    commands = set(typer.main.get_command(process.app).commands)
    covered = {(case.values[0] if hasattr(case, "values") else case)[0][0] for case in INVALID_VALUES}
    assert commands <= covered, f"no invalid-value case for {sorted(commands - covered)}"


# --- fuzz: random option values and prompt bytes, in process ---

def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_JUNK = st.text(max_size=6)
_NOT_A_NUMBER = _JUNK.filter(lambda text: not _is_number(text))
# Positive values below 1e-3 or above 1e30 are left to test_extreme_positive_temperature_samples_without_warnings.
_FLOATS = (
    st.floats(allow_nan=True, allow_infinity=True)
    .filter(lambda x: not (0 < x < 1e-3 or 1e30 < x < float("inf")))
    .map(repr)
)
_PENALTIES = st.one_of(st.floats(-8, 8), st.sampled_from([float("nan"), float("inf"), float("-inf")])).map(repr)


def _ints(lo: int, hi: int):
    """Small valid-or-not integers (valid ones keep runs short) and strings that are not integers."""
    return st.one_of(st.integers(lo, hi).map(str), st.sampled_from(["", "x", "1.5", "1e3", " 2", "0x10"]))


_OPTIONS = {
    "generate": {
        "-n": _ints(-3, 24),
        "-t": _FLOATS,
        "-k": st.one_of(_ints(-5, 400), st.just(str(2**70))),
        "-p": _FLOATS,
        "--seed": st.one_of(st.integers(0, 2**80).map(str), _NOT_A_NUMBER),  # negative seeds: see INVALID_VALUES
        "-N": st.one_of(_ints(-2, 3), st.just("257")),
        "--on-overflow": st.one_of(st.sampled_from(["slide", "truncate", "error"]), _JUNK),
        "--stop": _JUNK,
    },
    "beam": {
        "-n": _ints(-3, 12),
        "-b": _ints(-2, 3),
        "-r": _ints(-2, 4),
        "--length-penalty": st.one_of(_PENALTIES, _NOT_A_NUMBER),  # huge ones: see INVALID_VALUES
        "--early-stopping": st.one_of(st.sampled_from(["true", "false", "never", "TRUE"]), _JUNK),
        "--no-repeat-ngram": _ints(-2, 4),
        "-t": _FLOATS,
        "-k": _ints(-5, 400),
        "--width": _ints(-5, 300),
        "--seed": st.integers(0, 2**64).map(str),
    },
    "score": {},
    "tokenize": {},
}
# --echo is left to test_overflow_error_with_echo_prints_nothing (it prints before the overflow check).
_FLAGS = {
    "generate": ["--json", "--allow-special", "--ignore-eos", "--no-stream"],
    "beam": ["--json", "--allow-special", "--no-compare"],
    "score": ["--json", "--allow-special"],
    "tokenize": ["--json", "--allow-special"],
}


@st.composite
def invocations(draw):
    command = draw(st.sampled_from(sorted(_OPTIONS)))
    args = [command]
    options = _OPTIONS[command]
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True)) if options else []:
        args += [name, draw(options[name])]
    args += draw(st.lists(st.sampled_from(_FLAGS[command]), max_size=2, unique=True))
    stdin = draw(st.binary(max_size=48))
    prompt = draw(st.one_of(st.none(), st.text(max_size=24), st.binary(max_size=24).map(os.fsdecode)))
    return args, stdin, prompt


def _no_nan(constant):
    raise AssertionError(f"{constant} in JSON output")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=invocations())
def test_random_options_and_prompt_bytes_never_crash(tiny_model, monkeypatch, case):
    monkeypatch.delenv("GPT2CLI_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args, stdin, prompt = case
    argv = [*args, "-m", str(tiny_model)] + (["--", prompt] if prompt is not None else [])
    r, caught = run_in_process(argv, stdin)
    assert "Traceback" not in r.err and "internal error" not in r.err, (argv, r.err)
    assert not caught, [str(w.message) for w in caught]
    assert r.code in (0, 2), (argv, r.code, r.err)
    assert all(line.startswith("gpt2cli: ") for line in r.err_lines), r.err  # notes and errors only
    r.out.decode("utf-8")  # whole characters, always
    if r.code == 2:
        assert r.out == b""
        errors = [line for line in r.err_lines if line.startswith("gpt2cli: error: ")]
        assert len(errors) == 1 and r.err_lines[-1] == errors[0], r.err
    elif "--json" in args and r.out.strip():
        for line in r.out.decode("utf-8").splitlines():
            json.loads(line, parse_constant=_no_nan)  # strict JSON: no NaN/Infinity, which jq rejects


def test_fuzz_shapes_hold_through_the_real_entry_point(tiny_model):
    """A few of the fuzz test's shapes through the installed command."""
    r = run("generate", "-m", tiny_model, "-n", "3", "-t", "1e30", "-k", str(2**70), "--json", stdin=b"\x00\xff\xfe\n")
    assert r.code == 0, r.err
    assert r.json["completion_tokens"] <= 3
    assert r.err_lines == ["gpt2cli: stdin is not valid UTF-8: invalid bytes were replaced with U+FFFD"]
    assert_one_error_line(run("beam", "-m", tiny_model, "-b", "x", "hi"))
    r = run("tokenize", "-m", tiny_model, "--", "-n")  # a prompt that looks like an option
    assert r.code == 0, r.err
    assert r.out.split() == [str(i).encode() for i in Tokenizer.from_folder(tiny_model).encode("-n")]


@pytest.mark.parametrize("temperature", ["1e-300", "1e39"])
def test_extreme_positive_temperature_samples_without_warnings(tiny_model, temperature):
    r = run("generate", "-m", tiny_model, "-n", "4", "-t", temperature, "--ignore-eos", "--json", "hi")
    assert r.code == 0 and r.err == "", r.err
    assert r.json["completion_tokens"] == 4


@pytest.mark.parametrize("args", [["generate", "-m", ""], ["download", ""]])
def test_an_empty_model_name_is_a_usage_error(args):
    line = assert_one_error_line(run(*args, "hi") if args[0] == "generate" else run(*args), code=2)
    assert "empty" in line

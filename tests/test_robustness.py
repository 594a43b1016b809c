"""Never a traceback, never lost output: bad option values, odd stdin, long contexts, closed pipes,
signals and broken checkpoints, each run through the command as a user runs it (a subprocess), with
an in-process fuzz test for the option parser and the prompt path.

Exit codes under test (cli.py): 0 ok, 1 unexpected, 2 usage, 3 broken checkpoint/tokenizer,
4 download failure, 130 SIGINT, 141 stdout closed, 143 SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2cli.cli import process as cli
from tests.support import models as modelfactory

GPT2CLI = [sys.executable, "-m", "gpt2cli"]
# What a message must offer the user: a way out.
REMEDY = re.compile(r"re-download|re-export|convert it|pass --model|fix config\.json|--on-overflow|lower --max-tokens")


# --------------------------------------------------------------------------------------------
# Running the command
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: bytes
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    @property
    def json(self) -> dict:
        return json.loads(self.out)


def clean_env(**extra) -> dict:
    """The environment of a user who set nothing of ours; never touches the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPT2CLI_")}
    env["HF_HUB_OFFLINE"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(*args, input: bytes = b"", env: dict | None = None, cwd=None, timeout: float = 60, **popen) -> Run:
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    p = subprocess.run(
        [*GPT2CLI, *argv], input=input, capture_output=True, env=env or clean_env(), cwd=cwd, timeout=timeout, **popen
    )
    return Run(p.returncode, p.stdout, p.stderr.decode("utf-8", errors="replace"))


def run_in_process(args: list[str], stdin: bytes = b"") -> tuple[Run, list]:
    """cli.main() with its own stdin/stdout/stderr (buffered bytes underneath, like the real ones):
    ~100x faster than a subprocess, for fuzzing. Returns the run and the Python warnings it raised."""
    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = io.BytesIO(), io.BytesIO()
    streams = (
        io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"),
        io.TextIOWrapper(io.BufferedWriter(out), encoding="utf-8", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True),
    )
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = cli.main(args)
        for stream in streams[1:]:
            stream.flush()
        result = Run(code, out.getvalue(), err.getvalue().decode("utf-8", errors="replace"))
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return result, list(caught)


def assert_one_error_line(r: Run, code: int = 2) -> str:
    """Exit `code`, nothing on stdout, exactly one line on stderr, and it is an error: returns it."""
    assert "Traceback" not in r.err
    assert r.code == code, r.err
    assert r.out == b""
    assert len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert line.startswith("gpt2cli: error: "), line
    return line


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ctx64_model(tmp_path_factory) -> Path:
    """A context of 64 tokens, so prompts and generations overflow it cheaply."""
    return modelfactory.write_model(tmp_path_factory.mktemp("robust") / "ctx64", n_positions=64, seed=3)


@pytest.fixture(scope="session")
def long_context_model(tmp_path_factory) -> Path:
    """Tiny vocabulary, 1024 positions: streams for a long time without sliding (so without notes)."""
    return modelfactory.write_model(tmp_path_factory.mktemp("robust") / "long", n_positions=1024, mask_buffers=False, seed=4)


@pytest.fixture(scope="session")
def real_vocab_model(tmp_path_factory, real_tokenizer_dir) -> Path:
    """GPT-2's real BPE (multi-byte characters split across tokens) on a small random model."""
    return modelfactory.write_model(
        tmp_path_factory.mktemp("robust") / "real", n_positions=1024, tokenizer="real", mask_buffers=False, seed=5
    )


def tiny_tokenizer(folder: Path):
    from gpt2cli.store.tokenizer import Tokenizer

    return Tokenizer.from_folder(folder)


# --------------------------------------------------------------------------------------------
# Invalid option values: exit 2, one line naming the option and what it accepts, empty stdout
# --------------------------------------------------------------------------------------------

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
    (["download"], "model", "argument"),
    (["download", "not a repo!"], "not a repo!", "owner/name"),
    (["models", "--weights-dir"], "--weights-dir", "argument"),
    (["models", "--bogus"], "--bogus", "option"),
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
    line = assert_one_error_line(run(*argv, *extra, *prompt))
    assert option in line
    assert accepts in line


def test_every_command_is_covered_by_the_invalid_value_tests():
    """A new command must bring its invalid-value cases here."""
    import typer

    commands = set(typer.main.get_command(cli.app).commands)
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
    r = run("generate", "-m", tiny_model, "-n", "3", "-t", "1e30", "-k", str(2**70), "--json", input=b"\x00\xff\xfe\n")
    assert r.code == 0, r.err
    assert r.json["completion_tokens"] <= 3
    assert r.err_lines == ["gpt2cli: stdin is not valid UTF-8: invalid bytes were replaced with U+FFFD"]
    assert_one_error_line(run("beam", "-m", tiny_model, "-b", "x", "hi"))
    r = run("tokenize", "-m", tiny_model, "--", "-n")  # a prompt that looks like an option
    assert r.code == 0, r.err
    assert r.out.split() == [str(i).encode() for i in tiny_tokenizer(tiny_model).encode("-n")]


@pytest.mark.parametrize("temperature", ["1e-300", "1e39"])
def test_extreme_positive_temperature_samples_without_warnings(tiny_model, temperature):
    r = run("generate", "-m", tiny_model, "-n", "4", "-t", temperature, "--ignore-eos", "--json", "hi")
    assert r.code == 0 and r.err == "", r.err
    assert r.json["completion_tokens"] == 4


# --------------------------------------------------------------------------------------------
# stdin: invalid UTF-8, empty, whitespace, <|endoftext|>, closed
# --------------------------------------------------------------------------------------------


def test_invalid_utf8_stdin_becomes_replacement_characters_with_one_note(tiny_model):
    r = run("tokenize", "-m", tiny_model, "--json", input=b"\xff\xfehi")
    assert r.code == 0, r.err
    assert r.err_lines == ["gpt2cli: stdin is not valid UTF-8: invalid bytes were replaced with U+FFFD"]
    assert r.json["ids"] == tiny_tokenizer(tiny_model).encode("\ufffd\ufffdhi")


def test_invalid_utf8_prompt_argument_becomes_replacement_characters_with_one_note(tiny_model):
    r = run("tokenize", "-m", tiny_model, "--json", b"caf\xe9")
    assert r.code == 0, r.err
    assert r.err_lines == ["gpt2cli: the PROMPT argument is not valid UTF-8: invalid bytes were replaced with U+FFFD"]
    assert r.json["ids"] == tiny_tokenizer(tiny_model).encode("caf\ufffd")


def test_empty_stdin_generates_unconditionally_from_endoftext(tiny_model):
    empty = run("generate", "-m", tiny_model, "-n", "5", "-t", "0", "--ignore-eos", "--json", input=b"")
    assert empty.code == 0 and empty.err == "", empty.err
    assert empty.json["prompt_tokens"] == 1 and empty.json["completion_tokens"] == 5
    # the same as giving <|endoftext|> itself as the special token
    eot = run("generate", "-m", tiny_model, "-n", "5", "-t", "0", "--ignore-eos", "--json", "--allow-special", "<|endoftext|>")
    assert eot.code == 0 and eot.json["tokens"] == empty.json["tokens"]


def test_endoftext_in_the_text_is_plain_text_unless_allow_special(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "2", "--json", input=b"<|endoftext|>")
    assert r.code == 0, r.err
    assert r.json["prompt_tokens"] == len(tiny_tokenizer(tiny_model).encode("<|endoftext|>")) > 1


def test_whitespace_only_prompt_is_a_prompt_like_any_other(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "3", "--ignore-eos", "--json", input=b" \n\t  \n")
    assert r.code == 0 and r.err == "", r.err
    # one trailing newline of stdin is dropped, the rest is the prompt
    assert r.json["prompt_tokens"] == len(tiny_tokenizer(tiny_model).encode(" \n\t  "))
    assert r.json["completion_tokens"] == 3


def test_scoring_empty_text_is_a_usage_error(tiny_model):
    line = assert_one_error_line(run("score", "-m", tiny_model, input=b""))
    assert "empty" in line


def test_closed_stdin_is_an_empty_prompt(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "2", "--json", stdin=None, input=None, preexec_fn=lambda: os.close(0))
    assert r.code == 0, r.err
    assert r.json["prompt_tokens"] == 1


def test_closed_stderr_keeps_the_exit_code(tmp_path):
    r = run("generate", "-m", tmp_path / "nothing-here", "hi", preexec_fn=lambda: os.close(2))
    assert (r.code, r.out) == (2, b"")


def test_closed_stdout_stops_quietly_with_141(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "3", "hi", preexec_fn=lambda: os.close(1))
    assert (r.code, r.err) == (141, "")


# --------------------------------------------------------------------------------------------
# Contexts: prompts longer than the model's, generation past it
# --------------------------------------------------------------------------------------------

LONG_PROMPT = "abcdefghij" * 20  # 200 tokens with the tiny BPE; the test model's context is 64


def _overflow_notes(r: Run) -> list[str]:
    return [line for line in r.err_lines if "context" in line]


def test_slide_generates_past_the_context_and_says_so_once(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "100", "-t", "0", "--ignore-eos", "--json", "hi")
    assert r.code == 0, r.err
    assert r.json["completion_tokens"] == len(r.json["tokens"]) == 100
    assert len(r.err_lines) == 1 and len(_overflow_notes(r)) == 1, r.err
    assert "sliding" in r.err


def test_max_tokens_several_times_the_context_are_all_generated(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", str(5 * 64), "-N", "2", "--seed", "1", "--ignore-eos", "--json", "hi")
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [row["completion_tokens"] for row in rows] == [320, 320]
    assert [len(row["tokens"]) for row in rows] == [320, 320]
    assert len(_overflow_notes(r)) == 1, r.err


def test_slide_with_a_prompt_longer_than_the_context_keeps_going(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "100", "-t", "0", "--ignore-eos", "--json", LONG_PROMPT)
    assert r.code == 0, r.err
    assert r.json["prompt_tokens"] == 200
    assert r.json["completion_tokens"] == 100
    assert r.err_lines and all(line.startswith("gpt2cli: ") and "error" not in line for line in r.err_lines)
    # the model saw the prompt's last 63 tokens (one character each with the tiny BPE)
    window = run("generate", "-m", ctx64_model, "-n", "1", "-t", "0", "--json", "--on-overflow", "error", LONG_PROMPT[-63:])
    assert window.code == 0, window.err
    assert r.json["tokens"][0] == window.json["tokens"][0]


def test_slide_with_a_prompt_longer_than_the_context_says_so_once(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "100", "--ignore-eos", "--json", LONG_PROMPT)
    assert r.code == 0, r.err
    assert len(_overflow_notes(r)) == 1, r.err


def test_truncate_keeps_the_end_of_the_prompt_and_warns_once(ctx64_model):
    r = run("generate", "-m", ctx64_model, "-n", "10", "-t", "0", "--ignore-eos", "--json", "--on-overflow", "truncate", LONG_PROMPT)
    assert r.code == 0, r.err
    assert r.json["completion_tokens"] == 10
    assert len(r.err_lines) == 1, r.err
    assert "truncated" in r.err and "last 54 of 200" in r.err
    # exactly what the model does given only those 54 tokens (one character each with the tiny BPE)
    kept = run("generate", "-m", ctx64_model, "-n", "10", "-t", "0", "--ignore-eos", "--json", "--on-overflow", "error", LONG_PROMPT[-54:])
    assert kept.code == 0, kept.err
    assert r.json["tokens"] == kept.json["tokens"]


def test_truncate_leaves_room_for_the_prompt_or_is_a_usage_error(ctx64_model):
    line = assert_one_error_line(run("generate", "-m", ctx64_model, "-n", "64", "--on-overflow", "truncate", "hi"))
    assert "--max-tokens 64" in line and "64" in line and REMEDY.search(line)


def test_overflow_error_exits_2_with_the_token_counts(ctx64_model):
    line = assert_one_error_line(run("generate", "-m", ctx64_model, "-n", "10", "--on-overflow", "error", LONG_PROMPT))
    assert "200 tokens" in line and "(10)" in line and "64 tokens" in line
    assert REMEDY.search(line)


def test_overflow_error_with_echo_prints_nothing(ctx64_model):
    assert_one_error_line(run("generate", "-m", ctx64_model, "-n", "10", "--echo", "--on-overflow", "error", LONG_PROMPT))


def test_score_of_text_longer_than_the_context_is_a_usage_error(ctx64_model):
    line = assert_one_error_line(run("score", "-m", ctx64_model, LONG_PROMPT))
    assert "200 tokens" in line and "at most 64" in line


# --------------------------------------------------------------------------------------------
# Closed pipes (`| head`)
# --------------------------------------------------------------------------------------------


def _read_at_least(fd: int, n: int, timeout: float = 30) -> bytes:
    buf, deadline = b"", time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(buf)} bytes of output after {timeout} s"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"output ended after {len(buf)} bytes"
            buf += chunk
    return buf


def _endless(model: Path, *extra) -> list:
    return [*GPT2CLI, "generate", "-m", str(model), "-n", str(10**9), "--ignore-eos", *extra]


def test_closed_pipe_stops_generating_at_once_quietly_with_141(long_context_model):
    p = subprocess.Popen(
        _endless(long_context_model, "hello"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    try:
        head = _read_at_least(p.stdout.fileno(), 20)
        closed = time.monotonic()
        p.stdout.close()  # `| head -c 20` exits
        code = p.wait(timeout=20)
        assert time.monotonic() - closed < 5, "kept generating after the reader went away"
        err = p.stderr.read().decode()
    finally:
        p.kill()
    assert len(head) >= 20
    assert (code, err) == (141, "")


def test_closed_pipe_shared_with_stderr_is_141_too(long_context_model):
    p = subprocess.Popen(
        _endless(long_context_model, "hello"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    try:
        head = _read_at_least(p.stdout.fileno(), 20)
        p.stdout.close()  # `2>&1 | head -c 20`
        code = p.wait(timeout=20)
    finally:
        p.kill()
    assert b"Traceback" not in head
    assert code == 141


def test_large_output_into_a_closed_pipe_is_not_reported_as_success(tiny_model, tmp_path):
    """One write bigger than the pipe: the reader leaving mid-write must still end in 141, not 0."""
    text = tmp_path / "big.txt"
    text.write_bytes(b"hello world\n" * 25_000)  # ~600 kB of token ids on stdout, in one write
    with open(text, "rb") as stdin:
        p = subprocess.Popen(
            [*GPT2CLI, "tokenize", "-m", str(tiny_model)], stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=clean_env(),
        )  # fmt: skip
        try:
            _read_at_least(p.stdout.fileno(), 10)
            p.stdout.close()
            code = p.wait(timeout=30)
            err = p.stderr.read().decode()
        finally:
            p.kill()
    assert (code, err) == (141, "")


# --------------------------------------------------------------------------------------------
# Signals: Ctrl-C and SIGTERM while streaming
# --------------------------------------------------------------------------------------------

SIGNALS = [pytest.param(signal.SIGINT, 130, id="SIGINT"), pytest.param(signal.SIGTERM, 143, id="SIGTERM")]


def _reference_stream(model: Path, prompt: str, at_least: int) -> bytes:
    """What the interrupted command was printing: the same greedy stream, computed in process."""
    from gpt2cli.decoding.generate import generate
    from gpt2cli.decoding.sampling import Sampler, SamplingOptions
    from gpt2cli.decoding.text import Detokenizer
    from gpt2cli.session import load_model
    from gpt2cli.store.tokenizer import Tokenizer

    engine, tokenizer = load_model(model), Tokenizer.from_folder(model)
    detok, out = Detokenizer(tokenizer.token_bytes), b""
    steps = generate(
        engine, tokenizer.encode(prompt), Sampler(SamplingOptions(0.0, 50, 1.0)), 10**9,
        eos_token_id=engine.config.eos_token_id, ignore_eos=True,
    )  # fmt: skip
    for step in steps:
        out += detok.feed(int(step.tokens[0])).encode("utf-8")
        if len(out) > at_least:
            break
    steps.close()
    return out


@pytest.mark.parametrize(("signum", "expected"), SIGNALS)
def test_signal_while_streaming_into_a_pipe_keeps_what_was_printed(real_vocab_model, signum, expected):
    p = subprocess.Popen(
        _endless(real_vocab_model, "-t", "0", "Hello"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    try:
        out = _read_at_least(p.stdout.fileno(), 200)
        p.send_signal(signum)
        sent = time.monotonic()
        out += p.stdout.read()  # everything up to the exit
        code = p.wait(timeout=20)
        assert time.monotonic() - sent < 5, "kept going after the signal"
        err = p.stderr.read().decode()
    finally:
        p.kill()
    assert (code, err) == (expected, "")
    out.decode("utf-8")  # whole characters: no half of a multi-byte sequence at the end
    reference = _reference_stream(real_vocab_model, "Hello", len(out))
    assert reference.startswith(out), "the printed text is not the stream the model was producing"


def test_signal_between_write_and_flush_loses_no_printed_text(tiny_model, monkeypatch):
    """The signal lands after a token's bytes went into stdout's buffer but before the flush:
    main()'s exit path still delivers them, and no traceback is printed."""
    from gpt2cli.cli.output import Writer

    original, written = Writer.write, []

    def write(self, text, *, flush=True):
        original(self, text, flush=False)
        written.append(text)
        if len(written) == 5:
            raise cli.Terminated(signal.SIGINT)
        if flush:
            self.stream.flush()

    monkeypatch.setattr(Writer, "write", write)
    r, _ = run_in_process(["generate", "-m", str(tiny_model), "-n", "50", "-t", "0", "--ignore-eos", "hi"])
    assert (r.code, r.err) == (130, "")
    assert r.out == "".join(written).encode("utf-8") and len(written) == 5


@pytest.mark.parametrize(("signum", "expected"), SIGNALS)
def test_signal_while_streaming_to_a_terminal_ends_the_line(real_vocab_model, signum, expected):
    master, slave = pty.openpty()
    p = subprocess.Popen(
        _endless(real_vocab_model, "Hello"), stdout=slave, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    os.close(slave)
    try:
        out = _read_at_least(master, 200)
        p.send_signal(signum)
        sent = time.monotonic()
        # keep draining: a full terminal buffer would block the child's last writes
        while time.monotonic() - sent < 20 and select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            out += chunk
        code = p.wait(timeout=20)
        assert time.monotonic() - sent < 5, "kept going after the signal"
        err = p.stderr.read().decode()
    finally:
        p.kill()
        os.close(master)
    assert (code, err) == (expected, "")
    assert out.endswith(b"\r\n"), out[-40:]  # the shell prompt starts on a line of its own
    out.decode("utf-8")


# --------------------------------------------------------------------------------------------
# Broken checkpoints: one line naming the file, what is wrong, and what to do
# --------------------------------------------------------------------------------------------


def _tensors(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _save(folder: Path, tensors: dict) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


class _CreatesFileWhenUnpickled:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _truncated(f: Path) -> None:
    data = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(data[: len(data) // 2])


def _corrupt_header(f: Path) -> None:
    data = bytearray((f / "model.safetensors").read_bytes())
    data[8:40] = b"#" * 32
    (f / "model.safetensors").write_bytes(bytes(data))


def _missing_tensor(f: Path) -> None:
    tensors = _tensors(f)
    del tensors["h.1.mlp.c_fc.bias"]
    _save(f, tensors)


def _wrong_shape(f: Path) -> None:
    import numpy as np

    tensors = _tensors(f)
    tensors["h.0.ln_1.weight"] = np.ones(32, dtype=np.float32)
    _save(f, tensors)


def _wrong_dtype(f: Path) -> None:
    import numpy as np

    tensors = _tensors(f)
    tensors["h.0.ln_1.bias"] = np.ones(64, dtype=np.int32)
    _save(f, tensors)


def _pickle_only(f: Path) -> None:
    (f / "model.safetensors").unlink()
    (f / "pytorch_model.bin").write_bytes(pickle.dumps(_CreatesFileWhenUnpickled(f / "UNPICKLED")))


def _disagreeing_tokenizer(f: Path) -> None:
    vocab = json.loads((f / "vocab.json").read_text(encoding="utf-8"))
    a, b = list(vocab)[260:262]  # two merged tokens swap ids: merges.txt ranks them the other way
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (f / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def _missing_shard(f: Path) -> None:
    (f / "model.safetensors").rename(f / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"wte.weight": "model-00001-of-00002.safetensors", "wpe.weight": "model-00002-of-00002.safetensors"}}
    (f / "model.safetensors.index.json").write_text(json.dumps(index))


def _not_a_model(f: Path) -> None:
    for p in f.iterdir():
        p.unlink()
    (f / "notes.txt").write_text("my shopping list")


BROKEN = [
    # (id, break the folder, exit code, file the message names, what it says is wrong)
    ("truncated-safetensors", _truncated, 3, "model.safetensors", "truncated or corrupt"),
    ("corrupt-header", _corrupt_header, 3, "model.safetensors", "not a valid safetensors file"),
    ("empty-safetensors", lambda f: (f / "model.safetensors").write_bytes(b""), 3, "model.safetensors", "not a valid"),
    ("missing-tensor", _missing_tensor, 3, "model.safetensors", "'h.1.mlp.c_fc.bias' is missing"),
    ("wrong-shape", _wrong_shape, 3, "model.safetensors", "has shape [32]"),
    ("wrong-dtype", _wrong_dtype, 3, "model.safetensors", "dtype I32"),
    ("config-more-layers", lambda f: _edit_config(f, n_layer=3), 3, "model.safetensors", "n_layer=3"),
    ("config-fewer-layers", lambda f: _edit_config(f, n_layer=1), 3, "model.safetensors", "n_layer=1"),
    ("config-other-width", lambda f: _edit_config(f, n_embd=32), 3, "model.safetensors", "config.json implies"),
    ("config-malformed", lambda f: (f / "config.json").write_text('{"n_layer": 2,'), 3, "config.json", "cannot read"),
    ("config-not-an-object", lambda f: (f / "config.json").write_text("[]"), 3, "config.json", "not a JSON object"),
    ("config-bad-value", lambda f: _edit_config(f, n_head="4"), 3, "config.json", "'n_head' must be a positive integer"),
    ("config-missing", lambda f: (f / "config.json").unlink(), 2, "", "no config.json"),
    ("vocab-missing", lambda f: (f / "vocab.json").unlink(), 2, "vocab.json", "missing"),
    ("merges-missing", lambda f: (f / "merges.txt").unlink(), 2, "merges.txt", "missing"),
    ("vocab-malformed", lambda f: (f / "vocab.json").write_text("{"), 3, "", "cannot read the tokenizer files"),
    ("merges-malformed", lambda f: (f / "merges.txt").write_text("#version: 0.2\na b c\n"), 3, "merges.txt", "malformed"),
    ("vocab-merges-disagree", _disagreeing_tokenizer, 3, "vocab.json", "do not belong together"),
    pytest.param(
        "tokenizer-bigger-than-model",
        lambda f: modelfactory.write_tiny_tokenizer(f, merges=modelfactory.TINY_MERGES + [("x", "y")]),
        3, "", "do not belong to these weights",
    ),  # fmt: skip
    ("shard-missing", _missing_shard, 3, "model-00002-of-00002.safetensors", "missing"),
    ("not-a-model", _not_a_model, 2, "", "not a model folder"),
    ("pickle-only", _pickle_only, 3, "", "pytorch_model.bin"),
]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return modelfactory.write_model(tmp_path_factory.mktemp("robust") / "base", mask_buffers=False, seed=6)


def _case(p):
    """BROKEN entries as params: the id first, marks kept."""
    values, marks = (p.values, p.marks) if hasattr(p, "values") else (p, ())
    return pytest.param(*values[1:], id=values[0], marks=marks)


@pytest.mark.parametrize(("breaks", "code", "names", "wrong"), [_case(p) for p in BROKEN])
def test_broken_checkpoint_is_one_line_naming_the_file_and_the_remedy(base_model, tmp_path, breaks, code, names, wrong):
    folder = tmp_path / "model"
    shutil.copytree(base_model, folder)
    breaks(folder)
    line = assert_one_error_line(run("generate", "-m", folder, "-n", "2", "hi"), code=code)
    assert str(folder / names) in line
    assert wrong in line
    assert REMEDY.search(line), f"no remedy in: {line}"
    assert not (folder / "UNPICKLED").exists(), "a pickle was unpickled"
    # for a bug report, the full traceback; same exit code, same last line
    debug = run("generate", "-m", folder, "-n", "2", "hi", env=clean_env(GPT2CLI_DEBUG="1"))
    assert debug.code == code
    assert "Traceback (most recent call last)" in debug.err
    assert debug.err_lines[-1] == line
    assert not (folder / "UNPICKLED").exists()


def test_weights_holding_nan_are_a_broken_checkpoint(base_model, tmp_path):
    import numpy as np

    folder = tmp_path / "model"
    shutil.copytree(base_model, folder)
    tensors = _tensors(folder)
    tensors["wte.weight"] = np.full_like(tensors["wte.weight"], np.nan)
    _save(folder, tensors)
    for command in (["generate", "-n", "2"], ["beam", "-n", "2", "--json"], ["score", "--json"]):
        line = assert_one_error_line(run(*command, "-m", folder, "hi"), code=3)
        # a folder gpt2cli did not download: named, and re-downloading is not the remedy
        assert str(folder) in line and line.endswith("fix or replace its weights"), line


def test_no_arguments_with_stderr_closed_is_still_a_usage_error():
    p = subprocess.run([*GPT2CLI], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       env=clean_env(), pass_fds=(), preexec_fn=lambda: os.close(2))  # fmt: skip
    assert p.returncode == 2 and p.stdout == b""


@pytest.mark.parametrize("args", [["generate", "-m", ""], ["download", ""]])
def test_an_empty_model_name_is_a_usage_error(args):
    line = assert_one_error_line(run(*args, "hi") if args[0] == "generate" else run(*args), code=2)
    assert "empty" in line


def test_config_whose_eos_is_not_a_token_is_a_broken_checkpoint(base_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(base_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["eos_token_id"] = 10**30
    (folder / "config.json").write_text(json.dumps(config))
    line = assert_one_error_line(run("generate", "-m", folder, "-n", "2", "hi"), code=3)
    assert "eos_token_id" in line


def test_debug_shows_the_traceback_of_a_usage_error_too(tmp_path):
    r = run("generate", "-m", tmp_path / "missing", "hi", env=clean_env(GPT2CLI_DEBUG="1"))
    assert r.code == 2 and "Traceback" in r.err and "ModelNotFoundError" in r.err


# --------------------------------------------------------------------------------------------
# Files: nothing written anywhere but the weights folder
# --------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_commands_write_nothing_outside_the_weights_folder(tiny_model, tmp_path):
    cwd, home, tmp, weights = (tmp_path / name for name in ("cwd", "home", "tmp", "weights"))
    for d in (cwd, home, tmp):
        d.mkdir()
    env = clean_env(HOME=home, TMPDIR=tmp)
    for var in ("XDG_CACHE_HOME", "HF_HOME", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "HF_HUB_CACHE"):
        env.pop(var, None)
    model_before = _snapshot(tiny_model)
    runs = [
        (0, ["generate", "-m", tiny_model, "-n", "3", "hi"]),
        (0, ["generate", "-m", tiny_model, "-n", "3", "-N", "2", "--json", "hi"]),
        (0, ["beam", "-m", tiny_model, "-n", "3", "-b", "2", "hi"]),
        (0, ["score", "-m", tiny_model, "hello"]),
        (0, ["tokenize", "-m", tiny_model, "hello"]),
        (0, ["models", "--weights-dir", weights]),
        (2, ["generate", "-m", tiny_model, "-p", "7", "hi"]),
        (2, ["download", "gpt2", "--weights-dir", weights]),  # offline: refused before any write
    ]
    for code, args in runs:
        r = run(*args, env=env, cwd=cwd)
        assert r.code == code, (args, r.err)
    assert not weights.exists(), "listing models or an offline refusal created the weights folder"
    # a download that cannot reach the Hub writes only into the weights folder
    online = {k: v for k, v in env.items() if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    online.update(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    r = run("download", "gpt2", "--weights-dir", weights, env=online, cwd=cwd)
    assert r.code == 4, r.err
    assert_one_error_line(r, code=4)
    assert sorted(os.listdir(cwd)) == [] and sorted(os.listdir(home)) == [] and sorted(os.listdir(tmp)) == []
    assert _snapshot(tiny_model) == model_before

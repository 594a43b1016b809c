"""The `gpt2cli generate` command: greedy output identical to transformers, prompts from the argument
and stdin, seeds, stop strings, samples, echo, JSON lines, invalid options, --help."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2cli.session import load_model
from gpt2cli.store.tokenizer import Tokenizer
from tests.support.cli import run, run_quick


def gen_json(model, *args, stdin=None):
    result = run("generate", "-m", model, "--json", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_greedy_generation_is_token_identical_to_transformers(real_model):
    torch = pytest.importorskip("torch", reason="the reference stack is not installed")
    from tests.support.reference import load_reference

    ref = load_reference(real_model)
    prompt = "The meaning of life is"
    (obj,) = gen_json(real_model, "-t", "0", "-n", "25", "--ignore-eos", prompt)
    ids = Tokenizer.from_folder(real_model).encode(prompt)
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), max_new_tokens=25, min_new_tokens=25, do_sample=False, pad_token_id=50256)
    expected = out[0, len(ids) :].tolist()
    assert obj["tokens"] == expected
    assert obj["text"] == Tokenizer.from_folder(real_model).decode(expected)
    plain = run("generate", "-m", real_model, "-t", "0", "-n", "25", "--ignore-eos", prompt)
    assert plain.stdout == obj["text"]  # piped: exactly the text, no added newline


def test_json_lines_schema(real_model):
    (obj,) = gen_json(real_model, "-n", "7", "--seed", "3", "Hello there")
    assert set(obj) == {"text", "tokens", "logprobs", "finish_reason", "prompt_tokens", "completion_tokens"}
    assert obj["prompt_tokens"] == 2
    assert obj["completion_tokens"] == len(obj["tokens"]) == len(obj["logprobs"]) <= 7
    assert obj["finish_reason"] in ("length", "eos", "stop")
    assert all(isinstance(x, float) and x <= 0 for x in obj["logprobs"])
    assert all(isinstance(t, int) for t in obj["tokens"])


def test_logprobs_are_the_models_raw_log_probabilities(real_model):
    (obj,) = gen_json(real_model, "-n", "1", "-t", "1.7", "-k", "3", "--seed", "1", "Hello")
    model = load_model(real_model)
    logits = model.forward(np.asarray([[15496]]), model.new_cache(1))[0].astype(np.float64)
    logz = logits.max() + np.log(np.exp(logits - logits.max()).sum())
    assert obj["logprobs"][0] == pytest.approx(logits[obj["tokens"][0]] - logz, abs=1e-4)


def test_prompt_from_stdin_and_from_dash(real_model):
    from_arg = gen_json(real_model, "-t", "0", "-n", "5", "Once upon")
    from_stdin = gen_json(real_model, "-t", "0", "-n", "5", stdin="Once upon\n")
    from_dash = gen_json(real_model, "-t", "0", "-n", "5", "-", stdin="Once upon")
    assert from_arg == from_stdin == from_dash


def test_stdin_comes_before_the_prompt_argument(real_model):
    both = gen_json(real_model, "-t", "0", "-n", "5", "a time", stdin="Once upon\n")
    joined = gen_json(real_model, "-t", "0", "-n", "5", "Once upon\na time")
    assert both == joined


def test_empty_prompt_generates_unconditionally_from_endoftext(real_model):
    (obj,) = gen_json(real_model, "-n", "3", "--seed", "0", stdin="")
    (special,) = gen_json(real_model, "-n", "3", "--seed", "0", "--allow-special", "<|endoftext|>")
    assert obj["prompt_tokens"] == 1
    assert obj == special


def test_echo_with_json_puts_the_prompt_in_a_field(real_model):
    (obj,) = gen_json(real_model, "-n", "2", "--seed", "0", "--echo", "Hello")
    assert obj["prompt"] == "Hello"
    (plain,) = gen_json(real_model, "-n", "2", "--seed", "0", "Hello")
    assert "prompt" not in plain and plain["text"] == obj["text"]


def test_same_seed_same_text_other_seed_other_text(real_model):
    a = run("generate", "-m", real_model, "-n", "20", "--seed", "42", "Hi")
    b = run("generate", "-m", real_model, "-n", "20", "--seed", "42", "Hi")
    c = run("generate", "-m", real_model, "-n", "20", "--seed", "43", "Hi")
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout != c.stdout


def test_stop_ends_the_output_before_the_stop_text(real_model):
    full = run("generate", "-m", real_model, "-t", "0", "-n", "30", "--ignore-eos", "Hello").stdout
    stop = full[10:14]
    cut = full[: full.index(stop)]
    result = run("generate", "-m", real_model, "-t", "0", "-n", "30", "--ignore-eos", "--stop", stop, "Hello")
    assert result.returncode == 0 and result.stdout == cut
    (obj,) = gen_json(real_model, "-t", "0", "-n", "30", "--ignore-eos", "--stop", "zzz-never", "--stop", stop, "Hello")
    assert obj["text"] == cut and obj["finish_reason"] == "stop"
    # tokens are exactly those that produced the text: the last one may run into the stop string
    tok = Tokenizer.from_folder(real_model)
    assert tok.decode(obj["tokens"]).startswith(cut)
    assert len(tok.decode(obj["tokens"][:-1])) < len(cut)
    assert obj["completion_tokens"] == len(obj["tokens"]) == len(obj["logprobs"])


def test_num_samples_decode_together_and_print_with_separators(real_model):
    objs = gen_json(real_model, "-N", "3", "-n", "6", "--seed", "7", "Hi")
    assert len(objs) == 3
    plain = run("generate", "-m", real_model, "-N", "3", "-n", "6", "--seed", "7", "Hi").stdout
    expected = objs[0]["text"] + "\n\n--- sample 2 of 3 ---\n" + objs[1]["text"] + "\n\n--- sample 3 of 3 ---\n" + objs[2]["text"]
    assert plain == expected
    nostream = run("generate", "-m", real_model, "-N", "3", "-n", "6", "--seed", "7", "--no-stream", "Hi").stdout
    assert nostream == expected


def test_echo_prints_the_prompt_first(real_model):
    text = run("generate", "-m", real_model, "-t", "0", "-n", "5", "Hello").stdout
    echoed = run("generate", "-m", real_model, "-t", "0", "-n", "5", "--echo", "Hello").stdout
    assert echoed == "Hello" + text


def test_model_from_environment_variable(real_model):
    result = run("generate", "-t", "0", "-n", "3", "Hi", env={"GPT2CLI_MODEL": str(real_model)})
    assert result.returncode == 0
    assert result.stdout == run("generate", "-m", real_model, "-t", "0", "-n", "3", "Hi").stdout


def test_timing_goes_to_stderr_only(real_model):
    result = run("generate", "-m", real_model, "-n", "3", "--seed", "1", "--stats", "Hi")
    assert "tokens/s" in result.stderr and "tokens/s" not in result.stdout


@pytest.mark.parametrize(
    "args, option",
    [
        (["-t", "-1"], "--temperature"),
        (["-p", "0"], "--top-p"),
        (["-p", "1.5"], "--top-p"),
        (["-k", "-1"], "--top-k"),
        (["-n", "0"], "--max-tokens"),
        (["-N", "0"], "--num-samples"),
        (["--on-overflow", "wrap"], "--on-overflow"),
    ],
)
def test_invalid_options_exit_2_with_one_line(real_model, args, option):
    result = run_quick("generate", "-m", real_model, *args, "Hi")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and option in result.stderr
    assert "Traceback" not in result.stderr


def test_folder_without_model_files_exits_2(tmp_path):
    result = run("generate", "-m", tmp_path, "Hi")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and str(tmp_path) in result.stderr


def test_help_has_examples():
    result = run("generate", "--help")
    assert result.returncode == 0 and "Examples" in result.stdout

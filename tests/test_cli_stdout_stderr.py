"""stdout carries results only and stderr one line per problem: a full disk, library warnings,
a malformed HF_ENDPOINT."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import cli


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "-n", "5", "hi"),
        ("generate", "-n", "5", "--json", "hi"),
        ("tokenize", "hi"),
        ("models",),
        ("--version",),
        ("generate", "--help"),
    ],
)
def test_stdout_on_a_full_disk_is_one_line_and_exit_5(tiny_model, args):
    if args[0] in ("generate", "tokenize"):
        args = (args[0], "-m", str(tiny_model), *args[1:])
    with open("/dev/full", "wb") as full:
        p = subprocess.run(
            [*cli.command(), *args], stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE, env=cli.user_env()
        )
    err = p.stderr.decode()
    assert p.returncode == 5, err
    assert err.splitlines() == [
        "gpt2cli: error: cannot write the output: No space left on device; free some space or send stdout elsewhere"
    ]


def _only_gpt2cli_lines(err: str) -> bool:
    return all(line.startswith("gpt2cli: ") for line in err.splitlines())


@pytest.fixture(scope="module")
def extreme_models(tmp_path_factory):
    from tests.support import models

    root = tmp_path_factory.mktemp("extreme")
    return {
        "eps": models.write_model(root / "eps", seed=1, extra_config={"layer_norm_epsilon": 1e308}),
        "huge": models.write_model(root / "huge", seed=1, std=1e30),
    }


@pytest.mark.parametrize("which", ["eps", "huge"])
def test_extreme_weights_or_config_give_no_library_warnings(extreme_models, which):
    r = cli.run("generate", "-m", extreme_models[which], "-n", "3", "--seed", "1", "hi")
    assert "Warning" not in r.err and ".py:" not in r.err, r.err
    assert _only_gpt2cli_lines(r.err) and len(r.err_lines) <= 1, r.err


@pytest.mark.parametrize("penalty", ["100", "-100"])
def test_extreme_length_penalty_gives_no_library_warnings(tiny_model, penalty):
    r = cli.run("beam", "-m", tiny_model, "-n", "4", "--length-penalty", penalty, "--json", "hi")
    assert r.code == 0, r.err
    assert r.err == "", r.err


def test_other_warnings_are_one_note_per_kind():
    import sys

    code = (
        "import warnings\n"
        "from gpt2cli.cli.process import route_warnings\n"
        "route_warnings()\n"
        "for _ in range(3):\n"
        "    warnings.warn('the library is unhappy\\nsecond line')\n"
        "warnings.warn('something else', DeprecationWarning)\n"
        "for size in (1, 2):  # as huggingface_hub warns once per file of a download to a full disk\n"
        "    warnings.warn(f'Not enough free disk space. The file is {size} MB.')\n"
    )
    p = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, env=cli.user_env())
    assert p.stdout == ""
    assert p.stderr.splitlines() == [
        "gpt2cli: warning: the library is unhappy second line (UserWarning)",
        "gpt2cli: warning: something else (DeprecationWarning)",
        "gpt2cli: warning: Not enough free disk space. The file is 1 MB. (UserWarning)",
    ]


def test_malformed_hf_endpoint_is_one_error_line_and_nothing_on_stdout(tmp_path):
    r = cli.run(
        "generate", "-m", "gpt2", "--weights-dir", tmp_path, "hi",
        env={"HF_ENDPOINT": "http://[::1", "HF_HUB_OFFLINE": None, "HF_HOME": tmp_path / "hf"},
    )  # fmt: skip
    line = cli.assert_one_error_line(r, 2)
    assert "HF_ENDPOINT" in line

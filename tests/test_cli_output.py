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

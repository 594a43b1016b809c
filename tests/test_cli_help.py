"""Help, --version, shell completion and option parsing that happens before any model loads."""

from __future__ import annotations

import re

import pytest

from gpt2cli.cli.options import stop_strings
from tests.support import cli

COMMANDS = ("generate", "beam", "score", "tokenize", "download", "models")


def _help(*args: str, columns: int = 80) -> str:
    r = cli.run(*args, "--help", env={"COLUMNS": columns})  # COLUMNS: the width click wraps help to
    assert r.code == 0, r.err
    assert r.err == ""
    return r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_python_type_labels_or_boxes(command):
    text = _help(command)
    for label in ("<str>", "<bool>", "<list[", "<int", "<float>", "<path>"):
        assert label not in text, (label, text)
    assert "╭" not in text and "│" not in text  # no rich boxes: they squeeze the descriptions


@pytest.mark.parametrize("command", COMMANDS)
def test_help_descriptions_are_readable_at_80_columns(command):
    """No description column narrower than 30 columns in an 80-column terminal, and no line wider."""
    lines = _help(command).splitlines()
    start = lines.index("Options:")
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        assert len(line) <= 80, line
        m = re.match(r"^(  \S.*?\s{2,}|\s{20,})(\S.*)$", line)
        if m:
            assert 80 - len(m.group(1)) >= 30, line


def test_choices_are_listed_in_help():
    assert "--on-overflow [slide|truncate|error]" in _help("generate")
    assert "--early-stopping [true|false|never]" in _help("beam")


def test_beam_description_is_whole():
    text = " ".join(_help("beam").split())
    assert "Beam search, step for step as transformers does it. On a terminal: a table of every beam" in text


def test_generate_help_shows_a_stop_example_that_works_in_a_shell():
    text = _help("generate")
    assert "--stop $'\\n\\n'" in text
    assert '--stop "\\n\\n"' not in text


def test_version():
    from gpt2cli import __version__

    r = cli.run("--version")
    assert (r.code, r.stdout, r.err) == (0, f"gpt2cli {__version__}\n", "")


def test_bare_command_is_a_usage_error_with_help_on_stderr():
    r = cli.run()
    assert r.code == 2
    assert r.out == b""
    assert "Usage: gpt2cli" in r.err and "generate" in r.err


def test_shell_completion_is_offered():
    r = cli.run("--help")
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    r = cli.run("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert r.code == 0, r.err
    assert "_GPT2CLI_COMPLETE" in r.stdout


def test_completion_request_with_no_arguments_completes_instead_of_failing():
    r = cli.run(env={"_GPT2CLI_COMPLETE": "complete_bash", "COMP_WORDS": "gpt2cli gen", "COMP_CWORD": "1"})
    assert r.code == 0, r.err
    assert "generate" in r.stdout


@pytest.mark.parametrize(
    "given, meant",
    [
        ("\\n\\n", "\n\n"),
        ("a\\tb", "a\tb"),
        ("\\\\n", "\\n"),  # a literal backslash-n
        ("C:\\path", "C:\\path"),  # any other backslash stays
        ("\n\n", "\n\n"),  # $'\n\n' from the shell: already newlines
    ],
)
def test_stop_understands_escapes(given, meant):
    assert stop_strings([given]) == (meant,)


def test_stop_escapes_reach_generation(tiny_model):
    """--stop '\\\\' (an escaped backslash) ends the text at its first backslash, as a bare one does."""
    args = ("generate", "-m", tiny_model, "-n", "60", "--seed", "1", "--json", "Hi")
    plain = cli.run(*args)
    assert "\\" in plain.json["text"]  # this tiny model's text has a backslash to stop at
    escaped, bare = cli.run(*args, "--stop", "\\\\"), cli.run(*args, "--stop", "\\")
    assert escaped.code == bare.code == 0, escaped.err + bare.err
    assert escaped.json["finish_reason"] == "stop"
    assert escaped.json == bare.json
    assert escaped.json["text"] == plain.json["text"].split("\\")[0]


def test_empty_stop_is_a_usage_error(tiny_model):
    r = cli.run("generate", "-m", tiny_model, "--stop", "", "Hi")
    line = cli.assert_one_error_line(r, 2)
    assert "--stop" in line

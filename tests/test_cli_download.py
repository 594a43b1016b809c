"""The commands that reach the Hub: `gpt2cli download` and `gpt2cli models`, generate downloading a
model on first use, and Hub failures as one error line with their exit code (loopback Hub)."""

from __future__ import annotations

import json

import pytest

from gpt2cli.store import hub

GPT2 = "openai-community/gpt2"


def test_cli_download_prints_the_folder_and_models_lists_it(cli, fake_hub, sources, weights):
    fake_hub.add_repo(GPT2, sources.tiny)
    first = cli("download", "gpt2")
    folder = weights / "openai-community--gpt2"
    assert (first.returncode, first.stdout) == (0, f"{folder}\n")
    assert first.stderr.startswith("gpt2cli: downloaded gpt2 (") and first.stderr.count("\n") == 1  # no bars
    fake_hub.reset_requests()

    again = cli("download", "gpt2")
    assert (again.returncode, again.stdout) == (0, f"{folder}\n") and "already downloaded" in again.stderr
    listing = cli("models")
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[1].split()[:2] == ["gpt2", "yes"] and str(folder) in listing.stdout
    rows = [json.loads(line) for line in cli("models", "--json").stdout.splitlines()]
    assert [r["name"] for r in rows] == list(hub.ALIASES)
    assert rows[0]["downloaded"] and rows[0]["size_bytes"] > 0 and rows[0]["folder"] == str(folder)
    assert fake_hub.count() == 0


def test_cli_generate_downloads_on_first_use_then_runs_with_the_hub_gone(cli, fake_hub, sources, weights):
    fake_hub.add_repo("someone/tiny-gpt2", sources.tiny)
    first = cli("generate", "-m", "someone/tiny-gpt2", "-n", "5", "--seed", "1", "hi")
    assert first.returncode == 0, first.stderr
    assert first.stdout and hub.is_downloaded(weights / "someone--tiny-gpt2")
    fake_hub.stop()
    again = cli("generate", "-m", "someone/tiny-gpt2", "-n", "5", "--seed", "1", "hi")
    assert (again.returncode, again.stdout) == (0, first.stdout)


@pytest.mark.parametrize(
    "repo, args, code, words",
    [
        (None, ["download", "nobody/nothing"], 2, "no model repo 'nobody/nothing'"),
        ("someone/pickled", ["download", "someone/pickled"], 3, "pickle"),
        (None, ["download", "gpt2", "--revision", "v9"], 2, "revision 'v9' not found"),
        (None, ["generate", "-m", "gpt2-xl", "--offline", "hi"], 2, "offline"),
    ],
)
def test_cli_hub_failures_are_one_line_with_their_exit_code(cli, fake_hub, sources, repo, args, code, words):
    fake_hub.add_repo(GPT2, sources.tiny)
    if repo:
        fake_hub.add_repo(repo, sources.pickle_only)
    result = cli(*args)
    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith("gpt2cli: error: ") and words in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_cli_unreachable_hub_exits_4_suggesting_a_folder_or_offline(cli, fake_hub):
    fake_hub.stop()
    result = cli("generate", "-m", "gpt2", "hi")
    assert result.returncode == 4 and result.stdout == ""
    assert "--model PATH" in result.stderr and "gpt2cli download" in result.stderr

"""What a demanding new user ran into in session 12: each test is one defect found, fixed."""

from __future__ import annotations

import json

from tests.support.cli import REPO, run


def test_a_source_checkout_downloads_into_its_own_weights_folder():
    """README: run from a source checkout, gpt2cli keeps downloads in the checkout's weights/ folder.
    Since store/hub.py moved a folder down, it looked for pyproject.toml beside gpt2cli/store, never
    found it, and every checkout downloaded into ~/.cache/gpt2cli instead."""
    from gpt2cli.store import hub

    assert hub._checkout_weights() == REPO / "weights"
    r = run("models", "--json", env={"XDG_CACHE_HOME": REPO / "not-here"})
    assert r.code == 0, r.err
    folders = {json.loads(line)["folder"] for line in r.stdout.splitlines()}
    assert str(REPO / "weights" / "openai-community--gpt2") in folders, folders

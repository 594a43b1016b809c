"""Shared fixtures: tiny random GPT-2 folders in the Hub's layouts, and the real tokenizer's location."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import models as modelfactory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random GPT-2 with the tiny BPE: the default model of fast tests."""
    return modelfactory.write_model(tmp_path_factory.mktemp("models") / "tiny", n_layer=2, seed=1)


@pytest.fixture(scope="session")
def real_tokenizer_dir() -> Path:
    if not (modelfactory.SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip(f"the real GPT-2 tokenizer files are not at {modelfactory.SHARED_TOKENIZER}")
    return modelfactory.SHARED_TOKENIZER

"""transformers' GPT2LMHeadModel as the reference; tests that use it skip where it is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest


def load_reference(folder: Path):
    torch = pytest.importorskip("torch", reason="the reference stack (torch==2.13.0, transformers) is not installed")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder), dtype=torch.float32)
    return model.eval()

"""What tests compare against: transformers' GPT2LMHeadModel (tests that use it skip where it is not
installed), and plain greedy decoding written the obvious way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def load_reference(folder: Path):
    torch = pytest.importorskip("torch", reason="the reference stack (torch==2.13.0, transformers) is not installed")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder), dtype=torch.float32)
    return model.eval()


def greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Plain argmax decoding, stopping after <|endoftext|>."""
    cache = model.new_cache(1)
    logits = model.forward(np.array([prompt]), cache)
    out = []
    for _ in range(max_new_tokens):
        token = int(np.argmax(logits[0]))
        out.append(token)
        if token == model.config.eos_token_id:
            break
        logits = model.forward(np.array([[token]]), cache)
    return out

"""benchmarks/bench_contrastive.py still runs end to end on a tiny model, and both sides agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import models as modelfactory
from tests.support.reference455 import python_455

ROOT = Path(__file__).resolve().parents[1]


def test_contrastive_benchmark_runs_and_both_sides_decode_the_same_tokens():
    pytest.importorskip("torch")
    python_455()  # skips, saying how to install it, where transformers 4.55.4 is absent
    if not (modelfactory.SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip(f"the real GPT-2 tokenizer files are not at {modelfactory.SHARED_TOKENIZER}")
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_contrastive.py"), "--size", "tiny", "--reps", "1", "--tokens", "8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "tokens identical: yes" in run.stdout and "ratio" in run.stdout

"""benchmarks/bench.py still runs end to end: every case, on a tiny model, once (figures not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import models as modelfactory

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_runs_every_case_and_writes_json_and_markdown(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not (modelfactory.SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip(f"the real GPT-2 tokenizer files are not at {modelfactory.SHARED_TOKENIZER}")
    out = tmp_path / "smoke.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    cases = results["cases"]
    assert set(cases) == {"decode", "prefill", "beam", "cold", "memory", "floor"}
    for name in ("decode", "prefill", "beam"):
        assert cases[name]["ours"] > 0 and cases[name]["theirs"] > 0 and cases[name]["ratio"] > 0
    assert cases["cold"]["ours"] > 0 and cases["memory"]["ours"]["vmhwm"] > 0
    assert results["machine"]["cpu"] and results["machine"]["numpy"]
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| decode" in markdown
    for target in ("| decode | 1.4x |", "| prefill | 1.2x |", "| beam | 1.3x |", "| peak RSS | 0.5x |"):
        assert target in markdown  # each target's allowed time against our floor
    assert "decode" in run.stdout  # the table

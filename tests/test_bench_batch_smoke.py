"""benchmarks/bench_batch.py still runs end to end: every case on a tiny model, once (figures not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import models as modelfactory

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--size", "tiny", "--reps", "1", "--settle", "0"]


def needs_tokenizer() -> None:
    if not (modelfactory.SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip(f"the real GPT-2 tokenizer files are not at {modelfactory.SHARED_TOKENIZER}")


def bench(*args: str, out: Path) -> tuple[dict, subprocess.CompletedProcess]:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_batch.py"), *SMALL, *args, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), run


def test_prompts_tokenize_to_the_drawn_counts():
    needs_tokenizer()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_batch import prompt_set

    from gpt2cli.store.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(modelfactory.SHARED_TOKENIZER)
    texts, ids = prompt_set(tokenizer, 40, 8, 64, seed=7)
    assert [len(tokenizer.encode(t)) for t in texts] == [len(i) for i in ids]
    assert min(map(len, ids)) >= 8 and max(map(len, ids)) <= 64 and len(set(map(len, ids))) > 10


def test_bench_batch_smoke_runs_every_local_case_and_writes_json_and_markdown(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    needs_tokenizer()
    results, run = bench(
        "--cases", "loop,transformers,step16,memory", "--records", "8", "--tokens", "4", "--loop", "2",
        "--batch-sizes", "2,4", "--step-rows", "2", "--steps", "2", out=tmp_path / "batch.json",
    )  # fmt: skip
    cases = results["cases"]
    assert set(cases) == {"loop", "transformers", "step16", "memory"}
    loop = cases["loop"]
    assert loop["loop"]["median"] > 0 and set(loop["batch"]) == {"2", "4"} and loop["best_batch_size"] in (2, 4)
    assert all(f["median"] > 0 and f["ratio"] > 0 for f in loop["batch"].values()) and loop["ratio"] > 0
    t = cases["transformers"]
    assert set(t["ours"]) == set(t["theirs"]) == {"2", "4"} and t["ratio"] > 0 and t["ratio_whole_command"] > 0
    assert t["same_tokens"] == 1.0  # greedy, both sides: the same tokens for every record
    s = cases["step16"]
    assert set(s["rows"]) == {"2", "16"} and s["batch1"]["median"] > 0 and s["ratio"] == s["rows"]["16"]["ratio"] > 0
    memory = cases["memory"]
    assert set(memory["peak_rss"]) == {"2", "4"} and all(v > 2**20 for v in memory["peak_rss"].values())
    assert 0 < memory["kv_written_at_most"]["4"] < memory["kv_reserved"]["4"] == 2 * memory["kv_reserved"]["2"]
    markdown = (tmp_path / "batch.md").read_text(encoding="utf-8")
    assert "| batch -b 4, whole command" in markdown and "| decode step, 16 rows" in markdown
    assert "best batch size: whole command -b" in run.stdout  # the table's last line names the batch size to default to


def test_bench_batch_smoke_ray_against_local(tmp_path):
    pytest.importorskip("ray")
    needs_tokenizer()
    results, run = bench("--cases", "ray", "--ray-records", "16", "--ray-tokens", "2", out=tmp_path / "ray.json")
    ray = results["cases"]["ray"]
    assert set(results["cases"]) == {"ray"} and ray["records"] == 16 and ray["actors"] == 2
    assert ray["local"]["median"] > 0 and ray["ray"]["median"] > 0 and ray["ratio_local_over_ray"] > 0
    assert "overhead_pct" in ray and "batch --ray" in run.stdout

"""benchmarks' llama.cpp peer without building llama.cpp: the tools' output parsed (real output, captured
in tests/fixtures/llamacpp), the command lines passed to them (a stand-in script), ratios and targets,
the skip when the build is impossible, the batch file's prompts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "llamacpp"
sys.path.insert(0, str(ROOT / "benchmarks"))

import llamacpp  # noqa: E402
import peer_llamacpp as peer  # noqa: E402


def fake_tool(tmp_path: Path, fixture: str) -> tuple[Path, Path]:
    """An executable that records its arguments (one per line) and prints a captured output."""
    args = tmp_path / "args.txt"
    tool = tmp_path / "tool"
    tool.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{args}'\necho 'llama_model_loader: noise on stderr' >&2\ncat '{FIXTURES / fixture}'\n")
    tool.chmod(0o755)
    return tool, args


def test_llama_bench_jsonl_gives_tokens_per_second_and_the_test_shape():
    (tg,) = llamacpp.parse_llama_bench((FIXTURES / "llama-bench-tg128-d16.jsonl").read_text())
    (pp,) = llamacpp.parse_llama_bench((FIXTURES / "llama-bench-pp512.jsonl").read_text())
    assert (tg["n_prompt"], tg["n_gen"], tg["n_depth"], tg["n_threads"]) == (0, 128, 16, 2)
    assert tg["avg_ts"] == pytest.approx(12.200706)
    assert (pp["n_prompt"], pp["n_gen"]) == (512, 0)
    assert pp["avg_ts"] == pytest.approx(249.563338)
    assert tg["model_type"] == "gpt2 0.1B all F32"


def test_llama_bench_is_run_with_our_threads_depth_and_one_repetition(tmp_path):
    tool, args = fake_tool(tmp_path, "llama-bench-tg128-d16.jsonl")
    record = llamacpp.llama_bench(tool, Path("m.gguf"), threads=2, n_prompt=0, n_gen=128, depth=16)
    assert record["avg_ts"] == pytest.approx(12.200706)
    argv = args.read_text().split("\n")
    flags = dict(zip(argv[0:-1:2], argv[1::2]))
    assert flags == {"-m": "m.gguf", "-t": "2", "-p": "0", "-n": "128", "-d": "16", "-r": "1", "-o": "jsonl"}


def test_llama_bench_failing_is_an_error_with_its_stderr(tmp_path):
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\necho 'error: failed to load model' >&2\nexit 1\n")
    tool.chmod(0o755)
    with pytest.raises(RuntimeError, match="failed to load model"):
        llamacpp.llama_bench(tool, Path("m.gguf"), threads=2, n_prompt=512, n_gen=0)


def test_batched_bench_jsonl_rows_and_generated_tokens_over_the_whole_time():
    rows = llamacpp.parse_batched_bench((FIXTURES / "batched-bench-npl-1-4-16-32.jsonl").read_text())
    assert [r["pl"] for r in rows] == [1, 4, 16, 32]
    r16 = rows[2]
    assert (r16["pp"], r16["tg"], r16["t_pp"], r16["t_tg"], r16["speed_tg"]) == (32, 64, 4.395437, 56.397346, 18.156883)
    assert r16["gen_speed"] == pytest.approx(16 * 64 / (4.395437 + 56.397346))  # prompt processing included
    for r in rows:  # the tool's own total counts the prompt tokens as well
        assert r["speed"] == pytest.approx(r["pl"] * (r["pp"] + r["tg"]) / r["t"], rel=1e-4)


def test_batched_bench_markdown_table_reads_like_its_jsonl():
    rows = llamacpp.parse_batched_bench((FIXTURES / "batched-bench-table.md").read_text())
    assert [(r["pp"], r["tg"], r["pl"], r["n_kv"]) for r in rows] == [(32, 4, 1, 36), (32, 4, 2, 72)]
    assert rows[1]["speed_tg"] == 53.15 and rows[1]["t"] == 0.772
    assert rows[1]["gen_speed"] == pytest.approx(2 * 4 / 0.772)


def test_batched_bench_flags_and_a_missing_sequence_count_is_an_error(tmp_path):
    tool, args = fake_tool(tmp_path, "batched-bench-npl-1-4-16-32.jsonl")
    rows = llamacpp.batched_bench(tool, Path("m.gguf"), threads=2, n_prompt=32, n_gen=64, parallel=[1, 4, 16, 32])
    assert [r["pl"] for r in rows] == [1, 4, 16, 32]
    argv = args.read_text().split("\n")
    flags = dict(zip(argv[0:-1:2], argv[1::2]))
    assert flags == {"-m": "m.gguf", "-c": "4096", "-t": "2", "-tb": "2", "-npp": "32", "-ntg": "64", "-npl": "1,4,16,32", "--output-format": "jsonl"}
    # the tool silently skips a count whose sequences do not fit the context: that must not pass
    with pytest.raises(RuntimeError, match="context too small"):
        llamacpp.batched_bench(tool, Path("m.gguf"), threads=2, n_prompt=32, n_gen=64, parallel=[1, 64])


def test_every_batched_size_fits_llamacpps_context_and_gets_as_many_of_our_records():
    assert {1, 4, 16, 32, 64, 128} <= set(peer.BATCH_SIZES)
    for b in peer.BATCH_SIZES:
        assert peer.batch_context(b) >= b * (peer.BATCH_PROMPT + peer.BATCH_NEW)  # else the tool skips the count
        assert peer.batch_records(b) == max(peer.BATCH_RECORDS, b)  # B rows really decode together
    assert peer.batch_context(1) == 4096 and peer.batch_context(64) == 6144 and peer.batch_context(128) == 12288
    assert peer.batch_records(None) == peer.BATCH_RECORDS  # the sequential stand-in: one file for every B


def test_ratios_are_the_median_of_per_run_ratios():
    s = peer.ratio_summary([10.0, 30.0, 20.0], [10.0, 10.0, 40.0])
    assert s["ratio"] == 1.0 and (s["ratio_min"], s["ratio_max"]) == (0.5, 3.0)
    assert (s["ours"], s["llamacpp"]) == (20.0, 10.0)


def test_our_decode_rate_leaves_out_the_prompt_pass():
    assert peer.ours_decode_rate({"seconds": 2.0, "first": 0.1}, 128) == pytest.approx(127 / 1.9)


def test_targets_are_met_at_the_threshold_and_not_below():
    cases = {"decode": {"ratio": 0.85}, "prefill": {"ratio": 1.29}, "batched": {"best": {"ratio": 1.5}}}
    status = {t["case"]: (t["target"], t["met"]) for t in peer.target_status(cases)}
    assert status == {"decode": (0.85, True), "prefill": (1.3, False), "batched": (1.2, True)}
    assert peer.target_status({"decode": {"ratio": 0.5}}) == [{"case": "decode", "target": 0.85, "ratio": 0.5, "met": False}]


def test_batched_target_is_each_sides_best_against_the_others_best():
    sizes = {1: {"ours": 40.0, "llamacpp": 60.0}, 16: {"ours": 200.0, "llamacpp": 260.0}, 32: {"ours": 240.0, "llamacpp": 220.0}}
    best = peer.best_vs_best({"sizes": sizes})
    assert best == {"ours": 240.0, "ours_at": 32, "llamacpp": 260.0, "llamacpp_at": 16, "ratio": 240.0 / 260.0}


def results_for_report() -> dict:
    s = lambda o, t: {**peer.ratio_summary([o], [t]), "llamacpp_speed_tg": t * 1.1}  # noqa: E731
    batched = {"ours_mode": "--batch-size B", "sizes": {1: s(40.0, 60.0), 32: s(300.0, 240.0)}}
    batched["best"] = peer.best_vs_best(batched)
    cases = {"decode": peer.ratio_summary([50.0], [70.0]), "prefill": peer.ratio_summary([900.0], [600.0]), "batched": batched}
    machine = {"cpu": "test cpu", "threads": 2, "numpy": "2.x"}
    return {"size": "small", "machine": machine, "reps": 1, "cases": cases, "targets": peer.target_status(cases), "llamacpp": {}}


def test_report_marks_each_target_met_or_not():
    md = peer.markdown(results_for_report())
    decode = next(line for line in md.splitlines() if line.startswith("| decode"))
    assert "| 50.0 | 70.0 | 0.71x [0.71-0.71] | >= 0.85x | not met; best of each 50.0 vs 70.0 = 0.71x |" in decode
    prefill = next(line for line in md.splitlines() if line.startswith("| prefill"))
    assert ">= 1.3x | met;" in prefill
    best = next(line for line in md.splitlines() if "best vs best" in line)
    assert "300.0 (B=32)" in best and "240.0 (B=32)" in best and "1.25x | >= 1.2x | met" in best


def test_no_cmake_is_a_one_line_reason_and_the_peer_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(llamacpp, "BUILD", tmp_path / "build")  # nothing built
    monkeypatch.setattr(llamacpp.shutil, "which", lambda name: None)
    with pytest.raises(llamacpp.Unavailable) as e:
        llamacpp.ensure_tools()
    assert "cmake is not installed" in str(e.value) and "\n" not in str(e.value)

    monkeypatch.setattr(peer.harness, "model_folder", lambda size: tmp_path)
    args = argparse.Namespace(size="small", threads=2, reps=1, cases=None, out=tmp_path / "r.json")
    assert peer.main(args) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert "cmake is not installed" in results["skipped"] and results["cases"] == {}
    assert (tmp_path / "r.md").read_text().startswith("llama.cpp peer skipped: cmake is not installed")
    out, err = capsys.readouterr()
    assert out.startswith("llama.cpp peer skipped:") and "Traceback" not in err


def test_batch_prompts_are_exactly_32_tokens_each_and_all_different():
    tokenizer = Path(os.environ.get("GPT2CLI_TOKENIZER_DIR") or ROOT.parent / "shared" / "gpt2-tokenizer")
    if not (tokenizer / "vocab.json").is_file():
        pytest.skip(f"the real GPT-2 tokenizer files are not at {tokenizer}")
    texts = peer.batch_prompts(tokenizer, 32, 32)
    assert len(set(texts)) == 32
    from gpt2cli.store.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(tokenizer)
    assert all(len(tok.encode(t)) == 32 for t in texts)


def test_weight_bytes_per_token_count_each_block_product_and_the_lm_head(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 768, "n_layer": 12, "vocab_size": 50257}))
    assert peer.our_product_bytes(tmp_path) == 4 * (12 * 12 * 768 * 768 + 50257 * 768)  # ~494 MB


def fake_gpt2cli(tmp_path: Path, help_text: str, tokens_per_record: int) -> Path:
    """A stand-in `gpt2cli`: `batch --help` prints help_text; `batch FILE ...` records its arguments
    and prints one result per record of FILE with tokens_per_record completion tokens."""
    script = tmp_path / "gpt2cli"
    script.write_text(
        "#!/bin/sh\n"
        f"if [ \"$2\" = --help ]; then echo '{help_text}'; exit 0; fi\n"
        f"printf '%s\\n' \"$@\" > '{tmp_path / 'args.txt'}'\n"
        f"while read -r line; do echo '{{\"completion_tokens\": {tokens_per_record}}}'; done < \"$2\"\n"
    )  # fmt: skip
    script.chmod(0o755)
    return script


def test_our_batch_command_gets_batch_size_only_when_it_has_it(tmp_path, monkeypatch):
    records = peer.write_batch_file(tmp_path / "r.jsonl", ["a", "b", "c"], 64)
    assert [json.loads(line) for line in records.read_text().splitlines()][1] == {"id": 1, "prompt": "b", "max_tokens": 64, "ignore_eos": True}
    script = fake_gpt2cli(tmp_path, "  --batch-size B  records decoded together", 64)
    monkeypatch.setattr(peer, "gpt2cli_command", lambda: [str(script)])
    assert peer.has_batch_size(2)
    assert peer.time_batch(Path("model"), records, 16, 2, expect_tokens=3 * 64) > 0
    assert (tmp_path / "args.txt").read_text().split("\n")[:-1] == ["batch", str(records), "-m", "model", "-t", "0", "--offline", "--batch-size", "16"]
    peer.time_batch(Path("model"), records, None, 2, expect_tokens=3 * 64)
    assert "--batch-size" not in (tmp_path / "args.txt").read_text()

    monkeypatch.setattr(peer, "gpt2cli_command", lambda: [str(fake_gpt2cli(tmp_path, "  --ordered", 63))])
    assert not peer.has_batch_size(2)
    with pytest.raises(RuntimeError, match="generated 189 tokens, expected 192"):  # a short record is caught
        peer.time_batch(Path("model"), records, None, 2, expect_tokens=3 * 64)

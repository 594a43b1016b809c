"""gpt2cli against llama.cpp on the same checkpoint and threads, side by side, as ratios (bench.py --peer llamacpp).

Both sides read the same float32 weights (llama.cpp from an f32 GGUF converted from our safetensors;
benchmarks/llamacpp.py builds its tools). Requests alternate between the sides, the side that goes
first switching every repetition; ratios ours / llama.cpp are taken per repetition, then their median.

1. decode    tokens/s of batch-1 decoding after a 16-token context, prompt processing excluded on both sides:
             ours = the 127 tokens after the first of a greedy 128-token generation (a bench.py worker);
             llama.cpp = llama-bench tg128 at depth 16 (-p 0 -n 128 -d 16; it does not sample)
2. prefill   tokens/s of a 512-token prompt: ours = time to the first new token; llama.cpp = llama-bench pp512
3. batched   generated tokens / second for 32-token prompts and 64 new tokens each, prompt processing
             included on both sides: ours = the whole `gpt2cli batch` command (process start and model
             load included) on a file of max(32, B) such records, with --batch-size B when it exists;
             llama.cpp = llama-batched-bench with B sequences, B * 64 / (T_PP + T_TG) (model load excluded)
4. bandwidth decode's weight bytes per token / time per token, each side; and numpy's own: the per-token
             products alone (every weight matrix once, np.dot) and one 1.5 GB matrix-vector product
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import llamacpp

CASES = ("decode", "prefill", "batched", "bandwidth")
OUR_WORKER = harness.HERE / "bench.py"  # our side: bench.py's worker process (its Ours), run, not imported
TARGETS = {"decode": 0.85, "prefill": 1.3, "batched": 1.2}  # issue 16: ours / llama.cpp, higher is better
N_CONTEXT, N_NEW, N_PREFILL = 16, 128, 512
# The 1, 4, 16 and 32 sequences, then 64 and 128: llama.cpp's figure levels off from 32 on (146,
# 151, 150 tokens/s at 32, 64, 128 here) while ours still grew from 32 to 64 (116 -> 157), so both sides
# run every size and each side's best is taken over the same range.
BATCH_PROMPT, BATCH_NEW, BATCH_RECORDS, BATCH_SIZES = 32, 64, 32, (1, 4, 16, 32, 64, 128)
GEMV_BYTES = 1.5e9
# Common words that are one GPT-2 token each with their leading space: a prompt of k of them is k tokens.
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there one all we their can has more will would about time new first people year world city"
).split()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ours_decode_rate(r: dict, n_new: int) -> float:
    """Tokens/s of a generation after its first token (the prompt's pass excluded)."""
    return (n_new - 1) / (r["seconds"] - r["first"])


def ratio_summary(ours: list[float], theirs: list[float]) -> dict:
    """Medians of each side, the median of the per-repetition ratios ours/theirs, and every value."""
    return {
        "ours": statistics.median(ours), "llamacpp": statistics.median(theirs),
        "ratio": statistics.median(o / t for o, t in zip(ours, theirs)),
        "ratio_min": min(o / t for o, t in zip(ours, theirs)), "ratio_max": max(o / t for o, t in zip(ours, theirs)),
        "ours_all": ours, "llamacpp_all": theirs,
    }  # fmt: skip


def best_vs_best(batched: dict) -> dict:
    """Each side's best batched figure (median over repetitions, best over sequence counts), and their ratio."""
    ours_b = max(batched["sizes"], key=lambda b: batched["sizes"][b]["ours"])
    theirs_b = max(batched["sizes"], key=lambda b: batched["sizes"][b]["llamacpp"])
    ours, theirs = batched["sizes"][ours_b]["ours"], batched["sizes"][theirs_b]["llamacpp"]
    return {"ours": ours, "ours_at": int(ours_b), "llamacpp": theirs, "llamacpp_at": int(theirs_b), "ratio": ours / theirs}


def target_status(cases: dict) -> list[dict]:
    """Per target of the issue whose case ran: its ratio, the target, whether it is met."""
    ratios = {"decode": cases.get("decode", {}).get("ratio"), "prefill": cases.get("prefill", {}).get("ratio"),
              "batched": cases.get("batched", {}).get("best", {}).get("ratio")}  # fmt: skip
    return [
        {"case": case, "target": TARGETS[case], "ratio": ratio, "met": ratio >= TARGETS[case]}
        for case, ratio in ratios.items()
        if ratio is not None
    ]


# ---------------------------------------------------------------------------------------------
# Ours: the batch command on a file of token-exact prompts
# ---------------------------------------------------------------------------------------------
def batch_prompts(folder: Path, n: int, n_tokens: int) -> list[str]:
    """n different texts of exactly n_tokens GPT-2 tokens each (checked with the model's tokenizer)."""
    from gpt2cli.store.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(folder)
    texts = []
    for j in range(n):
        text = "".join(" " + WORDS[(j + i) % len(WORDS)] for i in range(n_tokens))
        got = len(tok.encode(text))
        if got != n_tokens:
            raise RuntimeError(f"a benchmark prompt is {got} tokens, not {n_tokens}: {text!r}")
        texts.append(text)
    return texts


def write_batch_file(path: Path, texts: list[str], n_new: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for j, text in enumerate(texts):
            f.write(json.dumps({"id": j, "prompt": text, "max_tokens": n_new, "ignore_eos": True}) + "\n")
    return path


def gpt2cli_command() -> list[str]:
    script = Path(sys.executable).parent / "gpt2cli"  # the installed console script, as bench.py's cold case
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gpt2cli"]


def has_batch_size(threads: int) -> bool:
    """Whether this gpt2cli's batch command takes --batch-size (records decoded together)."""
    proc = subprocess.run([*gpt2cli_command(), "batch", "--help"], capture_output=True, text=True, env=harness.worker_env(threads))
    return "--batch-size" in proc.stdout


def time_batch(folder: Path, path: Path, batch_size: int | None, threads: int, expect_tokens: int) -> float:
    """Wall seconds of one whole `gpt2cli batch` command; checks it generated every token."""
    cmd = [*gpt2cli_command(), "batch", str(path), "-m", str(folder), "-t", "0", "--offline"]
    if batch_size is not None:
        cmd += ["--batch-size", str(batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=harness.worker_env(threads), cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"gpt2cli batch failed ({proc.returncode}): {proc.stderr[-2000:]}")
    got = sum(json.loads(line)["completion_tokens"] for line in proc.stdout.splitlines() if line.strip())
    if got != expect_tokens:
        raise RuntimeError(f"gpt2cli batch generated {got} tokens, expected {expect_tokens}")
    return seconds


# ---------------------------------------------------------------------------------------------
# numpy's own matrix-vector bandwidth, in a process of its own (OpenBLAS at `threads` threads)
# ---------------------------------------------------------------------------------------------
GEMV_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
from gpt2cli.session import load_model

folder, n_bytes = sys.argv[1], float(sys.argv[2])

def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
    return out

w = load_model(folder).weights
d = w.wte.shape[1]
x = {d: np.full(d, 0.01, np.float32), 4 * d: np.full(4 * d, 0.01, np.float32)}
plan = [(x[m.shape[0]], m, np.empty(m.shape[1], np.float32))
        for b in w.blocks for m in (b.c_attn_weight, b.attn_c_proj_weight, b.c_fc_weight, b.mlp_c_proj_weight)]
logits = np.empty(w.wte.shape[0], np.float32)
def token():
    for v, m, out in plan:
        np.dot(v, m, out=out)
    np.dot(w.wte, x[d], out=logits)
token()
tok = timed(token, 20)
n_in = 16384
n_out = int(n_bytes / 4 / n_in)
W = np.empty((n_in, n_out), np.float32); W.fill(0.01)
xi, oo = np.full(n_in, 0.01, np.float32), np.empty(n_out, np.float32)
xo, oi = np.full(n_out, 0.01, np.float32), np.empty(n_in, np.float32)
conv = timed(lambda: np.dot(xi, W, out=oo), 6)  # x @ W[in, out]: our Conv1D layout
lin = timed(lambda: np.dot(W, xo, out=oi), 6)   # W[out, in] @ x: the transposed layout
print(json.dumps({"token_seconds": tok, "gemv_bytes": W.nbytes, "conv1d_seconds": conv, "linear_seconds": lin}))
"""


def numpy_gemv(folder: Path, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", GEMV_SCRIPT, str(folder), str(GEMV_BYTES)], capture_output=True, text=True, env=harness.worker_env(threads))
    if proc.returncode != 0:
        raise RuntimeError(f"the numpy gemv probe failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def our_product_bytes(folder: Path) -> int:
    """Bytes of the float32 weights one decode token multiplies: each block's four products and the LM head."""
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    d = cfg["n_embd"]
    return 4 * (cfg["n_layer"] * (d * 3 * d + d * d + d * 4 * d + 4 * d * d) + cfg["vocab_size"] * d)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def _alternate(reps: int, settle: float, ours, theirs) -> tuple[list, list]:
    """reps calls of each side, alternating which goes first, each after settle seconds of idle."""
    a, b = [], []
    for rep in range(reps):
        for side in ("ours", "theirs") if rep % 2 == 0 else ("theirs", "ours"):
            time.sleep(settle)
            (a if side == "ours" else b).append(ours() if side == "ours" else theirs())
    return a, b


def run(args) -> dict:
    size, threads, reps, settle = args.size, args.threads, args.reps, harness.SETTLE_SECONDS
    want = set(args.cases.split(",")) if args.cases else set(CASES)
    unknown = want - set(CASES)
    if unknown:
        raise SystemExit(f"bench.py: error: --cases with --peer llamacpp takes {','.join(CASES)}, not {','.join(sorted(unknown))}")
    folder = harness.model_folder(size)
    results: dict = {"size": size, "peer": "llama.cpp", "machine": harness.machine_info(threads), "reps": reps,
                     "model": folder.name, "cases": {}}  # fmt: skip
    try:
        tools = llamacpp.ensure_tools()
        gguf = llamacpp.ensure_gguf(folder)
    except llamacpp.Unavailable as e:
        log(f"llama.cpp: skipped: {e}")
        results["skipped"] = str(e)
        return results
    results["llamacpp"] = {"llama_cpp_python": llamacpp.VERSION, "gguf": gguf.name, "cmake_flags": list(llamacpp.CMAKE_FLAGS)}
    cases = results["cases"]
    bench_tool, batched_tool = tools["llama-bench"], tools["llama-batched-bench"]

    def tg() -> dict:
        return llamacpp.llama_bench(bench_tool, gguf, threads=threads, n_prompt=0, n_gen=N_NEW, depth=N_CONTEXT)

    log("llama.cpp peer: starting our worker, warming both sides up ...")
    worker = harness.Worker("ours", folder, threads, script=OUR_WORKER)
    try:
        worker.ask("decode", n_prompt=N_CONTEXT, n_new=2)
        warm = llamacpp.llama_bench(bench_tool, gguf, threads=threads, n_prompt=0, n_gen=8)
        keep = ("build_commit", "build_number", "cpu_info", "backends", "type_k", "type_v", "flash_attn", "n_batch", "n_ubatch")
        results["llamacpp"].update({k: warm.get(k) for k in keep})
        if want & {"decode", "bandwidth"}:
            log(f"decode: {N_NEW} tokens after {N_CONTEXT}, batch 1 ...")
            ours, theirs = _alternate(reps, settle, lambda: worker.ask("decode", n_prompt=N_CONTEXT, n_new=N_NEW), tg)
            cases["decode"] = ratio_summary([ours_decode_rate(r, N_NEW) for r in ours], [r["avg_ts"] for r in theirs])
            cases["decode"]["unit"] = "tokens/s"
        if "prefill" in want:
            log(f"prefill: {N_PREFILL}-token prompt ...")
            ours, theirs = _alternate(reps, settle, lambda: worker.ask("decode", n_prompt=N_PREFILL, n_new=1),
                                      lambda: llamacpp.llama_bench(bench_tool, gguf, threads=threads, n_prompt=N_PREFILL, n_gen=0))  # fmt: skip
            cases["prefill"] = ratio_summary([N_PREFILL / r["first"] for r in ours], [r["avg_ts"] for r in theirs])
            cases["prefill"]["unit"] = "tokens/s"
    finally:
        worker.close()
    if "bandwidth" in want:
        log(f"bandwidth: numpy's products alone and one {GEMV_BYTES / 1e9:.1f} GB matrix-vector product ...")
        cases["bandwidth"] = bandwidth(cases["decode"], numpy_gemv(folder, threads), our_product_bytes(folder), llamacpp.product_bytes(gguf))
    if "batched" in want:
        cases["batched"] = batched(args, folder, batched_tool, gguf, log)
    results["targets"] = target_status(cases)
    return results


def bandwidth(decode: dict, probe: dict, ours_bytes: int, theirs_bytes: int) -> dict:
    """GB/s of decode's weight reads on each side, beside what numpy reaches on the products alone."""
    gb = 1e-9
    tok = min(probe["token_seconds"])
    gemv = {"conv1d": probe["gemv_bytes"] / min(probe["conv1d_seconds"]) * gb, "linear": probe["gemv_bytes"] / min(probe["linear_seconds"]) * gb}
    return {
        "unit": "GB/s", "ours_bytes": ours_bytes, "llamacpp_bytes": theirs_bytes,
        "ours": ours_bytes * decode["ours"] * gb, "llamacpp": theirs_bytes * decode["llamacpp"] * gb,
        "ratio": decode["ratio"] * ours_bytes / theirs_bytes,
        "numpy_token_products": ours_bytes / tok * gb, "numpy_token_products_ms": tok * 1e3,
        "numpy_token_products_median": ours_bytes / statistics.median(probe["token_seconds"]) * gb,
        "numpy_gemv": max(gemv.values()), "numpy_gemv_layouts": gemv, "numpy_gemv_bytes": probe["gemv_bytes"],
    }  # fmt: skip


def batch_records(b: int | None) -> int:
    """Records in our file for B sequences: 32, or B where B is more, so that B rows really decode together."""
    return max(BATCH_RECORDS, b or 0)


def batch_context(b: int) -> int:
    """llama-batched-bench's context for B sequences: every sequence's prompt and generation fit."""
    return max(4096, b * (BATCH_PROMPT + BATCH_NEW))


def batched(args, folder: Path, tool: Path, gguf: Path, log) -> dict:
    threads, reps, settle = args.threads, args.reps, harness.SETTLE_SECONDS
    exact = has_batch_size(threads)
    mode = "--batch-size B" if exact else "sequential (no --batch-size yet)"
    log(f"batched: max({BATCH_RECORDS}, B) records of {BATCH_PROMPT} prompt tokens, {BATCH_NEW} new each; ours {mode} ...")
    with tempfile.TemporaryDirectory() as tmp:
        texts = batch_prompts(folder, batch_records(max(BATCH_SIZES)), BATCH_PROMPT)
        files: dict[int, Path] = {}

        def ours(b: int | None):
            n = batch_records(b if exact else None)
            if n not in files:
                files[n] = write_batch_file(Path(tmp) / f"records-{n}.jsonl", texts[:n], BATCH_NEW)
            return lambda: n * BATCH_NEW / time_batch(folder, files[n], b, threads, n * BATCH_NEW)

        def theirs(b: int):
            return lambda: llamacpp.batched_bench(
                tool, gguf, threads=threads, n_prompt=BATCH_PROMPT, n_gen=BATCH_NEW, parallel=[b], ctx=batch_context(b)
            )[0]

        sizes, sequential = {}, None
        for b in BATCH_SIZES:
            log(f"  {b} sequence(s) ...")
            if exact or sequential is None:
                ours_runs, theirs_runs = _alternate(reps, settle, ours(b if exact else None), theirs(b))
                sequential = ours_runs
            else:  # the same sequential command for every B: run only llama.cpp again
                theirs_runs = _alternate(reps, settle, lambda: None, theirs(b))[1]
                ours_runs = sequential
            sizes[b] = ratio_summary(ours_runs, [r["gen_speed"] for r in theirs_runs])
            sizes[b]["llamacpp_speed_tg"] = statistics.median(r["speed_tg"] for r in theirs_runs)
            sizes[b]["ours_records"] = batch_records(b if exact else None)
    out = {"unit": "generated tokens/s", "ours_mode": mode, "records": BATCH_RECORDS, "prompt": BATCH_PROMPT, "new_tokens": BATCH_NEW, "sizes": sizes}
    out["best"] = best_vs_best(out)
    if not exact:
        out["best"]["ours_at"] = None  # one sequential command stood in for every B
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def table_rows(results: dict) -> list[tuple[str, ...]]:
    """Rows: case, gpt2cli, llama.cpp, ratio [range], target, met / note."""
    c = results["cases"]
    targets = {t["case"]: t for t in results.get("targets", [])}

    def goal(case: str) -> tuple[str, str]:
        t = targets.get(case)
        return (f">= {t['target']}x", "met" if t["met"] else "not met") if t else ("", "")

    def ratio(d: dict) -> str:
        return f"{d['ratio']:.2f}x [{d['ratio_min']:.2f}-{d['ratio_max']:.2f}]"

    def best_of(d: dict, met: str) -> str:
        # each side's best repetition: on a shared machine, the runs least disturbed by other work
        ours, theirs = max(d["ours_all"]), max(d["llamacpp_all"])
        return f"{met}; best of each {ours:.1f} vs {theirs:.1f} = {ours / theirs:.2f}x"

    rows = []
    if "decode" in c:
        d = c["decode"]
        target, met = goal("decode")
        rows.append((f"decode, batch 1, {N_NEW} tokens after {N_CONTEXT} (tokens/s)", f"{d['ours']:.1f}", f"{d['llamacpp']:.1f}", ratio(d), target, best_of(d, met)))
    if "prefill" in c:
        d = c["prefill"]
        target, met = goal("prefill")
        rows.append((f"prefill, {N_PREFILL}-token prompt (tokens/s)", f"{d['ours']:.0f}", f"{d['llamacpp']:.0f}", ratio(d), target, best_of(d, met)))
    if "batched" in c:
        d = c["batched"]
        for b, s in d["sizes"].items():
            note = f"llama.cpp S_TG (generation only) {s['llamacpp_speed_tg']:.1f}"
            if not d["ours_mode"].startswith("--batch-size"):
                note += f"; ours {d['ours_mode']}"
            rows.append((f"batched, {b} sequence(s), gen. tokens/s incl. prompt", f"{s['ours']:.1f}", f"{s['llamacpp']:.1f}", ratio(s), "", note))
        best = d["best"]
        at = f"B={best['ours_at']}" if best["ours_at"] is not None else "sequential"
        rows.append(("batched, best vs best", f"{best['ours']:.1f} ({at})", f"{best['llamacpp']:.1f} (B={best['llamacpp_at']})", f"{best['ratio']:.2f}x", *goal("batched")))
    if "bandwidth" in c:
        d = c["bandwidth"]
        rows.append(("decode, weights read (GB/s)", f"{d['ours']:.1f}", f"{d['llamacpp']:.1f}", f"{d['ratio']:.2f}x", "", f"{d['ours_bytes'] / 1e6:.0f} / {d['llamacpp_bytes'] / 1e6:.0f} MB per token"))
        rows.append(("numpy: one token's products alone (GB/s)", f"{d['numpy_token_products']:.1f}", "", "", "", f"best of 20, {d['numpy_token_products_ms']:.1f} ms"))
        gemv = d["numpy_gemv_layouts"]
        rows.append((f"numpy: one {d['numpy_gemv_bytes'] / 1e9:.1f} GB gemv, best (GB/s)", f"{d['numpy_gemv']:.1f}", "", "", "", f"x @ W[in,out] {gemv['conv1d']:.1f}, W[out,in] @ x {gemv['linear']:.1f}"))
    return rows


HEAD = ("case", "gpt2cli", "llama.cpp", "ratio [range]", "target", "")


def markdown(results: dict) -> str:
    m = results["machine"]
    if "skipped" in results:
        return f"llama.cpp peer skipped: {results['skipped']}\n"
    lc = results.get("llamacpp", {})
    head = (
        f"GPT-2 {results['size']} shape (random f32 weights), {m.get('cpu')}, {m['threads']} threads each, "
        f"numpy {m['numpy']} ({m.get('blas', '?')}); llama.cpp as vendored in llama-cpp-python {lc.get('llama_cpp_python')} ("
        f"{lc.get('backends')}, KV cache {lc.get('type_k')}); medians of {results['reps']} alternating runs, "
        f"ratio = gpt2cli / llama.cpp per run, its range in brackets.\n\n"
    )
    if "batched" in results["cases"]:
        head += f"Batched, ours: `gpt2cli batch` as a whole command, {results['cases']['batched']['ours_mode']}.\n\n"
    lines = ["| " + " | ".join(HEAD) + " |", "|---|---:|---:|---:|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in table_rows(results)]
    return head + "\n".join(lines) + "\n"


def print_table(results: dict) -> None:
    if "skipped" in results:
        print(f"llama.cpp peer skipped: {results['skipped']}")
        return
    harness.print_rows([HEAD] + table_rows(results), left=(0, 4, 5))


def main(args) -> int:
    results = run(args)
    out = args.out or harness.RESULTS / f"{results['size']}-llamacpp-latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print_table(results)
    print(f"\nwrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0

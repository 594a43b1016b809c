"""gpt2cli batch (continuous batching, issue 14) and batch --ray (issue 15), same run, as ratios.

    python benchmarks/bench_batch.py [--size small] [--reps 3] [--cases loop,transformers,step16,memory,ray]
    python benchmarks/bench_batch.py --size tiny --reps 1 --records 16 --tokens 8 --loop 2 --batch-sizes 2,4 ...

Cases (each figure the median of --reps runs, the sides alternating, the side that goes first
switching every repetition; each ratio the median of the per-repetition ratios):

1. loop          tokens/s of `gpt2cli batch -b B` (whole process: start, load, --records greedy prompts of
                 8-64 tokens, --tokens new each, eos ignored) at each of --batch-sizes, against a shell
                 loop of `gpt2cli generate` processes over the first --loop of the same prompts.
2. transformers  tokens/s in process, model load excluded on both sides: transformers' generate over
                 the same prompts in left-padded batches of each size (attention mask, pad = eos,
                 min_new_tokens = max_new_tokens) against gpt2cli.batch.local.results_of with each batch
                 size; each side's best batch size. Also our whole-command figure (case 1) against it.
3. step16        tokens/s of one GPT2Model.forward step over R rows (SlotCache, rows at positions 40-100)
                 against a batch-1 decode step (forward of one token on a KVCache) at the same positions.
4. memory        peak RSS of the `gpt2cli batch` process at each batch size (from case 1's runs).
5. ray           records/s of `gpt2cli batch --ray --ray-actors N` against the local `gpt2cli batch`
                 on --ray-records short records (8-16 prompt tokens, --ray-tokens new): Ray's overhead.

Prints a table, writes results/<size>-batch-latest.json and .md, and says which batch size was best.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402
from harness import RESULTS, SETTLE_SECONDS, SIZES, machine_info, model_folder, print_rows, worker_env  # noqa: E402

CASES = ("loop", "transformers", "step16", "memory", "ray")
# The issues' targets: batch / loop, ours / transformers, 16-row step / batch-1 step, Ray's overhead (%).
TARGETS = {"loop": 6.0, "transformers": 1.5, "step16": 5.0, "ray_overhead_pct": 20.0}
STEP_ROWS_TARGET = 16
# Common English words GPT-2's BPE keeps whole (one token each, with or without the leading space).
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no what up out who them some could time"
).split()
med = statistics.median


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------
def build_prompts(tokenizer, counts: list[int], seed: int) -> list[str]:
    """One prompt of random common words per count, each tokenizing to exactly that many tokens."""
    import numpy as np

    rng = np.random.default_rng(seed)
    prompts = []
    for n in counts:
        words = list(rng.choice(WORDS, size=n))
        text = " ".join(words)
        while len(ids := tokenizer.encode(text)) != n:  # not expected with these words; keep it exact anyway
            words = words[:-1] if len(ids) > n else [*words, str(rng.choice(WORDS))]
            text = " ".join(words)
        prompts.append(text)
    return prompts


def prompt_set(tokenizer, n: int, low: int, high: int, seed: int) -> tuple[list[str], list[list[int]]]:
    """n prompts whose token counts are drawn uniformly from low..high; their texts and token ids."""
    import numpy as np

    counts = np.random.default_rng(seed).integers(low, high + 1, size=n).tolist()
    texts = build_prompts(tokenizer, counts, seed + 1)
    return texts, [tokenizer.encode(t) for t in texts]


def write_records(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in prompts), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Whole commands
# ---------------------------------------------------------------------------------------------
def gpt2cli() -> list[str]:
    """The installed console script beside this Python (what users run), else the module."""
    script = Path(sys.executable).with_name("gpt2cli")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gpt2cli"]


# Runs a command as a child of this small process and reports its wall time and its peak RSS
# (wait4's ru_maxrss). Not measured from the benchmark itself: a child's maxrss starts from the RSS
# of the process that forked it (the kernel charges the old mm at exec), so it would include the
# benchmark's own memory; this launcher holds ~10 MB.
LAUNCH = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "maxrss": usage.ru_maxrss * 1024, "code": os.waitstatus_to_exitcode(status)}, f)
"""


def run_command(cmd: list[str], threads: int) -> dict:
    """{"seconds": wall time from fork to exit, "maxrss": peak RSS in bytes} of the command."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCH, str(report), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=worker_env(threads), cwd=tmp,
        )  # fmt: skip
        result = json.loads(report.read_text()) if report.is_file() else {"code": done.returncode}
    if result["code"] != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({result['code']}): {done.stderr.decode(errors='replace')[-2000:]}")
    return result


def batch_command(folder: Path, source: Path, tokens: int, batch_size: int | None, *extra: str) -> list[str]:
    cmd = [*gpt2cli(), "batch", str(source), "-m", str(folder), "-t", "0", "-n", str(tokens), "--ignore-eos"]
    return cmd + (["-b", str(batch_size)] if batch_size is not None else []) + list(extra)


def loop_command(folder: Path, prompts: list[str], tokens: int) -> list[str]:
    """A shell loop of `gpt2cli generate`, one process per prompt, as a user's script would run it."""
    head = " ".join(shlex.quote(part) for part in gpt2cli())
    lines = [f"{head} generate -m {shlex.quote(str(folder))} -t 0 -n {tokens} --ignore-eos {shlex.quote(q)} > /dev/null" for q in prompts]
    return ["bash", "-e", "-c", "\n".join(lines)]


def alternate(runs: dict[str, callable], reps: int, settle: float) -> dict[str, list]:
    """Each run reps times, in order on even repetitions and reversed on odd ones, idle `settle` s before each."""
    out: dict[str, list] = {name: [] for name in runs}
    order = list(runs)
    for rep in range(reps):
        for name in order if rep % 2 == 0 else order[::-1]:
            time.sleep(settle)
            out[name].append(runs[name]())
    return out


def figure(values: list[float]) -> dict:
    return {"median": med(values), "all": values}


def ratios(ours: list[float], theirs: list[float]) -> dict:
    per_rep = [o / t for o, t in zip(ours, theirs)]
    return {"ratio": med(per_rep), "ratio_all": per_rep}


def case_loop(args, folder: Path, source: Path, prompts: list[str], log) -> tuple[dict, dict]:
    """Case 1 (and the memory figures of case 4): `gpt2cli batch -b B` against a loop of `gpt2cli generate`."""
    n_tokens = len(prompts) * args.tokens
    loop_prompts = prompts[: args.loop]
    runs = {"loop": lambda: run_command(loop_command(folder, loop_prompts, args.tokens), args.threads)}
    for b in args.batch_sizes:
        runs[f"b{b}"] = lambda b=b: run_command(batch_command(folder, source, args.tokens, b), args.threads)
    log(f"case loop: {len(prompts)} records at batch sizes {args.batch_sizes}, a loop of {len(loop_prompts)} generate ...")
    got = alternate(runs, args.reps, args.settle)
    loop = [len(loop_prompts) * args.tokens / r["seconds"] for r in got["loop"]]
    out = {"unit": "tokens/s", "loop": {**figure(loop), "records": len(loop_prompts)}, "batch": {}, "target": TARGETS["loop"]}
    memory = {"unit": "bytes", "peak_rss": {}}
    for b in args.batch_sizes:
        tps = [n_tokens / r["seconds"] for r in got[f"b{b}"]]
        out["batch"][str(b)] = {**figure(tps), **ratios(tps, loop), "seconds": med(r["seconds"] for r in got[f"b{b}"])}
        memory["peak_rss"][str(b)] = max(r["maxrss"] for r in got[f"b{b}"])
    best = max(args.batch_sizes, key=lambda b: out["batch"][str(b)]["median"])
    out.update(best_batch_size=best, ratio=out["batch"][str(best)]["ratio"], process_start_and_load="included")
    out["met"] = out["ratio"] >= TARGETS["loop"]
    return out, memory


def case_memory(args, folder: Path, source: Path, log) -> dict:
    """Case 4 alone (without case 1): one `gpt2cli batch` run per batch size."""
    log(f"case memory: batch sizes {args.batch_sizes} ...")
    peak = {str(b): run_command(batch_command(folder, source, args.tokens, b), args.threads)["maxrss"] for b in args.batch_sizes}
    return {"unit": "bytes", "peak_rss": peak}


def kv_bytes(folder: Path, batch_sizes: list[int], longest: int) -> dict:
    """Per batch size, the keys and values the slots reserve (a whole context each; pages never written
    cost nothing) and those these records can write at most (every slot at the longest record's length)."""
    from gpt2cli.engine.cache import kv_cache_bytes
    from gpt2cli.session import load_config

    config = load_config(folder)
    return {
        "kv_reserved": {str(b): kv_cache_bytes(config, b, config.n_positions) for b in batch_sizes},
        "kv_written_at_most": {str(b): kv_cache_bytes(config, b, longest) for b in batch_sizes},
    }


def case_ray(args, folder: Path, tokenizer, tmp: Path, log) -> dict:
    """Case 5: `gpt2cli batch --ray --ray-actors N` against the local `gpt2cli batch`, same file."""
    prompts, _ = prompt_set(tokenizer, args.ray_records, 8, 16, seed=11)
    source = write_records(tmp / "ray-records.jsonl", prompts)
    local = batch_command(folder, source, args.ray_tokens, args.ray_batch_size)
    ray = [*local, "--ray", "--ray-actors", str(args.ray_actors)]
    log(f"case ray: {len(prompts)} records, {args.ray_tokens} new tokens each, {args.ray_actors} actors ...")
    got = alternate({"local": lambda: run_command(local, args.threads), "ray": lambda: run_command(ray, args.threads)}, args.reps, args.settle)
    local_rps = [len(prompts) / r["seconds"] for r in got["local"]]
    ray_rps = [len(prompts) / r["seconds"] for r in got["ray"]]
    r = ratios(local_rps, ray_rps)
    return {
        "unit": "records/s", "records": len(prompts), "new_tokens": args.ray_tokens, "actors": args.ray_actors,
        "batch_size": args.ray_batch_size, "local": figure(local_rps), "ray": figure(ray_rps),
        "ratio_local_over_ray": r["ratio"], "ratio_all": r["ratio_all"], "overhead_pct": 100 * (r["ratio"] - 1),
        "target_overhead_pct": TARGETS["ray_overhead_pct"], "met": 100 * (r["ratio"] - 1) < TARGETS["ray_overhead_pct"],
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# In-process workers: one per side, each loading the model once (load excluded from every figure)
# ---------------------------------------------------------------------------------------------
class Ours:
    """gpt2cli in process: the batch's own record loop (results_of), and the engine's decode steps."""

    def __init__(self, folder: Path, threads: int):
        from gpt2cli.session import Session

        self.session = Session.open(folder)
        self.model = self.session.model  # the weights load here, outside every timing

    def batch(self, prompts: list[str], batch_size: int, tokens: int) -> dict:
        from gpt2cli.batch.local import results_of
        from gpt2cli.batch.records import Record
        from gpt2cli.request import Request

        records = [Record(i, text, {}, i + 1) for i, text in enumerate(prompts)]
        defaults = Request(max_tokens=tokens, temperature=0.0, ignore_eos=True).check()
        t0 = time.perf_counter()
        done = list(results_of(self.session, records, defaults, 0, False, None, False, batch_size))
        seconds = time.perf_counter() - t0
        by_index = dict(done)
        assert all("error" not in r for r in by_index.values()), [r for r in by_index.values() if "error" in r][:1]
        return {"seconds": seconds, "tokens": [by_index[i]["tokens"] for i in range(len(prompts))]}

    def _filled(self, cache, top: int):
        cache.k[..., :top, :] = 0.01  # written pages, not the shared zero page, as a real cache's keys
        cache.v[..., :top, :] = 0.01
        return cache

    def step_slots(self, rows: int, steps: int, starts: list[int]) -> dict:
        """Seconds of `steps` decoding steps (GPT2Model.forward over a SlotCache) of `rows` rows starting at positions `starts`."""
        import numpy as np

        from gpt2cli.engine.cache import SlotCache

        cfg = self.model.config
        top = max(starts[:rows]) + steps
        cache = SlotCache(cfg, rows, 0, limit=cfg.n_positions)
        cache.reserve(top)  # the capacity `batch` gives these rows (ContinuousBatch reserves what its records ask)
        cache = self._filled(cache, top)
        cache.lengths[:rows] = starts[:rows]
        tokens = np.random.default_rng(rows).integers(0, cfg.vocab_size - 1, size=rows)  # [rows]
        t0 = time.perf_counter()
        for _ in range(steps):
            self.model.forward(tokens[:, None], cache)
        return {"seconds": time.perf_counter() - t0}

    def step_one(self, steps: int, starts: list[int]) -> dict:
        """Seconds of `steps` batch-1 decode steps (forward of one token), at the positions `starts` in turn."""
        import numpy as np

        cache = self._filled(self.model.new_cache(1, max(starts) + 1), max(starts) + 1)  # sized as generate sizes it
        token = np.asarray([[1234]])  # [1, 1]
        t0 = time.perf_counter()
        for i in range(steps):
            cache.length = starts[i % len(starts)]
            self.model.forward(token, cache)
        return {"seconds": time.perf_counter() - t0}


class Theirs:
    """transformers' GPT2LMHeadModel.generate on PyTorch, in left-padded batches."""

    def __init__(self, folder: Path, threads: int):
        import torch
        from transformers import GPT2LMHeadModel

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
        self.eos = self.model.config.eos_token_id

    def batch(self, ids: list[list[int]], batch_size: int, tokens: int) -> dict:
        torch = self.torch
        out_tokens = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                chunk = ids[start : start + batch_size]
                width = max(len(p) for p in chunk)
                input_ids = torch.tensor([[self.eos] * (width - len(p)) + p for p in chunk])  # [b, width], left padding
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])  # [b, width]
                out = self.model.generate(
                    input_ids, attention_mask=mask, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens,
                    pad_token_id=self.eos,
                )  # fmt: skip
                assert out.shape == (len(chunk), width + tokens), out.shape
                out_tokens += out[:, width:].tolist()
        return {"seconds": time.perf_counter() - t0, "tokens": out_tokens}


def worker_main(side: str, folder: Path, threads: int) -> None:
    """The benchmarks' worker loop (harness.worker_main), serving this script's two sides."""
    harness.worker_main(side, folder, threads, (Ours, Theirs))


class Worker(harness.Worker):
    """The benchmarks' worker process (harness.Worker), running this script's worker side."""

    def __init__(self, side: str, folder: Path, threads: int):
        super().__init__(side, folder, threads, script=Path(__file__).resolve())


def case_transformers(args, workers: dict[str, Worker], prompts: list[str], ids: list[list[int]], log) -> dict:
    """Case 2: in process, load excluded: results_of at each batch size against transformers' padded generate."""
    n_tokens = len(prompts) * args.tokens
    for w in workers.values():  # warm-up: page cache, BLAS buffers, lazy imports
        w.ask("batch", **({"prompts": prompts[:4]} if w.side == "ours" else {"ids": ids[:4]}), batch_size=2, tokens=2)
    runs = {}
    for b in args.batch_sizes:
        runs[f"ours{b}"] = lambda b=b: workers["ours"].ask("batch", prompts=prompts, batch_size=b, tokens=args.tokens)
        runs[f"theirs{b}"] = lambda b=b: workers["theirs"].ask("batch", ids=ids, batch_size=b, tokens=args.tokens)
    log(f"case transformers: {len(prompts)} records in process at batch sizes {args.batch_sizes} ...")
    got = alternate(runs, args.reps, args.settle)
    tps = {name: [n_tokens / r["seconds"] for r in results] for name, results in got.items()}
    out = {"unit": "tokens/s", "ours": {}, "theirs": {}, "target": TARGETS["transformers"], "load": "excluded on both sides"}
    for b in args.batch_sizes:
        out["ours"][str(b)] = figure(tps[f"ours{b}"])
        out["theirs"][str(b)] = figure(tps[f"theirs{b}"])
    ours_best = max(args.batch_sizes, key=lambda b: out["ours"][str(b)]["median"])
    theirs_best = max(args.batch_sizes, key=lambda b: out["theirs"][str(b)]["median"])
    out.update(ours_best_batch_size=ours_best, theirs_best_batch_size=theirs_best, **ratios(tps[f"ours{ours_best}"], tps[f"theirs{theirs_best}"]))
    out["met"] = out["ratio"] >= TARGETS["transformers"]
    ours_tokens, theirs_tokens = got[f"ours{ours_best}"][0]["tokens"], got[f"theirs{theirs_best}"][0]["tokens"]
    out["same_tokens"] = sum(a == b for a, b in zip(ours_tokens, theirs_tokens)) / len(prompts)  # records whose tokens agree
    out["load_seconds"] = {side: w.hello["load_seconds"] for side, w in workers.items()}
    return out


def case_step(args, worker: Worker, log) -> dict:
    """Case 3: tokens/s of the batched decode step at each row count against the batch-1 step, same process."""
    import numpy as np

    rows_list = sorted(set(args.step_rows) | {STEP_ROWS_TARGET})
    starts = np.random.default_rng(5).integers(40, max(41, 100 - args.steps), size=max(rows_list)).tolist()
    one_steps = max(args.steps, len(starts) // 4)
    worker.ask("step_one", steps=2, starts=starts)  # warm-up
    runs = {"one": lambda: worker.ask("step_one", steps=one_steps, starts=starts)}
    for rows in rows_list:
        runs[f"rows{rows}"] = lambda rows=rows: worker.ask("step_slots", rows=rows, steps=args.steps, starts=starts)
    log(f"case step16: decode steps of {rows_list} rows against batch 1 ...")
    got = alternate(runs, args.reps, args.settle)
    one = [one_steps / r["seconds"] for r in got["one"]]
    out = {"unit": "tokens/s", "steps": args.steps, "positions": [min(starts), max(starts) + args.steps], "batch1": figure(one), "rows": {}}
    for rows in rows_list:
        tps = [rows * args.steps / r["seconds"] for r in got[f"rows{rows}"]]
        out["rows"][str(rows)] = {**figure(tps), **ratios(tps, one), "ms_per_step": 1e3 * med(r["seconds"] for r in got[f"rows{rows}"]) / args.steps}
    out.update(ratio=out["rows"][str(STEP_ROWS_TARGET)]["ratio"], target=TARGETS["step16"])
    out["met"] = out["ratio"] >= TARGETS["step16"]
    return out


# ---------------------------------------------------------------------------------------------
# The run, the table, the files
# ---------------------------------------------------------------------------------------------
def run(args) -> dict:
    from gpt2cli.store.tokenizer import Tokenizer

    folder = model_folder(args.size)
    want = [c for c in CASES if c in args.cases]
    results: dict = {
        "size": args.size, "machine": machine_info(args.threads), "reps": args.reps,
        "model": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else folder.name,
        "params": {
            "records": args.records, "prompt_tokens": [8, 64], "new_tokens": args.tokens, "loop": args.loop,
            "batch_sizes": args.batch_sizes, "step_rows": args.step_rows, "steps": args.steps,
            "ray_records": args.ray_records, "ray_prompt_tokens": [8, 16], "ray_new_tokens": args.ray_tokens,
            "ray_actors": args.ray_actors, "greedy": True, "ignore_eos": True,
        },
        "weights_bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
        "cases": {},
    }  # fmt: skip
    cases = results["cases"]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tokenizer = Tokenizer.from_folder(folder)
    prompts, ids = prompt_set(tokenizer, args.records, 8, 64, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        source = write_records(Path(tmp) / "records.jsonl", prompts)
        if "loop" in want:
            cases["loop"], memory = case_loop(args, folder, source, prompts, log)
            if "memory" in want:
                cases["memory"] = memory
        elif "memory" in want:
            cases["memory"] = case_memory(args, folder, source, log)
        if "memory" in cases:
            cases["memory"].update(kv_bytes(folder, args.batch_sizes, max(map(len, ids)) + args.tokens), weights_bytes=results["weights_bytes"])
        if {"transformers", "step16"} & set(want):
            sides = ["ours", "theirs"] if "transformers" in want else ["ours"]
            log(f"starting workers ({', '.join(sides)}) ...")
            workers = {side: Worker(side, folder, args.threads) for side in sides}
            try:
                if "transformers" in want:
                    cases["transformers"] = case_transformers(args, workers, prompts, ids, log)
                    if "loop" in cases:  # ours as a whole command (start and load included) against theirs in process
                        t = cases["transformers"]
                        whole = cases["loop"]["batch"][str(cases["loop"]["best_batch_size"])]["median"]
                        t["ratio_whole_command"] = whole / t["theirs"][str(t["theirs_best_batch_size"])]["median"]
                if "step16" in want:
                    cases["step16"] = case_step(args, workers["ours"], log)
            finally:
                for w in workers.values():
                    w.close()
        if "ray" in want:
            cases["ray"] = case_ray(args, folder, tokenizer, Path(tmp), log)
    return results


def fmt_table(results: dict) -> list[tuple[str, ...]]:
    """Rows: case, gpt2cli, against, ratio, target, note."""
    c, p = results["cases"], results["params"]
    rows = []

    def met(ok: bool) -> str:
        return "met" if ok else "missed"

    if "loop" in c:
        d = c["loop"]
        loop = f"{d['loop']['median']:.1f} (loop)"
        for b, f in d["batch"].items():
            best = int(b) == d["best_batch_size"]
            rows.append((f"batch -b {b}, whole command (tokens/s)", f"{f['median']:.1f}", loop, f"{f['ratio']:.2f}x",
                         f">= {d['target']:g}x" if best else "", (met(d["met"]) + "; best batch size") if best else ""))  # fmt: skip
    if "transformers" in c:
        d = c["transformers"]
        for b in d["ours"]:
            o, t = d["ours"][b]["median"], d["theirs"][b]["median"]
            rows.append((f"in process, batch {b} (tokens/s)", f"{o:.1f}", f"{t:.1f} (transformers)", f"{o / t:.2f}x", "", "load excluded"))
        ob, tb = d["ours_best_batch_size"], d["theirs_best_batch_size"]
        rows.append((f"in process, best: ours -b {ob}, theirs {tb}", f"{d['ours'][str(ob)]['median']:.1f}", f"{d['theirs'][str(tb)]['median']:.1f} (transformers)",
                     f"{d['ratio']:.2f}x", f">= {d['target']:g}x", f"{met(d['met'])}; same tokens in {100 * d['same_tokens']:.0f} % of records"))  # fmt: skip
        if "ratio_whole_command" in d:
            whole = c["loop"]["batch"][str(c["loop"]["best_batch_size"])]["median"]
            rows.append((f"whole command -b {c['loop']['best_batch_size']} vs theirs in process", f"{whole:.1f}",
                         f"{d['theirs'][str(tb)]['median']:.1f} (transformers)", f"{d['ratio_whole_command']:.2f}x", "",
                         "ours with process start and load"))  # fmt: skip
    if "step16" in c:
        d = c["step16"]
        one = f"{d['batch1']['median']:.1f} (batch 1)"
        for rows_n, f in d["rows"].items():
            target = int(rows_n) == STEP_ROWS_TARGET
            rows.append((f"decode step, {rows_n} rows (tokens/s)", f"{f['median']:.1f}", one, f"{f['ratio']:.2f}x",
                         f">= {d['target']:g}x" if target else "", (met(d["met"]) + "; " if target else "") + f"{f['ms_per_step']:.1f} ms/step"))  # fmt: skip
    if "memory" in c:
        d = c["memory"]
        for b, peak in d["peak_rss"].items():
            kv = f"keys and values: {d['kv_written_at_most'][b] / 2**20:.1f} MiB written at most, {d['kv_reserved'][b] / 2**20:.0f} MiB reserved"
            rows.append((f"peak RSS, batch -b {b}", f"{peak / 2**20:.0f} MiB", f"{d['weights_bytes'] / 2**20:.0f} MiB (weights)", "", "", kv))
    if "ray" in c:
        d = c["ray"]
        rows.append((f"batch --ray, {d['actors']} actors (records/s)", f"{d['ray']['median']:.2f}", f"{d['local']['median']:.2f} (local)",
                     f"{d['ratio_local_over_ray']:.2f}x", f"< {d['target_overhead_pct']:g} %",
                     f"{met(d['met'])}: overhead {d['overhead_pct']:.0f} %; {d['records']} records, {p['ray_new_tokens']} new tokens"))  # fmt: skip
    return rows


HEAD = ("case", "gpt2cli", "against", "ratio", "target", "")


def best_line(results: dict) -> str | None:
    c = results["cases"]
    parts = []
    if "loop" in c:
        parts.append(f"whole command -b {c['loop']['best_batch_size']}")
    if "transformers" in c:
        parts.append(f"in process -b {c['transformers']['ours_best_batch_size']}")
    return f"best batch size: {', '.join(parts)}" if parts else None


def markdown(results: dict) -> str:
    m, p = results["machine"], results["params"]
    head = (
        f"GPT-2 {results['size']} shape (random weights), {m.get('cpu')}, {m['threads']} threads, "
        f"numpy {m['numpy']} ({m.get('blas', '?')}), torch {m.get('torch')}, transformers {m.get('transformers')}; "
        f"{p['records']} greedy prompts of 8-64 tokens, {p['new_tokens']} new tokens each (eos ignored); "
        f"medians of {results['reps']} alternating runs, ratios per run.\n\n"
    )
    lines = ["| " + " | ".join(HEAD) + " |", "|---|---:|---:|---:|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in fmt_table(results)]
    best = best_line(results)
    return head + "\n".join(lines) + "\n" + (f"\n{best}\n" if best else "")


def sizes(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of integers >= 1")
    return values


def cases(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = set(names) - set(CASES)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(CASES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=[*SIZES, "tiny"], default="small")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", type=cases, default=list(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--records", type=int, default=256, help="prompts of 8-64 tokens (cases loop, transformers, memory)")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per record (cases loop, transformers, memory)")
    p.add_argument("--batch-sizes", type=sizes, default=[8, 16, 32, 48, 64])
    p.add_argument("--loop", type=int, default=16, help="prompts the loop of gpt2cli generate runs (its time per record is scaled)")
    p.add_argument("--step-rows", type=sizes, default=[8, 16, 32, 48, 64], help="rows of the decode steps (16 always)")
    p.add_argument("--steps", type=int, default=16, help="decode steps timed per figure (case step16)")
    p.add_argument("--ray-records", type=int, default=3000)
    p.add_argument("--ray-tokens", type=int, default=8)
    p.add_argument("--ray-actors", "--actors", type=int, default=2)
    p.add_argument("--ray-batch-size", type=int, help="-b for both ray runs (default: the command's)")
    p.add_argument("--no-ray", action="store_true", help="drop the ray case")
    p.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="idle seconds before each timed run")
    p.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/<size>-batch-latest.json)")
    p.add_argument("--worker", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.model, args.threads)
        return 0
    if args.no_ray:
        args.cases = [c for c in args.cases if c != "ray"]
    results = run(args)
    out = args.out or RESULTS / f"{results['size']}-batch-latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print_rows([HEAD] + fmt_table(results), left=(0, 2, 4, 5))
    if best := best_line(results):
        print(f"\n{best}")
    print(f"\nwrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

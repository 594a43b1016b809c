"""gpt2cli against transformers + PyTorch on the same CPU, side by side, as ratios.

    python benchmarks/bench.py [--size small|medium|large|xl] [--reps N] [--threads 2] [--out FILE]
    python benchmarks/bench.py --profile          # where one decode token's milliseconds go
    python benchmarks/bench.py --peer llamacpp    # against llama.cpp instead (peer_llamacpp.py)

A random GPT-2 of the chosen shape is written once in the Hub's layout (benchmarks/.cache/, git-ignored).
Each side runs in its own long-lived worker process (so the two thread pools never compete), and the
requests alternate between them, the side that goes first switching every repetition; ratios are
taken per repetition, then their median. Cases:

1. decode   tokens/s, batch 1, greedy, 128 new tokens after a 16-token prompt (eos ignored)
2. prefill  tokens/s of a 512-token prompt (time to the first new token)
3. beam     steps/s of 4-beam search, 64 new tokens (all steps run)
4. cold     wall time of the whole command, process start to the first token on stdout
5. memory   peak resident memory of a fresh process running case 1 (total, anonymous, file-backed)
6. floor    the per-token matrix-vector products alone (every weight read once), the memory-system limit

Ours is what users run: gpt2cli.decoding.generate.generate, gpt2cli.decoding.beam.beam_search, and the gpt2cli command.
Prints a table, writes results/<size>-latest.json and results/<size>-latest.md (for the README).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import HERE, RESULTS, ROOT, SETTLE_SECONDS, SIZES, Worker, machine_info, model_folder, print_rows, prompt_ids, worker_env, worker_main

SCRIPT = Path(__file__).resolve()  # workers run as `bench.py --worker SIDE` (main below)


# ---------------------------------------------------------------------------------------------
# The two sides, each served in its own worker process (harness.Worker)
# ---------------------------------------------------------------------------------------------
def timed(run, reps: int, settle: float = 0.0) -> list[float]:
    """Seconds of each of reps calls of run(), each after settle seconds of idle."""
    seconds = []
    for _ in range(reps):
        time.sleep(settle)
        t0 = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t0)
    return seconds


class Ours:
    """gpt2cli's own code paths: decoding.generate, beam.beam_search, GPT2Model.forward."""

    name = "gpt2cli"

    def __init__(self, folder: Path, threads: int):
        from gpt2cli.session import load_model

        self.model = load_model(folder)
        self.vocab = self.model.config.vocab_size

    def decode(self, n_prompt: int, n_new: int) -> dict:
        from gpt2cli.decoding.generate import generate
        from gpt2cli.decoding.sampling import Sampler, SamplingOptions

        prompt = prompt_ids(n_prompt, self.vocab)
        sampler = Sampler(SamplingOptions(temperature=0.0), seed=0)
        t0 = time.perf_counter()
        first = None
        tokens = []
        for step in generate(self.model, prompt, sampler, n_new, ignore_eos=True, eos_token_id=self.model.config.eos_token_id):
            tokens.append(int(step.tokens[0]))
            if first is None:
                first = time.perf_counter()
        t1 = time.perf_counter()
        return {"seconds": t1 - t0, "first": first - t0, "tokens": tokens}

    def beam(self, n_prompt: int, n_new: int, beams: int) -> dict:
        from gpt2cli.decoding.beam import beam_search

        prompt = prompt_ids(n_prompt, self.vocab)
        t0 = time.perf_counter()
        # eos_token_id=-1: no hypothesis ends early, as min_new_tokens does for transformers
        hyps = beam_search(self.model, prompt, num_beams=beams, max_new_tokens=n_new, early_stopping=False, eos_token_id=-1)
        t1 = time.perf_counter()
        return {"seconds": t1 - t0, "tokens": hyps[0].tokens}

    def _lm_head(self):
        """The LM head's weight as the engine multiplies by it ([n_embd, V], made at its first logits)."""
        import numpy as np

        self.model.logits(np.zeros((1, self.model.config.n_embd), np.float32))
        return self.model._lm_head

    def floor(self, passes: int, prompt: int) -> dict:
        """Every weight matrix once per pass, as one decode token reads them: plain np.dot into preallocated
        outputs; the same products for a whole prompt (the GEMMs alone of a prefill); and the products
        a prompt's forward() needs (the prefill's floor: _prompt_products)."""
        import numpy as np

        w = self.model.weights
        d = self.model.config.n_embd
        x = {d: np.full(d, 0.01, np.float32), 4 * d: np.full(4 * d, 0.01, np.float32)}
        plan = [(x[m.shape[0]], m, np.empty(m.shape[1], np.float32))
                for b in w.blocks for m in (b.c_attn_weight, b.attn_c_proj_weight, b.c_fc_weight, b.mlp_c_proj_weight)]  # fmt: skip
        logits = np.empty(w.wte.shape[0], np.float32)  # [V]
        head = self._lm_head()  # [n_embd, V]
        # a decoding token multiplies by mlp.c_proj in the engine's own [n_embd, 4*n_embd] layout
        mlp_t = {id(b.mlp_c_proj_weight): self.model._mlp_proj_layout(i) for i, b in enumerate(w.blocks)}

        def token() -> None:
            for v, m, out in plan:
                if id(m) in mlp_t:
                    np.dot(mlp_t[id(m)], v, out=out)
                else:
                    np.dot(v, m, out=out)
            np.dot(x[d], head, out=logits)

        times = timed(token, passes)
        rows = {n: np.full((prompt, n), 0.01, np.float32) for n in x}
        gemms = [(rows[m.shape[0]], m, np.empty((prompt, m.shape[1]), np.float32)) for _, m, _ in plan]

        def prompt_gemms() -> None:
            for a, m, out in gemms:
                np.dot(a, m, out=out)

        gemm_times = timed(prompt_gemms, max(1, passes // 5))
        prompt_products = self._prompt_products(plan, gemms, x, prompt)
        prompt_products()  # untimed: the worker threads' start and the outputs' first pages
        # idle first, as before a prefill request: OpenBLAS's workers, still spinning after the
        # previous pass's two-thread gemvs, would share the cores with the split pass (~+20 %)
        prompt_times = timed(prompt_products, max(1, passes // 5), settle=SETTLE_SECONDS)
        # a 4-beam step's products, by the engine's own routes (gpt2cli.engine.kernels.matmul, matmul_t, logits)
        from gpt2cli.engine.kernels import matmul, matmul_t

        beams = {n: np.full((4, n), 0.01, np.float32) for n in x}

        def beam_step() -> None:
            for _, m, _ in plan:
                if id(m) in mlp_t:
                    matmul_t(beams[m.shape[0]], mlp_t[id(m)])
                else:
                    matmul(beams[m.shape[0]], m)
            self.model.logits(beams[d])

        beam_times = timed(beam_step, passes)
        return {
            "seconds": statistics.median(times), "best": min(times), "prefill_gemm_seconds": statistics.median(gemm_times),
            "beam_products_seconds": statistics.median(beam_times), "prefill_products_seconds": statistics.median(prompt_times),
        }  # fmt: skip

    def _prompt_products(self, plan, gemms, x, prompt: int):
        """A function running the products forward() needs for a prompt's last logits: the prefill's floor.

        Every layer's 4 GEMMs but the last's, which needs only its keys and values (c_attn) and one
        position's products; each layer's attention products, in the engine's query tiles against
        only the keys each tile sees; the LM head for the last position. The prompt's products run
        as the engine runs them (gpt2cli.engine.threads): OpenBLAS held to one thread, attention in
        head parts on both cores, then a layer's other products in row parts (attn.c_proj, c_fc and
        mlp.c_proj, then the next layer's c_attn), two fork-joins a layer. Attention's small products
        take 2.5 ms a layer that way, 6.1 ms on OpenBLAS's own two threads.
        """
        import numpy as np

        from gpt2cli.engine import threads
        from gpt2cli.engine.model import _QUERY_TILE

        cfg = self.model.config
        q, k, v = (np.full((1, cfg.n_head, prompt, cfg.head_dim), 0.01, np.float32) for _ in range(3))  # [1, heads, T, head_dim]

        def attention(h0: int, h1: int) -> None:
            for start in range(0, prompt, _QUERY_TILE):
                stop = min(prompt, start + _QUERY_TILE)
                scores = np.matmul(q[:, h0:h1, start:stop], k[:, h0:h1, :stop].transpose(0, 1, 3, 2))  # [1, heads, tile, stop]
                np.matmul(scores, v[:, h0:h1, :stop])

        def rows(products):  # these products of each row part, one fork-join
            return lambda: threads.split(lambda r0, r1: [np.matmul(a[r0:r1], m) for a, m, _ in products], prompt, calls_blas=True)

        last = len(gemms) - 4  # gemms and plan hold 4 products per layer, in layer order
        prompt_calls = [rows(gemms[:1])]  # the first layer's c_attn
        for layer in range(cfg.n_layer - 1):  # its attention, its other products and the next layer's c_attn
            prompt_calls.append(lambda: threads.split(attention, cfg.n_head, calls_blas=True))
            prompt_calls.append(rows(gemms[4 * layer + 1 : 4 * layer + 5]))
        logits = np.empty(self.model.weights.wte.shape[0], np.float32)
        head = self._lm_head()  # [n_embd, V]

        def run() -> None:
            with threads.one_blas_thread():
                for call in prompt_calls:
                    call()
            for v_in, m, out in plan[last + 1 :]:  # the rest of the last layer, one position
                np.dot(v_in, m, out=out)
            np.dot(x[cfg.n_embd], head, out=logits)

        return run


class Theirs:
    """transformers' GPT2LMHeadModel.generate on PyTorch (CPU, float32)."""

    name = "transformers"

    def __init__(self, folder: Path, threads: int):
        import torch
        from transformers import GPT2LMHeadModel

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
        self.vocab = self.model.config.vocab_size
        self.eos = self.model.config.eos_token_id

    def _generate(self, ids: list[int], **kw):
        torch = self.torch
        with torch.inference_mode():
            return self.model.generate(torch.tensor([ids]), do_sample=False, pad_token_id=self.eos, **kw)

    def decode(self, n_prompt: int, n_new: int) -> dict:
        prompt = prompt_ids(n_prompt, self.vocab)
        t0 = time.perf_counter()
        if n_new == 1:
            out = self._generate(prompt, max_new_tokens=1)
            t1 = time.perf_counter()
            return {"seconds": t1 - t0, "first": t1 - t0, "tokens": out[0, n_prompt:].tolist()}
        out = self._generate(prompt, max_new_tokens=n_new, min_new_tokens=n_new)
        t1 = time.perf_counter()
        return {"seconds": t1 - t0, "tokens": out[0, n_prompt:].tolist()}

    def beam(self, n_prompt: int, n_new: int, beams: int) -> dict:
        prompt = prompt_ids(n_prompt, self.vocab)
        t0 = time.perf_counter()
        out = self._generate(prompt, num_beams=beams, max_new_tokens=n_new, min_new_tokens=n_new, early_stopping=False)
        t1 = time.perf_counter()
        return {"seconds": t1 - t0, "tokens": out[0, n_prompt:].tolist()}

    def floor(self, passes: int, prompt: int) -> dict:
        """The same products with torch (for reference: its BLAS against ours)."""
        torch = self.torch
        tr = self.model.transformer
        d = self.model.config.n_embd
        x = {d: torch.full((d,), 0.01), 4 * d: torch.full((4 * d,), 0.01)}
        plan = [(x[m.shape[0]], m) for b in tr.h for m in (b.attn.c_attn.weight, b.attn.c_proj.weight, b.mlp.c_fc.weight, b.mlp.c_proj.weight)]
        plan = [(v, m.t(), torch.empty(m.shape[1])) for v, m in plan]  # [out, in] views: y = W^T x
        wte = tr.wte.weight
        logits = torch.empty(wte.shape[0])
        rows = {n: torch.full((prompt, n), 0.01) for n in x}
        gemms = [(rows[m.shape[1]], m.t(), torch.empty(prompt, m.shape[0])) for _, m, _ in plan]  # m: [out, in] views
        beams = {n: torch.full((4, n), 0.01) for n in x}
        beam_plan = [(beams[m.shape[1]], m.t(), torch.empty(4, m.shape[0])) for _, m, _ in plan]
        head_out = torch.empty(4, wte.shape[0])

        def token() -> None:
            for v, m, out in plan:
                torch.mv(m, v, out=out)
            torch.mv(wte, x[d], out=logits)

        def prompt_gemms() -> None:
            for a, m, out in gemms:
                torch.mm(a, m, out=out)

        def beam_step() -> None:
            for a, m, out in beam_plan:
                torch.mm(a, m, out=out)
            torch.mm(beams[d], wte.t(), out=head_out)

        with torch.inference_mode():
            times = timed(token, passes)
            gemm_times = timed(prompt_gemms, max(1, passes // 5))
            beam_times = timed(beam_step, passes)
        return {
            "seconds": statistics.median(times), "best": min(times), "prefill_gemm_seconds": statistics.median(gemm_times),
            "beam_products_seconds": statistics.median(beam_times),
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------
def alternate(workers: dict[str, Worker], reps: int, case: str, settle: float = SETTLE_SECONDS, **kw) -> dict[str, list[dict]]:
    """Runs the case on both sides reps times, alternating which side goes first."""
    runs: dict[str, list[dict]] = {side: [] for side in workers}
    order = list(workers)
    for rep in range(reps):
        for side in order if rep % 2 == 0 else order[::-1]:
            time.sleep(settle)
            runs[side].append(workers[side].ask(case, **kw))
    return runs


def summarize(runs: dict[str, list[dict]], value, best=max) -> dict:
    """Medians of each side's value, the best of each, and the median of the per-repetition ratios ours/theirs."""
    ours = [value(r) for r in runs["ours"]]
    theirs = [value(r) for r in runs["theirs"]]
    return {
        "ours": statistics.median(ours), "theirs": statistics.median(theirs),
        "ours_best": best(ours), "theirs_best": best(theirs),
        "ratio": statistics.median(o / t for o, t in zip(ours, theirs)),
        "ours_all": ours, "theirs_all": theirs,
    }  # fmt: skip


def cold_commands(folder: Path, threads: int) -> dict[str, list[str]]:
    theirs = (
        "import sys, torch\n"
        "from transformers import AutoTokenizer, GPT2LMHeadModel\n"
        f"torch.set_num_threads({threads})\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "model = GPT2LMHeadModel.from_pretrained(sys.argv[1]).eval()\n"
        "ids = tok('Hello', return_tensors='pt').input_ids\n"
        "with torch.inference_mode():\n"
        "    out = model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=tok.eos_token_id)\n"
        "print(tok.decode(out[0, ids.shape[1]:]), flush=True)\n"
    )
    # the installed console script beside this Python (what users run), else the module
    script = Path(sys.executable).parent / "gpt2cli"
    ours = [str(script)] if script.is_file() else [sys.executable, "-m", "gpt2cli"]
    ours += ["generate", "-m", str(folder), "-n", "1", "--seed", "0", "Hello"]
    return {"ours": ours, "theirs": [sys.executable, "-c", theirs, str(folder)]}


def time_command(cmd: list[str], threads: int) -> dict:
    """Wall seconds from spawning the command to the first byte on its stdout, and to its exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=worker_env(threads), cwd=tempfile.gettempdir())
    first = proc.stdout.read(1)
    t1 = time.perf_counter()
    rest, err = proc.communicate()
    t2 = time.perf_counter()
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"{cmd[:3]}... failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return {"seconds": t1 - t0, "exit_seconds": t2 - t0, "stdout": (first + rest).decode(errors="replace")}


def run(args) -> dict:
    smoke = args.smoke
    size = "tiny" if smoke else args.size
    tmp = tempfile.TemporaryDirectory() if smoke else None
    folder = model_folder(size, Path(tmp.name) if tmp else None)
    reps = 1 if smoke else args.reps
    settle = 0.0 if smoke else SETTLE_SECONDS
    n_prompt, n_new, n_prefill, n_beam = (16, 8, 64, 4) if smoke else (16, 128, 512, 64)
    results: dict = {
        "size": size, "machine": machine_info(args.threads), "reps": reps,
        "model": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else folder.name,
        "params": {"prompt": n_prompt, "new_tokens": n_new, "prefill_prompt": n_prefill, "beam_steps": n_beam, "beams": 4},
        "weights_bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
        "cases": {},
    }  # fmt: skip
    cases = results["cases"]
    want = set(args.cases.split(",")) if args.cases else {"decode", "prefill", "beam", "cold", "memory", "floor"}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if want & {"decode", "prefill", "beam", "floor"}:
        log("starting workers ...")
        workers = {"ours": Worker("ours", folder, args.threads, script=SCRIPT), "theirs": Worker("theirs", folder, args.threads, script=SCRIPT)}
        results["load_seconds"] = {side: w.hello["load_seconds"] for side, w in workers.items()}
        try:
            # warm-up: page cache, BLAS buffers, lazy imports
            for w in workers.values():
                w.ask("decode", n_prompt=n_prompt, n_new=2)
            if "decode" in want:
                log("case 1: decode ...")
                runs = alternate(workers, reps, "decode", settle, n_prompt=n_prompt, n_new=n_new)
                cases["decode"] = summarize(runs, lambda r: n_new / r["seconds"])
                cases["decode"]["unit"] = "tokens/s"
                cases["decode"]["same_tokens"] = runs["ours"][0]["tokens"] == runs["theirs"][0]["tokens"]
            if "prefill" in want:
                log("case 2: prefill ...")
                runs = alternate(workers, reps, "decode", settle, n_prompt=n_prefill, n_new=1)
                cases["prefill"] = summarize(runs, lambda r: n_prefill / r["first"])
                cases["prefill"]["unit"] = "tokens/s"
            if "beam" in want:
                log("case 3: beam ...")
                runs = alternate(workers, reps, "beam", settle, n_prompt=n_prompt, n_new=n_beam, beams=4)
                cases["beam"] = summarize(runs, lambda r: n_beam / r["seconds"])
                cases["beam"]["unit"] = "steps/s"
                cases["beam"]["same_tokens"] = runs["ours"][0]["tokens"] == runs["theirs"][0]["tokens"]
            if "floor" in want:
                log("case 6: floor ...")
                runs = alternate(workers, reps, "floor", settle, passes=3 if smoke else 20, prompt=n_prefill)
                floor = summarize(runs, lambda r: r["seconds"] * 1e3, best=min)
                gemm = summarize(runs, lambda r: r["prefill_gemm_seconds"] * 1e3, best=min)
                beam_products = summarize(runs, lambda r: r["beam_products_seconds"] * 1e3, best=min)
                prompt_products = statistics.median(r["prefill_products_seconds"] * 1e3 for r in runs["ours"])
                cases["floor"] = {
                    "unit": "ms/token", "ours": floor["ours"], "theirs": floor["theirs"],
                    "ours_best": floor["ours_best"], "theirs_best": floor["theirs_best"],
                    "prefill_gemm_ms": {"ours": gemm["ours"], "theirs": gemm["theirs"], "prompt": n_prefill},
                    "beam_products_ms": {"ours": beam_products["ours"], "theirs": beam_products["theirs"], "beams": 4},
                    "prefill_products_ms": {"ours": prompt_products, "prompt": n_prefill},
                }  # fmt: skip
                if "decode" in cases:
                    per_token = 1e3 / cases["decode"]["ours"]
                    cases["floor"]["decode_ms_per_token"] = per_token
                    cases["floor"]["decode_over_floor"] = per_token / cases["floor"]["ours"]
        finally:
            for w in workers.values():
                w.close()

    if "cold" in want:
        log("case 4: cold start ...")
        cmds = cold_commands(folder, args.threads)
        if not smoke:
            for cmd in cmds.values():
                time_command(cmd, args.threads)  # warm the page cache and .pyc files
        runs = {"ours": [], "theirs": []}
        for rep in range(reps):
            for side in ("ours", "theirs") if rep % 2 == 0 else ("theirs", "ours"):
                runs[side].append(time_command(cmds[side], args.threads))
        s = summarize(runs, lambda r: r["seconds"], best=min)
        cases["cold"] = {
            "unit": "s", "ours": s["ours"], "theirs": s["theirs"], "ratio": s["ratio"],
            "ours_exit": statistics.median(r["exit_seconds"] for r in runs["ours"]),
            "theirs_exit": statistics.median(r["exit_seconds"] for r in runs["theirs"]),
            "commands": {k: " ".join(v[:1] + ["-c", "<script>"] + v[3:] if k == "theirs" else v) for k, v in cmds.items()},
        }  # fmt: skip

    if "memory" in want:
        log("case 5: peak memory ...")
        mem = {}
        for side in ("ours", "theirs"):
            w = Worker(side, folder, args.threads, memory=True, script=SCRIPT)
            r = w.ask("decode", n_prompt=n_prompt, n_new=n_new)
            w.close()
            # VmHWM, not getrusage's ru_maxrss: a child's ru_maxrss starts from the RSS of the (v)forked
            # parent before exec, so it would charge this script's own memory to the worker.
            mem[side] = {k.lower(): v for k, v in r["memory"].items()}
        mem["ratio_rss"] = mem["ours"]["vmhwm"] / mem["theirs"]["vmhwm"]
        mem["ratio_anon"] = mem["ours"]["rssanon"] / mem["theirs"]["rssanon"]
        mem["unit"] = "bytes"
        cases["memory"] = mem
    if tmp:
        tmp.cleanup()
    return results


def fmt_table(results: dict) -> list[tuple[str, str, str, str, str]]:
    """Rows: case, gpt2cli, transformers, ratio, note."""
    c, p = results["cases"], results["params"]
    rows = []
    if "decode" in c:
        d = c["decode"]
        rows.append((f"decode, batch 1, greedy, {p['new_tokens']} tokens (tokens/s)", f"{d['ours']:.1f}", f"{d['theirs']:.1f}", f"{d['ratio']:.2f}x", "higher is better"))
    if "prefill" in c:
        d = c["prefill"]
        rows.append((f"prefill, {p['prefill_prompt']}-token prompt (tokens/s)", f"{d['ours']:.0f}", f"{d['theirs']:.0f}", f"{d['ratio']:.2f}x", "higher is better"))
    if "beam" in c:
        d = c["beam"]
        rows.append((f"beam search, {p['beams']} beams, {p['beam_steps']} steps (steps/s)", f"{d['ours']:.1f}", f"{d['theirs']:.1f}", f"{d['ratio']:.2f}x", "higher is better"))
    if "cold" in c:
        d = c["cold"]
        rows.append(("cold start to first token (s)", f"{d['ours']:.2f}", f"{d['theirs']:.2f}", f"{d['ratio']:.2f}x", f"{1 / d['ratio']:.1f}x faster; whole command"))
    if "memory" in c:
        d = c["memory"]
        gib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
        rows.append(("peak RSS, decode (total)", gib(d["ours"]["vmhwm"]), gib(d["theirs"]["vmhwm"]), f"{d['ratio_rss']:.2f}x", "lower is better"))
        rows.append(("peak RSS, decode (anonymous)", gib(d["ours"]["rssanon"]), gib(d["theirs"]["rssanon"]), f"{d['ratio_anon']:.2f}x", "ours: weights file-backed mmap, the LM head's copy of wte anonymous"))
    if "floor" in c:
        d = c["floor"]
        extra = f"ours: decode = {d['decode_over_floor']:.2f}x this floor" if "decode_over_floor" in d else ""
        rows.append(("matvec floor, 1 token (ms)", f"{d['ours']:.1f}", f"{d['theirs']:.1f}", f"{d['ours'] / d['theirs']:.2f}x", extra))
        g = d["prefill_gemm_ms"]
        rows.append((f"GEMMs alone, {g['prompt']}-token prompt (ms)", f"{g['ours']:.0f}", f"{g['theirs']:.0f}", f"{g['ours'] / g['theirs']:.2f}x", "numpy's OpenBLAS vs torch's BLAS"))
        if "beam_products_ms" in d:
            g = d["beam_products_ms"]
            rows.append((f"products alone, {g['beams']}-row step (ms)", f"{g['ours']:.1f}", f"{g['theirs']:.1f}", f"{g['ours'] / g['theirs']:.2f}x", "ours: the engine's 4-row routes (a GEMM padded to 8 rows)"))
    return rows


# The speed targets (ours / transformers, higher is better) for the cases that have a floor.
TARGETS = {"decode": 1.4, "prefill": 1.2, "beam": 1.3, "memory": 0.5}


def target_rows(results: dict) -> list[tuple[str, ...]]:
    """Per target: the time it allows ours (from transformers' figure in this run) against the time
    our products alone take, the part no Python-level change can shrink."""
    c, p = results["cases"], results["params"]
    f = c.get("floor", {})
    rows = []
    if "decode" in c and "ours" in f:
        rows.append(("decode", TARGETS["decode"], 1e3 / (c["decode"]["theirs"] * TARGETS["decode"]), 1e3 / c["decode"]["ours"], f["ours"], "ms per token", "the matrix-vector products of one token"))
    if "prefill" in c and "prefill_products_ms" in f:
        rows.append(("prefill", TARGETS["prefill"], 1e3 * p["prefill_prompt"] / (c["prefill"]["theirs"] * TARGETS["prefill"]), 1e3 * p["prefill_prompt"] / c["prefill"]["ours"], f["prefill_products_ms"]["ours"], "ms to the first token", "the products the prompt needs (GEMMs, attention's, LM head)"))
    if "beam" in c and "beam_products_ms" in f:
        rows.append(("beam", TARGETS["beam"], 1e3 / (c["beam"]["theirs"] * TARGETS["beam"]), 1e3 / c["beam"]["ours"], f["beam_products_ms"]["ours"], "ms per step", "one step's 4-row products"))
    if "memory" in c and results.get("weights_bytes"):
        mib = 2.0**20
        rows.append(("peak RSS", TARGETS["memory"], c["memory"]["theirs"]["vmhwm"] * TARGETS["memory"] / mib, c["memory"]["ours"]["vmhwm"] / mib, results["weights_bytes"] / mib, "MiB", "the float32 weights, all read every token"))
    return [
        (case, f"{target}x", f"{allowed:.1f}", f"{now:.1f}", f"{floor:.1f}", "yes" if now <= allowed else ("no: floor above it" if floor > allowed else "not yet"), f"{unit}; floor = {what}")
        for case, target, allowed, now, floor, unit, what in rows
    ]


TARGET_HEAD = ("target", "ratio", "time it allows", "ours now", "our floor", "met", "")


def markdown(results: dict) -> str:
    m = results["machine"]
    head = (
        f"GPT-2 {results['size']} shape (random weights), {m.get('cpu')}, {m['threads']} threads, "
        f"numpy {m['numpy']} ({m.get('blas', '?')}), torch {m.get('torch')}, transformers {m.get('transformers')}; "
        f"medians of {results['reps']} alternating runs, ratio = gpt2cli / transformers per run.\n\n"
    )
    lines = ["| case | gpt2cli | transformers | ratio | |", "|---|---:|---:|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in fmt_table(results)]
    targets = target_rows(results)
    if targets:
        lines += ["", "| " + " | ".join(TARGET_HEAD) + " |", "|---|---:|---:|---:|---:|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in targets]
    return head + "\n".join(lines) + "\n"


def print_table(results: dict) -> None:
    print_rows([("case", "gpt2cli", "transformers", "ratio", "")] + fmt_table(results), left=(0, 4))
    targets = target_rows(results)
    if targets:
        print()
        print_rows([TARGET_HEAD] + targets, left=(0, 5, 6))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/<size>-latest.json)")
    p.add_argument("--cases", help="comma-separated subset of decode,prefill,beam,cold,memory,floor (with --peer llamacpp: decode,prefill,batched,bandwidth)")
    p.add_argument("--smoke", action="store_true", help="a tiny model, one repetition: checks the script runs")
    p.add_argument("--profile", action="store_true", help="break one decode token down by operation")
    p.add_argument("--peer", choices=("transformers", "llamacpp"), default="transformers",
                   help="whom to compare with: transformers + PyTorch, or llama.cpp (built once; see peer_llamacpp.py)")  # fmt: skip
    p.add_argument("--worker", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.model, args.threads, (Ours, Theirs), args.memory)
        return 0
    if args.profile:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
        sys.path.insert(0, str(HERE))
        from profile_decode import main as profile_main

        return profile_main(model_folder(args.size), reps=max(args.reps, 50))
    if args.peer == "llamacpp":
        if args.smoke:
            p.error("--smoke runs against transformers only; --peer llamacpp needs a build of llama.cpp")
        sys.path.insert(0, str(HERE))
        import peer_llamacpp

        return peer_llamacpp.main(args)
    results = run(args)
    out = args.out or RESULTS / f"{results['size']}-latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print_table(results)
    print(f"\nwrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

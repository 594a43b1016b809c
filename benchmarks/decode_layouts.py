"""One GPT-2 decode token's matrix-vector products under different weight layouts and thread routes (issue 16).

    python benchmarks/decode_layouts.py [--size small] [--rounds 15] [--threads 2]

Every route multiplies the same weights a decode token reads (each block's c_attn, attn.c_proj,
c_fc, mlp.c_proj, then the LM head wte @ h), one vector through them:

- conv1d/blas2       x @ W with W the checkpoint's Conv1D [in, out] (memory-mapped): what the engine does
- transposed/blas2   W.T @ x with contiguous [out, in] copies made at load (dot-form gemv)
- conv1d/split2      each product's output columns split over 2 Python threads, OpenBLAS held to one
                     thread per caller (gpt2cli.engine.threads.split(calls_blas=True))
- transposed/split2  the same over the copies' rows
- conv1d/blas1       OpenBLAS on one thread, for reference
- engine token       a whole decode token of the engine (gpt2cli.decoding.generate), for the overhead
                     between products

The routes are timed in rounds, their order rotating every round; each round takes the median of a
few tokens per route; figures are medians over rounds, and each route's ratio to conv1d/blas2 is the
median of the per-round ratios. Nothing in gpt2cli changes: this is a measurement script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_routes(model, threads_n: int) -> tuple[dict, dict]:
    """name -> token() for each route, and the costs of building them (seconds, bytes)."""
    import numpy as np

    from gpt2cli.engine import threads

    w = model.weights
    d = model.config.n_embd
    mats = [m for b in w.blocks for m in (b.c_attn_weight, b.attn_c_proj_weight, b.c_fc_weight, b.mlp_c_proj_weight)]
    x = {d: np.full(d, 0.01, np.float32), 4 * d: np.full(4 * d, 0.01, np.float32)}
    outs = [np.empty(m.shape[1], np.float32) for m in mats]
    logits = np.empty(w.wte.shape[0], np.float32)  # [V]
    t0 = time.perf_counter()
    trans = [np.ascontiguousarray(m.T) for m in mats]  # [out, in]
    costs = {"transpose_seconds": time.perf_counter() - t0, "transpose_bytes": sum(t.nbytes for t in trans)}

    def conv1d() -> None:
        for m, out in zip(mats, outs):
            np.dot(x[m.shape[0]], m, out=out)
        np.dot(w.wte, x[d], out=logits)

    def transposed() -> None:
        for t, out in zip(trans, outs):
            np.dot(t, x[t.shape[1]], out=out)
        np.dot(w.wte, x[d], out=logits)

    def head_split() -> None:
        threads.split(lambda r0, r1: np.dot(w.wte[r0:r1], x[d], out=logits[r0:r1]), w.wte.shape[0], calls_blas=True)

    def conv1d_split() -> None:
        with threads.one_blas_thread():  # one pin for the token, not one per product
            for m, out in zip(mats, outs):
                v = x[m.shape[0]]
                threads.split(lambda c0, c1, m=m, v=v, out=out: np.dot(v, m[:, c0:c1], out=out[c0:c1]), m.shape[1], calls_blas=True)
            head_split()

    def transposed_split() -> None:
        with threads.one_blas_thread():
            for t, out in zip(trans, outs):
                v = x[t.shape[1]]
                threads.split(lambda r0, r1, t=t, v=v, out=out: np.dot(t[r0:r1], v, out=out[r0:r1]), t.shape[0], calls_blas=True)
            head_split()

    def conv1d_one() -> None:
        with threads.one_blas_thread():
            conv1d()

    routes = {"conv1d/blas2": conv1d, "transposed/blas2": transposed, "conv1d/split2": conv1d_split,
              "transposed/split2": transposed_split, "conv1d/blas1": conv1d_one}  # fmt: skip
    if not threads.can_pin_blas():
        print("numpy's BLAS cannot be pinned to one thread: the split and blas1 routes are left out", file=sys.stderr)
        routes = {k: v for k, v in routes.items() if not k.endswith(("split2", "blas1"))}
    threads.set_workers(threads_n)
    return routes, costs


def engine_token(model):
    """token(): seconds per decode token of the engine, over 16 tokens after the first."""
    from gpt2cli.decoding.generate import generate
    from gpt2cli.decoding.sampling import Sampler, SamplingOptions

    prompt = list(range(100, 116))

    def run() -> float:
        sampler = Sampler(SamplingOptions(temperature=0.0), seed=0)
        stamps = [time.perf_counter() for _ in generate(model, prompt, sampler, 17, ignore_eos=True, eos_token_id=model.config.eos_token_id)]
        return (stamps[-1] - stamps[0]) / 16

    return run


def measure(routes: dict, engine, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Per route, one figure per round: the median of per_round tokens' seconds."""
    names = list(routes) + ["engine token"]
    samples: dict[str, list[float]] = {n: [] for n in names}
    for fn in routes.values():  # warm: page cache, BLAS buffers, the pool's threads
        fn()
    engine()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            time.sleep(0.2)  # let the other route's BLAS threads stop spinning
            if name == "engine token":
                samples[name].append(statistics.median(engine() for _ in range(max(1, per_round // 2))))
                continue
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                routes[name]()
                times.append(time.perf_counter() - t0)
            samples[name].append(statistics.median(times))
        print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # before numpy loads OpenBLAS
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from harness import model_folder
    from gpt2cli.session import load_model

    model = load_model(model_folder(args.size))
    routes, costs = make_routes(model, args.threads)
    cfg = model.config
    d = cfg.n_embd
    n_bytes = 4 * (cfg.n_layer * 12 * d * d + cfg.vocab_size * d)
    samples = measure(routes, engine_token(model), args.rounds, args.per_round)
    base = samples["conv1d/blas2"]
    print(f"GPT-2 {args.size} shape, {args.threads} threads, {n_bytes / 1e6:.0f} MB of weights per token; "
          f"medians of {args.rounds} rounds (ratio = route / conv1d/blas2 time, per round)")  # fmt: skip
    print(f"{'route':<20} {'ms/token':>9} {'GB/s':>6} {'time ratio':>10}  [range]")
    for name, s in samples.items():
        ratios = [a / b for a, b in zip(s, base)]
        ms = statistics.median(s) * 1e3
        print(f"{name:<20} {ms:9.2f} {n_bytes / ms * 1e-6:6.1f} {statistics.median(ratios):9.2f}x  [{min(ratios):.2f}-{max(ratios):.2f}]")
    print(f"transposed copies: {costs['transpose_bytes'] / 1e6:.0f} MB, made in {costs['transpose_seconds']:.2f} s (weights already in the page cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

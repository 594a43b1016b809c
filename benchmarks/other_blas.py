"""Another BLAS on numpy arrays against numpy's own OpenBLAS, on one GPT-2-small token's products (issue 16).

    python -m venv /tmp/venv-blis && /tmp/venv-blis/bin/pip install numpy blis
    /tmp/venv-blis/bin/python benchmarks/other_blas.py [--reps 7]

BLIS through cython-blis (`blis.py.gemm`, the package spaCy and thinc use; a well-kept BLAS callable
on numpy arrays) runs the same products as the engine: per layer x @ W for c_attn [768, 2304],
attn c_proj [768, 768], c_fc [768, 3072] and mlp c_proj [3072, 768] (12 layers, 340 MB of float32
weights, the LM head left out), with x of 1, 4, 16, 32 and 64 rows. numpy: one np.dot per product,
OpenBLAS on its own 2 threads. blis1: blis.py.gemm on the caller's thread. blis2: each product's
columns in two halves, one on a second Python thread (blis.py.gemm releases the GIL). Medians of
--reps, in the same process, alternating. A run-time dependency would need >= 15 % on decode (rows 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))
ROWS = (1, 4, 16, 32, 64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    try:
        import blis.py as bp
    except ImportError:
        print("other_blas: skipped: cython-blis is not installed (pip install blis, in a separate venv)", file=sys.stderr)
        return 0
    rng = np.random.default_rng(0)
    mats = [rng.random(shape, dtype=np.float32) for _ in range(12) for shape in SHAPES]
    halves = [(np.ascontiguousarray(w[:, : w.shape[1] // 2]), np.ascontiguousarray(w[:, w.shape[1] // 2 :])) for w in mats]
    pool = ThreadPoolExecutor(1)

    def numpy_side(xs):
        for w in mats:
            np.dot(xs[w.shape[0]], w)

    def blis1(xs):
        for w in mats:
            bp.gemm(xs[w.shape[0]], w)

    def blis2(xs):
        for w, (a, b) in zip(mats, halves):
            x = xs[w.shape[0]]
            other = pool.submit(bp.gemm, x, b)
            bp.gemm(x, a)
            other.result()

    print(f"{sum(w.nbytes for w in mats) / 1e6:.0f} MB of weights per token; medians of {args.reps}, ms")
    for n in ROWS:
        xs = {768: rng.random((n, 768), dtype=np.float32), 3072: rng.random((n, 3072), dtype=np.float32)}
        times: dict[str, list[float]] = {}
        for _ in range(args.reps):
            for name, fn in (("numpy", numpy_side), ("blis1", blis1), ("blis2", blis2)):
                fn(xs)
                t0 = time.perf_counter()
                fn(xs)
                times.setdefault(name, []).append(time.perf_counter() - t0)
        med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
        print(f"rows {n:2d}: numpy {med['numpy']:.1f}  blis1 {med['blis1']:.1f}  blis2 {med['blis2']:.1f}  numpy/blis2 {med['numpy'] / med['blis2']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

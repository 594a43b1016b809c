"""gpt2cli batch as whole commands, same run, as ratios: the local batch against a shell loop of
`gpt2cli generate` over the same prompts, and `batch --ray` (a local Ray, N actors) against the local batch.

    python benchmarks/bench_batch.py [--size small] [--records 400] [--tokens 8] [--loop 20] [--actors 2] [--reps 2]

Greedy records of 8-24 prompt tokens. The loop runs only --loop of the prompts (one process each) and
its time per record is compared with the batch's. Each figure is the median of --reps alternating runs.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import SIZES, model_folder  # noqa: E402


def gpt2cli() -> list[str]:
    script = Path(sys.executable).with_name("gpt2cli")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gpt2cli"]


def timed(cmd: list[str], **kw) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, **kw)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=[*SIZES, "tiny"], default="small")
    p.add_argument("--records", type=int, default=400)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--loop", type=int, default=20)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--no-ray", action="store_true")
    args = p.parse_args(argv)
    folder = model_folder(args.size)
    import numpy as np

    rng = np.random.default_rng(7)
    words = "the of and to in a is that for it as was with be by on not he this are or his from".split()
    prompts = [" ".join(rng.choice(words, size=int(rng.integers(8, 25)))) for _ in range(args.records)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "records.jsonl"
        source.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in prompts), encoding="utf-8")
        base = [*gpt2cli(), "batch", str(source), "-m", str(folder), "-t", "0", "-n", str(args.tokens)]
        loop_script = "\n".join(
            f"{' '.join(gpt2cli())} generate -m {folder} -t 0 -n {args.tokens} {json.dumps(q)} > /dev/null"
            for q in prompts[: args.loop]
        )  # fmt: skip
        local, ray, loop = [], [], []
        for rep in range(args.reps):
            loop.append(timed(["bash", "-c", loop_script], env=env) / args.loop)
            local.append(timed(base, env=env) / args.records)
            if not args.no_ray:
                ray.append(timed([*base, "--ray", "--ray-actors", str(args.actors)], env=env) / args.records)
    med = statistics.median
    print(f"batch, GPT-2 {args.size} shape, {args.records} greedy records of {args.tokens} new tokens, medians of {args.reps} runs")
    print(f"  loop of gpt2cli generate ({args.loop} records)  {1 / med(loop):7.2f} records/s")
    print(f"  gpt2cli batch (local)                         {1 / med(local):7.2f} records/s   {med(loop) / med(local):.2f}x the loop")
    if ray:
        print(f"  gpt2cli batch --ray ({args.actors} actors)              {1 / med(ray):7.2f} records/s   {med(local) / med(ray):.2f}x local")
    return 0


if __name__ == "__main__":
    sys.exit(main())

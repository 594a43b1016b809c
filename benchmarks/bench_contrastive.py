"""Contrastive search, gpt2cli against transformers 4.55.4 (the last release that has it in its core),
on the same random GPT-2-shaped checkpoint, side by side, as a ratio.

    python benchmarks/bench_contrastive.py [--size small] [--reps 5] [--tokens 64] [--k 4] [--alpha 0.6]

transformers 4.55.4 cannot live beside transformers 5.x: give its environment's python in
GPT2CLI_REFERENCE_455 (.ci/run makes one: `pip install torch==2.13.0 transformers==4.55.4`).
Each side runs in its own long-lived worker process with the same thread count; requests alternate,
the side that goes first switching every repetition; the ratio is taken per repetition, then its
median. Both sides decode the same prompt, and the tokens are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import SETTLE_SECONDS, SIZES, model_folder, prompt_ids, worker_env  # noqa: E402


def serve(side: str, folder: Path, threads: int) -> None:
    """A worker: loads the model, then answers {"prompt", "tokens", "k", "alpha"} requests with the
    generated tokens and the seconds they took."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    if side == "ours":
        from gpt2cli.decoding.contrastive import contrastive_search
        from gpt2cli.session import load_model

        model = load_model(folder)

        def decode(prompt, tokens, k, alpha):
            steps = contrastive_search(
                model, prompt, penalty_alpha=alpha, top_k=k, max_new_tokens=tokens, eos_token_id=model.config.eos_token_id
            )
            return [int(s.tokens[0]) for s in steps]
    else:
        import torch
        import transformers

        torch.set_num_threads(threads)
        transformers.logging.set_verbosity_error()
        model = transformers.GPT2LMHeadModel.from_pretrained(str(folder), torch_dtype=torch.float32).eval()

        def decode(prompt, tokens, k, alpha):
            with torch.no_grad():
                out = model.generate(
                    torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                    penalty_alpha=alpha, top_k=k, max_new_tokens=tokens, do_sample=False,
                    pad_token_id=model.config.eos_token_id,
                )  # fmt: skip
            return out[0, len(prompt) :].tolist()

    reply.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("exit"):
            break
        t0 = time.perf_counter()
        tokens = decode(req["prompt"], req["tokens"], req["k"], req["alpha"])
        reply.write(json.dumps({"seconds": time.perf_counter() - t0, "tokens": tokens}) + "\n")


def start(side: str, python: str, folder: Path, threads: int) -> subprocess.Popen:
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--model", str(folder), "--threads", str(threads)]
    env = worker_env(threads)
    if side == "theirs":  # its own environment: nothing of ours on its path
        env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert json.loads(proc.stdout.readline())["ready"]
    return proc


def ask(proc: subprocess.Popen, **req) -> dict:
    proc.stdin.write(json.dumps(req) + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=[*SIZES, "tiny"], default="small", help="tiny: a smoke test of the script")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        serve(args.worker, args.model, args.threads)
        return 0
    theirs_python = os.environ.get("GPT2CLI_REFERENCE_455", "")
    if not Path(theirs_python).is_file():
        print("skipped: set GPT2CLI_REFERENCE_455 to the python of a venv with torch==2.13.0 and transformers==4.55.4", file=sys.stderr)
        return 0
    folder = model_folder(args.size)
    prompt = prompt_ids(16, 50257 if args.size != "tiny" else 256)
    workers = {"ours": start("ours", sys.executable, folder, args.threads), "theirs": start("theirs", theirs_python, folder, args.threads)}
    request = dict(prompt=prompt, tokens=args.tokens, k=args.k, alpha=args.alpha)
    for proc in workers.values():
        ask(proc, **request)  # warm-up
    rates: dict[str, list[float]] = {"ours": [], "theirs": []}
    tokens: dict[str, list[int]] = {}
    for rep in range(args.reps):
        for side in ("ours", "theirs") if rep % 2 == 0 else ("theirs", "ours"):
            time.sleep(SETTLE_SECONDS)
            answer = ask(workers[side], **request)
            rates[side].append(len(answer["tokens"]) / answer["seconds"])
            tokens[side] = answer["tokens"]
    for proc in workers.values():
        proc.stdin.write(json.dumps({"exit": True}) + "\n")
        proc.stdin.close()
        proc.wait()
    ratio = statistics.median(o / t for o, t in zip(rates["ours"], rates["theirs"]))
    same = tokens["ours"] == tokens["theirs"][: len(tokens["ours"])]
    print(f"contrastive search, GPT-2 {args.size} shape, alpha {args.alpha}, k {args.k}, {args.tokens} tokens, "
          f"{args.threads} threads, medians of {args.reps} alternating runs")  # fmt: skip
    print(f"  gpt2cli              {statistics.median(rates['ours']):7.1f} tokens/s")
    print(f"  transformers 4.55.4  {statistics.median(rates['theirs']):7.1f} tokens/s")
    print(f"  ratio                {ratio:7.2f}x   tokens identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

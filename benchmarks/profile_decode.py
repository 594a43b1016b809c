"""Where one forward step's milliseconds go, per operation type: python benchmarks/bench.py --profile.

Times the engine's own functions (gpt2cli.engine.model's layer_norm, matmul, gelu_new, attention and LM
head) by wrapping them, on one decode token (batch 1 and batch 4, as beam search runs it) and on a
512-token prefill; "other" is the rest of the step: Python, embedding lookup, residual adds.
Every wrapped result is also checked to be float32 (nothing may upcast to float64).
"""

from __future__ import annotations

import collections
import statistics
import time
from pathlib import Path

import numpy as np

import gpt2cli.engine.model as engine
from gpt2cli.session import load_model


def instrument(model) -> dict[str, float]:
    """Wraps the engine's operations with timers; returns the dict they add their seconds to."""
    spent: dict[str, float] = collections.defaultdict(float)
    d = model.config.n_embd
    matmul_names = {(d, 3 * d): "matmul c_attn (qkv)", (d, d): "matmul attn.c_proj", (d, 4 * d): "matmul mlp.c_fc", (4 * d, d): "matmul mlp.c_proj"}

    inside = [0]  # timed operations running now: one inside another (the last layer's _store_kv runs a
    # layer norm and a product) counts in the outer one only, or "other" would come out negative

    def timed(fn, name):
        def wrapper(*args, **kwargs):
            key = matmul_names.get(args[1].shape) if name is callable else name
            if key is None:  # the LM head's product, timed as a whole by logits()
                return fn(*args, **kwargs)
            inside[0] += 1
            t0 = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            finally:
                inside[0] -= 1
            if inside[0] == 0:
                spent[key] += time.perf_counter() - t0
            assert out is None or out.dtype == np.float32, f"{key} returned {out.dtype}"
            return out

        return wrapper

    # the names the forward pass calls, as engine.model imported them from engine.kernels
    engine.matmul = timed(engine.matmul, callable)
    engine.linear = timed(engine.linear, callable)
    # mlp.c_proj in the engine's own [n_embd, 4*n_embd] layout (a pass that is not split): its shape is c_fc's
    engine.linear_t = timed(engine.linear_t, "matmul mlp.c_proj")
    # a long prompt's layers run split over threads: attention by heads (timed above), everything else
    # (products, layer norms, GELU, residual adds, the next layer's c_attn) in row parts, timed as one
    engine.GPT2Model._row_parts = timed(engine.GPT2Model._row_parts, "split pass: row parts (products, norms, GELU, adds)")
    engine.GPT2Model._store_kv = timed(engine.GPT2Model._store_kv, "last layer: other positions' keys/values only")
    engine.layer_norm = timed(engine.layer_norm, "layer norm")
    engine.gelu_new = timed(engine.gelu_new, "gelu (with c_fc's bias)")
    engine.GPT2Model._attention = timed(engine.GPT2Model._attention, "attention (qkv bias, kv write, softmax)")
    engine.GPT2Model.logits = timed(engine.GPT2Model.logits, "lm head")
    return spent


def breakdown(model, spent, step, reps: int) -> tuple[float, dict[str, float]]:
    """Median total seconds of step() and the median seconds per operation."""
    totals, per_op = [], collections.defaultdict(list)
    step()  # warm-up
    for _ in range(reps):
        spent.clear()
        t0 = time.perf_counter()
        timed_itself = step()  # a step that waits first returns the seconds of its own work
        total = time.perf_counter() - t0 if timed_itself is None else timed_itself
        totals.append(total)
        for key, value in spent.items():
            per_op[key].append(value)
        per_op["other (python, embedding, bias and residual adds)"].append(total - sum(spent.values()))
    return statistics.median(totals), {k: statistics.median(v) for k, v in per_op.items()}


def matvec_floor(model, reps: int) -> dict[str, float]:
    """Median seconds of the bare single-row products per weight type (np.dot into preallocated outputs),
    each weight in the layout a decoding token reads it in."""
    d = model.config.n_embd
    x = {d: np.full(d, 0.01, np.float32), 4 * d: np.full(4 * d, 0.01, np.float32)}
    names = {"c_attn_weight": "matmul c_attn (qkv)", "attn_c_proj_weight": "matmul attn.c_proj", "c_fc_weight": "matmul mlp.c_fc"}
    # (name, input, weight, laid out [n_out, n_in]): mlp.c_proj and the LM head in the engine's own copies,
    # made by the forward passes before this
    plan = [(names[f], x[d], getattr(b, f), False) for b in model._blocks for f in names]
    plan += [("matmul mlp.c_proj", x[4 * d], model._mlp_proj_layout(i), True) for i in range(len(model._blocks))]
    plan.append(("lm head", x[d], model._lm_head, False))  # [n_embd, vocab]
    outs = [np.empty(m.shape[0] if rows_out else m.shape[1], np.float32) for _, _, m, rows_out in plan]
    times = collections.defaultdict(list)
    for _ in range(reps):
        per = collections.defaultdict(float)
        for (name, v, m, rows_out), out in zip(plan, outs):
            t0 = time.perf_counter()
            if rows_out:
                np.dot(m, v, out=out)
            else:
                np.dot(v, m, out=out)
            per[name] += time.perf_counter() - t0
        for name, value in per.items():
            times[name].append(value)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, total: float, ops: dict[str, float], floor: dict[str, float] | None = None) -> None:
    print(f"\n{title}: {total * 1e3:.2f} ms (median)" + (f"; matvec floor {sum(floor.values()) * 1e3:.2f} ms" if floor else ""))
    for key, value in sorted(ops.items(), key=lambda kv: -kv[1]):
        bare = f"   (bare np.dot: {floor[key] * 1e3:.3f} ms)" if floor and key in floor else ""
        print(f"  {key:52s} {value * 1e3:8.3f} ms  {100 * value / total:5.1f} %{bare}")


def main(folder: Path, reps: int = 50) -> int:
    model = load_model(folder)
    spent = instrument(model)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    context = 80  # tokens already in the cache when the profiled token runs

    for rows in (1, 4):
        cache = model.new_cache(rows)
        model.forward(rng.integers(0, vocab, (rows, context)), cache)
        token = rng.integers(0, vocab, (rows, 1))

        def step():
            cache.length = context
            model.forward(token, cache)

        total, ops = breakdown(model, spent, step, reps)
        floor = matvec_floor(model, reps) if rows == 1 else None
        report(f"one decode token, batch {rows}, {context} tokens of context", total, ops, floor)

    prompt = rng.integers(0, vocab, (1, 512))

    def prefill():
        time.sleep(0.3)  # OpenBLAS's threads stop spinning after the last product (see harness.SETTLE_SECONDS)
        t0 = time.perf_counter()
        model.forward(prompt, model.new_cache(1))
        return time.perf_counter() - t0

    total, ops = breakdown(model, spent, prefill, max(3, reps // 10))
    report("prefill of 512 tokens (products split over threads include their bias, GELU and residual add)", total, ops)
    return 0

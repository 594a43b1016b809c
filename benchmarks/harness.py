"""What every benchmark here shares, and nothing that measures: the random checkpoints it runs on,
the worker processes that serve each side, the settle time between requests, the machine's
description and the plain-text table.

The benchmark scripts (bench.py, bench_batch.py, bench_contrastive.py, peer_llamacpp.py, llamacpp.py,
decode_layouts.py) import this module; it imports none of them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
SHARED_TOKENIZER = Path(os.environ.get("GPT2CLI_TOKENIZER_DIR") or ROOT.parent / "shared" / "gpt2-tokenizer")

# n_layer, n_head, n_embd of the Hub's GPT-2 sizes
SIZES = {"small": (12, 12, 768), "medium": (24, 16, 1024), "large": (36, 20, 1280), "xl": (48, 25, 1600)}
TINY = (2, 4, 64)  # --smoke

# Idle time before each timed request. Both BLAS runtimes keep their threads spinning for a while
# after a product (OpenBLAS ~0.1 s, OpenMP up to 0.2 s) in case more work comes; a request that
# starts right after the other side's would share the cores with those spinners.
SETTLE_SECONDS = 0.3


# ---------------------------------------------------------------------------------------------
# The random checkpoint
# ---------------------------------------------------------------------------------------------
def tensor_shapes(n_layer: int, n_embd: int, vocab: int, n_positions: int) -> dict[str, tuple[int, ...]]:
    """The Hub's bare tensor names and shapes of a GPT-2 (Conv1D weights [in, out])."""
    d = n_embd
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (vocab, d), "wpe.weight": (n_positions, d)}
    for i in range(n_layer):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,),
            p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,),
        })  # fmt: skip
    shapes["ln_f.weight"] = (d,)
    shapes["ln_f.bias"] = (d,)
    return shapes


def write_random_model(folder: Path, n_layer: int, n_head: int, n_embd: int, *, vocab: int = 50257, n_positions: int = 1024) -> Path:
    """A random float32 GPT-2 in the Hub's layout, streamed tensor by tensor (gpt2-xl's 6 GB never sits in memory).

    tests/support/models.write_model builds every tensor in float64 and the whole file in memory, which
    for gpt2-xl costs minutes and ~20 GB; this writes the same layout (config keys, bare names, the real
    tokenizer) with float32 draws. A tokenizer.json is added for transformers (as the Hub has), so its
    tokenizer loads the fast way.
    """
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(n_layer, n_embd, vocab, n_positions)
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    part = folder / "model.safetensors.partial"
    with open(part, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name, shape in shapes.items():
            a = rng.standard_normal(shape, dtype=np.float32)  # [shape]
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                a *= np.float32(0.1)
                a += np.float32(1.0)
            else:  # GPT-2's init scale keeps activations, and so the softmaxes, realistic
                a *= np.float32(0.02 if name.endswith(".weight") else 0.05)
            f.write(a.data)
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "vocab_size": vocab, "n_positions": n_positions, "n_ctx": n_positions, "n_embd": n_embd,
        "n_layer": n_layer, "n_head": n_head, "layer_norm_epsilon": 1e-5,
        "bos_token_id": vocab - 1, "eos_token_id": vocab - 1,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(SHARED_TOKENIZER / name, folder / name)
    try:
        from transformers import GPT2TokenizerFast

        GPT2TokenizerFast.from_pretrained(str(folder)).save_pretrained(str(folder))
    except ImportError:
        pass
    part.rename(folder / "model.safetensors")
    return folder


def model_folder(size: str, where: Path | None = None) -> Path:
    """The cached random model of this size, written on first use."""
    n_layer, n_head, n_embd = TINY if size == "tiny" else SIZES[size]
    folder = (where or CACHE) / f"gpt2-{size}-random"
    if not (folder / "model.safetensors").is_file():
        print(f"writing a random {size} model to {folder} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        write_random_model(folder, n_layer, n_head, n_embd)
        print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return folder


# ---------------------------------------------------------------------------------------------
# The prompt
# ---------------------------------------------------------------------------------------------
PROMPT_SEED = 1234


def prompt_ids(n: int, vocab: int) -> list[int]:
    """A fixed pseudo-random prompt (no <|endoftext|>)."""
    import numpy as np

    return np.random.default_rng(PROMPT_SEED).integers(0, vocab - 1, size=n).tolist()


# ---------------------------------------------------------------------------------------------
# Workers: one process per side, answering one JSON request per line
# ---------------------------------------------------------------------------------------------
def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update({
        "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    })  # fmt: skip
    return env


class MemorySampler:
    """Peak RssAnon / RssFile of this process, sampled from /proc every few milliseconds (VmHWM is exact)."""

    def __init__(self, interval: float = 0.005):
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def status() -> dict[str, int]:
        out = {}
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                        out[key] = int(value.split()[0]) * 1024
        except OSError:
            pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            s = self.status()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], s.get(key, 0))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        s = self.status()
        for key in self.peak:
            self.peak[key] = max(self.peak[key], s.get(key, 0))
        self.peak["VmHWM"] = s.get("VmHWM", 0)


def worker_main(side: str, folder: Path, threads: int, sides: tuple, memory: bool = False) -> None:
    """Serves requests from stdin; replies on the original stdout (library chatter goes to stderr).
    sides: the (ours, theirs) classes of the benchmark whose worker this is."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sampler = MemorySampler().__enter__() if memory else None
    t0 = time.perf_counter()
    ours, theirs = sides
    impl = (ours if side == "ours" else theirs)(folder, threads)
    reply.write(json.dumps({"ready": True, "load_seconds": time.perf_counter() - t0}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        case = req.pop("case")
        if case == "exit":
            break
        result = getattr(impl, case)(**req)
        if sampler is not None:
            sampler.__exit__()
            result["memory"] = sampler.peak
        reply.write(json.dumps(result) + "\n")


class Worker:
    """One side's long-lived process: `SCRIPT --worker SIDE`, one JSON request and answer per line
    (script: the benchmark whose worker it is; its --worker runs worker_main with its own sides)."""

    def __init__(self, side: str, folder: Path, threads: int, memory: bool = False, *, script: Path):
        cmd = [sys.executable, str(script), "--worker", side, "--model", str(folder), "--threads", str(threads)]
        if memory:
            cmd.append("--memory")
        self.side = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=worker_env(threads))
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker died (exit code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def ask(self, case: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"case": case, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"case": "exit"}) + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def machine_info(threads: int) -> dict:
    info = {"threads": threads, "cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    try:
        info["l3_cache"] = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    import numpy as np

    info["numpy"] = np.__version__
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # show_config's layout is not a stable API
        pass
    from importlib.metadata import PackageNotFoundError, version

    for name in ("torch", "transformers"):
        try:
            info[name] = version(name)  # without importing them into this process
        except PackageNotFoundError:
            info[name] = None
    return info


def print_rows(rows: list[tuple[str, ...]], left: tuple[int, ...]) -> None:
    """A plain-text table: the first row is the head, underlined; columns in left are left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j in left else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))

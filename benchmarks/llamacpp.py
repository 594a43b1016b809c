"""llama.cpp as a benchmark peer: its source, its two benchmark tools, an f32 GGUF of our checkpoint,
and those tools' output parsed.

    python benchmarks/llamacpp.py [--size small]   # build the tools and convert the model (cached); print their paths

The source is the llama-cpp-python source distribution from the package registry (pip download), which
vendors llama.cpp (vendor/llama.cpp, with tools/ and convert_hf_to_gguf.py). Only llama-bench and
llama-batched-bench are built: CMake Release, GGML_NATIVE=ON (this CPU's instruction set), CPU backend
only, no CURL/OpenSSL, static, -j2. The checkpoint is converted with the vendored converter to an f32
GGUF (the weights bit for bit, as our engine reads them). Everything is cached under
benchmarks/.cache/llamacpp/ (git-ignored); a later run rebuilds or reconverts only what is missing.
Failures raise Unavailable with a one-line reason (bench.py --peer llamacpp then skips the peer).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = "0.3.36"  # llama-cpp-python; the llama.cpp it vendors is what we build
HOME = HERE / ".cache" / "llamacpp"
SDIST_DIR = HOME / "src"
SOURCE = HOME / "llama.cpp"  # the vendored tree, extracted
BUILD = HOME / "build"
GGUF_DIR = HOME / "gguf"
TOOLS = ("llama-bench", "llama-batched-bench")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",  # LLAMA_CURL is deprecated (ignored) in this version; OpenSSL is its HTTPS
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
    "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF", "-DGGML_HIP=OFF", "-DGGML_SYCL=OFF",
    "-DGGML_OPENCL=OFF", "-DGGML_BLAS=OFF",
)  # fmt: skip


class Unavailable(Exception):
    """llama.cpp cannot be built or run here; the message says why in one line."""


def log(msg: str) -> None:
    print(f"llama.cpp: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Source, build, model
# ---------------------------------------------------------------------------------------------
def _run_logged(cmd: list[str], logfile: Path, what: str, **kw) -> None:
    """Runs cmd with its output in logfile; Unavailable naming the log (and its last line) if it fails."""
    with open(logfile, "wb") as f:
        try:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kw).returncode
        except OSError as e:
            raise Unavailable(f"{what} failed: {cmd[0]}: {e.strerror}") from None
    if code != 0:
        lines = logfile.read_text(errors="replace").strip().splitlines()
        last = lines[-1].strip() if lines else ""
        raise Unavailable(f"{what} failed (exit {code}): {last[:200]} (whole log: {logfile})")


def ensure_source() -> Path:
    """The vendored llama.cpp tree, downloaded and extracted once."""
    marker = SOURCE / ".llama-cpp-python-version"
    if marker.is_file() and marker.read_text().strip() == VERSION:
        return SOURCE
    HOME.mkdir(parents=True, exist_ok=True)
    sdists = sorted(SDIST_DIR.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    if not sdists:
        log(f"downloading the llama-cpp-python {VERSION} source distribution with pip (~77 MB) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={VERSION}", "-d", str(SDIST_DIR)]
        _run_logged(cmd, HOME / "download.log", "pip download of llama-cpp-python")
        sdists = sorted(SDIST_DIR.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
        if not sdists:
            raise Unavailable(f"pip left no llama_cpp_python-{VERSION}.tar.gz in {SDIST_DIR}")
    log(f"extracting vendor/llama.cpp from {sdists[0].name} ...")
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    if SOURCE.exists():
        shutil.rmtree(SOURCE)
    with tarfile.open(sdists[0]) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(prefix) and (m.isfile() or m.isdir()):
                m.name = m.name[len(prefix) :]
                members.append(m)
        if not members:
            raise Unavailable(f"{sdists[0].name} holds no vendor/llama.cpp")
        tar.extractall(SOURCE, members=members, filter="data")
    marker.write_text(VERSION + "\n")
    return SOURCE


def tool_paths() -> dict[str, Path]:
    return {name: BUILD / "bin" / name for name in TOOLS}


def check_toolchain() -> None:
    """Unavailable unless cmake and a C and a C++ compiler are on PATH."""
    if shutil.which("cmake") is None:
        raise Unavailable("cmake is not installed; install cmake and a C/C++ compiler (e.g. apt-get install cmake g++) to build llama.cpp")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")) or not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        raise Unavailable("no C/C++ compiler (cc/c++, gcc/g++ or clang/clang++) is installed; install one (e.g. apt-get install g++) to build llama.cpp")


def ensure_tools() -> dict[str, Path]:
    """llama-bench and llama-batched-bench, built once."""
    tools = tool_paths()
    if all(p.is_file() and os.access(p, os.X_OK) for p in tools.values()):
        return tools
    check_toolchain()
    source = ensure_source()
    if not (BUILD / "CMakeCache.txt").is_file():
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        log(f"configuring the build in {BUILD} (Release, GGML_NATIVE=ON, CPU backend only, no CURL) ...")
        _run_logged(["cmake", "-S", str(source), "-B", str(BUILD), *generator, *CMAKE_FLAGS], HOME / "configure.log", "configuring llama.cpp")
    log(f"building {' and '.join(TOOLS)} with 2 jobs (several minutes on 2 cores; log: {HOME / 'build.log'}) ...")
    _run_logged(["cmake", "--build", str(BUILD), "--target", *TOOLS, "-j2"], HOME / "build.log", "building llama.cpp")
    missing = [str(p) for p in tools.values() if not p.is_file()]
    if missing:
        raise Unavailable(f"the build finished without {', '.join(missing)}")
    return tools


def ensure_gguf(folder: Path) -> Path:
    """folder's checkpoint as an f32 GGUF, converted once by the vendored convert_hf_to_gguf.py."""
    out = GGUF_DIR / f"{Path(folder).name}-f32.gguf"
    weights = Path(folder) / "model.safetensors"
    if out.is_file() and out.stat().st_mtime >= weights.stat().st_mtime:
        return out
    source = ensure_source()
    GGUF_DIR.mkdir(parents=True, exist_ok=True)
    log(f"converting {folder} to an f32 GGUF with llama.cpp's convert_hf_to_gguf.py ...")
    env = dict(os.environ)  # the vendored gguf package, not whichever one pip may have
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source / "gguf-py"), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    part = out.with_suffix(".gguf.partial")
    cmd = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(folder), "--outtype", "f32", "--outfile", str(part)]
    _run_logged(cmd, HOME / "convert.log", "converting the checkpoint to GGUF", env=env)
    part.rename(out)
    return out


# ---------------------------------------------------------------------------------------------
# Running the tools and reading their output
# ---------------------------------------------------------------------------------------------
def _run_tool(cmd: list[str], timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{Path(cmd[0]).name} took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout + "\n" + proc.stderr


def llama_bench(tool: Path, gguf: Path, *, threads: int, n_prompt: int, n_gen: int, depth: int = 0, reps: int = 1, timeout: float = 600) -> dict:
    """One llama-bench test (pp n_prompt or tg n_gen, after depth tokens of context): its JSON record."""
    cmd = [str(tool), "-m", str(gguf), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "-d", str(depth), "-r", str(reps), "-o", "jsonl"]
    records = parse_llama_bench(_run_tool(cmd, timeout))
    if len(records) != 1:
        raise RuntimeError(f"llama-bench printed {len(records)} results, expected 1")
    return records[0]


def parse_llama_bench(text: str) -> list[dict]:
    """llama-bench -o jsonl: one JSON object per test (avg_ts = tokens/s, samples_ts per repetition)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"avg_ts"' in line:
            record = json.loads(line)
            out.append(record)
    return out


def batched_bench(tool: Path, gguf: Path, *, threads: int, n_prompt: int, n_gen: int, parallel: list[int], ctx: int = 4096, timeout: float = 1200) -> list[dict]:
    """llama-batched-bench: each of `parallel` sequence counts, each sequence its own n_prompt-token prompt
    then n_gen tokens decoded together; one dict per count (see parse_batched_bench)."""
    cmd = [
        str(tool), "-m", str(gguf), "-c", str(ctx), "-t", str(threads), "-tb", str(threads),
        "-npp", str(n_prompt), "-ntg", str(n_gen), "-npl", ",".join(map(str, parallel)), "--output-format", "jsonl",
    ]  # fmt: skip
    rows = parse_batched_bench(_run_tool(cmd, timeout))
    if sorted(r["pl"] for r in rows) != sorted(parallel):
        raise RuntimeError(f"llama-batched-bench reported {[r['pl'] for r in rows]} sequences, asked for {parallel} (context too small?)")
    return rows


_BATCHED_KEYS = ("pp", "tg", "pl", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg", "t", "speed")
_BATCHED_ROW = re.compile(r"^\|" + r"\|".join([r"\s*([0-9.]+)\s*"] * len(_BATCHED_KEYS)) + r"\|\s*$")


def parse_batched_bench(text: str) -> list[dict]:
    """llama-batched-bench's results, from its JSON Lines (--output-format jsonl) or its markdown table:
    pp/tg/pl (prompt tokens, generated tokens per sequence, sequences), t_pp/t_tg/t (seconds),
    speed_pp/speed_tg/speed (tokens/s: prompt, generation only, all tokens over the total)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            record = json.loads(line)
            rows.append({k: record[k] for k in _BATCHED_KEYS})
        elif m := _BATCHED_ROW.match(line):
            rows.append({k: (float(v) if "." in v else int(v)) for k, v in zip(_BATCHED_KEYS, m.groups())})
    for r in rows:
        # generated tokens over the whole time, prompt processing included: what a batch command's
        # wall clock measures (the tool's own "speed" counts the prompt tokens too)
        r["gen_speed"] = r["pl"] * r["tg"] / r["t"]
    return rows


def product_bytes(gguf: Path) -> int:
    """Bytes of the weights one decode token multiplies: every block's four products and the LM head
    (output.weight, or the tied token_embd.weight), from the GGUF's tensor table."""
    source = ensure_source()
    sys.path.insert(0, str(source / "gguf-py"))
    try:
        from gguf import GGUFReader
    finally:
        sys.path.remove(str(source / "gguf-py"))
    names = {t.name: int(t.n_bytes) for t in GGUFReader(str(gguf)).tensors}
    block = re.compile(r"^blk\.\d+\.(attn_qkv|attn_output|ffn_up|ffn_down)\.weight$")
    head = names.get("output.weight", names.get("token_embd.weight", 0))
    return sum(n for name, n in names.items() if block.match(name)) + head


def main(argv: list[str] | None = None) -> int:
    import argparse

    sys.path.insert(0, str(HERE))
    from harness import SIZES, model_folder

    p = argparse.ArgumentParser(description="Build llama.cpp's benchmark tools and convert the benchmark's model (cached).")
    p.add_argument("--size", choices=list(SIZES), default="small")
    args = p.parse_args(argv)
    try:
        tools = ensure_tools()
        gguf = ensure_gguf(model_folder(args.size))
    except Unavailable as e:
        print(f"llamacpp.py: {e}", file=sys.stderr)
        return 1
    for name, path in tools.items():
        print(f"{name}\t{path}")
    print(f"gguf\t{gguf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writes small random GPT-2 checkpoints in the Hub's exact file layouts, for tests and benchmarks.

A folder gets config.json, safetensors weights (single file or shards with an index), and a tiny
byte-level BPE in GPT-2's vocab.json/merges.txt format, or a copy of the real tokenizer files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

# The real GPT-2 BPE files live beside the project in ../shared (never committed here).
SHARED_TOKENIZER = Path(
    os.environ.get("GPT2CLI_TOKENIZER_DIR") or Path(__file__).resolve().parents[3] / "shared" / "gpt2-tokenizer"
)

# A few merges so that common English pieces become multi-byte tokens (as in GPT-2: Ġ is a space).
TINY_MERGES = [
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"),
    ("Ġ", "s"), ("r", "e"), ("Ġ", "w"), ("a", "t"), ("e", "n"), ("Ġ", "o"), ("i", "s"),
    ("Ġo", "n"), ("Ġa", "n"), ("Ġan", "d"), ("o", "r"), ("Ġw", "or"), ("Ġwor", "l"),
]


def gpt2_byte_alphabet() -> list[str]:
    """The 256 one-byte tokens of GPT-2's BPE, as unicode strings, in rank order (printables first)."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    byte_to_char = {b: chr(b) for b in printable}
    byte_to_char.update({b: chr(256 + i) for i, b in enumerate(others)})
    return [byte_to_char[b] for b in printable + others]


def write_tiny_tokenizer(folder: Path, merges=TINY_MERGES) -> int:
    """Writes vocab.json + merges.txt of a tiny GPT-2-format BPE; returns its vocabulary size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(gpt2_byte_alphabet())}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(vocab)


def copy_real_tokenizer(folder: Path) -> int:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(SHARED_TOKENIZER / name, folder / name)
    return 50257


def random_gpt2_tensors(
    *, vocab_size: int, n_positions: int, n_embd: int, n_layer: int, seed: int = 0, std: float = 0.2
) -> dict[str, np.ndarray]:
    """Tensors of a random GPT-2 under the Hub's names (no prefix, Conv1D weights [in, out])."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=std):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"wte.weight": normal(vocab_size, n_embd), "wpe.weight": normal(n_positions, n_embd, scale=0.05)}
    for i in range(n_layer):
        p = f"h.{i}."
        t[p + "ln_1.weight"] = 1.0 + normal(n_embd, scale=0.1)
        t[p + "ln_1.bias"] = normal(n_embd, scale=0.1)
        t[p + "attn.c_attn.weight"] = normal(n_embd, 3 * n_embd)
        t[p + "attn.c_attn.bias"] = normal(3 * n_embd, scale=0.05)
        t[p + "attn.c_proj.weight"] = normal(n_embd, n_embd)
        t[p + "attn.c_proj.bias"] = normal(n_embd, scale=0.05)
        t[p + "ln_2.weight"] = 1.0 + normal(n_embd, scale=0.1)
        t[p + "ln_2.bias"] = normal(n_embd, scale=0.1)
        t[p + "mlp.c_fc.weight"] = normal(n_embd, 4 * n_embd)
        t[p + "mlp.c_fc.bias"] = normal(4 * n_embd, scale=0.05)
        t[p + "mlp.c_proj.weight"] = normal(4 * n_embd, n_embd)
        t[p + "mlp.c_proj.bias"] = normal(n_embd, scale=0.05)
    t["ln_f.weight"] = 1.0 + normal(n_embd, scale=0.1)
    t["ln_f.bias"] = normal(n_embd, scale=0.1)
    return t


def save_bf16_file(tensors: dict[str, np.ndarray], path: str, metadata: dict | None = None) -> None:
    """Writes float32 tensors as a BF16 safetensors file (numpy has no bfloat16), rounding to nearest even."""
    header: dict = {"__metadata__": metadata or {}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [offset, offset + len(rounded)]}
        blobs.append(rounded)
        offset += len(rounded)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for blob in blobs:
            f.write(blob)


def write_model(
    folder: Path,
    *,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 64,
    n_positions: int = 128,
    vocab_size: int | None = None,
    tokenizer: str = "tiny",
    prefix: bool = False,
    mask_buffers: bool = True,
    lm_head: bool = False,
    dtype: str = "float32",
    shards: int = 1,
    seed: int = 0,
    std: float = 0.2,
    eos_bias: float = 0.0,
    extra_config: dict | None = None,
) -> Path:
    """Writes a complete random GPT-2 model folder and returns it.

    tokenizer: "tiny" (a small BPE written here), "real" (copied from ../shared) or "none".
    prefix: keys under "transformer." as save_pretrained writes them (else the Hub's bare names).
    eos_bias: added to <|endoftext|>'s embedding row direction so hypotheses finish early.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer == "tiny":
        n_tok = write_tiny_tokenizer(folder)
    elif tokenizer == "real":
        n_tok = copy_real_tokenizer(folder)
    else:
        n_tok = vocab_size or 300
    vocab_size = vocab_size or n_tok
    eos_id = n_tok - 1
    tensors = random_gpt2_tensors(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, seed=seed, std=std
    )
    if eos_bias:
        # Align <|endoftext|>'s (tied) output row with ln_f's bias so its logit is large everywhere.
        direction = tensors["ln_f.bias"] / np.linalg.norm(tensors["ln_f.bias"])
        tensors["wte.weight"][eos_id] += (eos_bias * direction).astype(np.float32)
    if mask_buffers:
        for i in range(n_layer):
            tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((n_positions, n_positions), dtype=bool))[None, None].astype(np.float32)
            tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    if prefix:
        tensors = {"transformer." + k: v for k, v in tensors.items()}
    if lm_head:
        tensors["lm_head.weight"] = tensors[("transformer." if prefix else "") + "wte.weight"].copy()
    if dtype not in ("float32", "bfloat16"):
        tensors = {k: v.astype(dtype) for k, v in tensors.items()}
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": vocab_size,
        "n_positions": n_positions,
        "n_ctx": n_positions,
        "n_embd": n_embd,
        "n_layer": n_layer,
        "n_head": n_head,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "torch_dtype": dtype,
        **(extra_config or {}),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    metadata = {"format": "pt"}
    save = save_bf16_file if dtype == "bfloat16" else save_file
    if shards == 1:
        save(tensors, str(folder / "model.safetensors"), metadata=metadata)
    else:
        names = list(tensors)
        groups = [names[i::shards] for i in range(shards)]
        weight_map = {}
        total = 0
        for s, group in enumerate(groups, start=1):
            fname = f"model-{s:05d}-of-{shards:05d}.safetensors"
            save({k: tensors[k] for k in group}, str(folder / fname), metadata=metadata)
            for k in group:
                weight_map[k] = fname
                total += tensors[k].nbytes
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder

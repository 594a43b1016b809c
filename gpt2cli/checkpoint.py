"""safetensors files -> Weights: name table, tying, dtype upcast, validation, zero-copy memory maps.

The safetensors library validates each file's header; the tensors themselves are numpy views of a
read-only memory map of the file, so float32 weights cost no copy and no load time.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

from gpt2cli.config import GPT2Config
from gpt2cli.errors import CheckpointError, ModelNotFoundError
from gpt2cli.model import Block, GPT2Model, Weights

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "tf_model.h5", "flax_model.msgpack")

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
# Buffers some GPT-2 checkpoints carry that are not weights (causal masks), and the tied head.
_LAYER = re.compile(r"^h\.(\d+)\.")
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$|^lm_head\.weight$")

_BLOCK_FIELDS = {
    "ln_1.weight": "ln_1_weight",
    "ln_1.bias": "ln_1_bias",
    "attn.c_attn.weight": "c_attn_weight",
    "attn.c_attn.bias": "c_attn_bias",
    "attn.c_proj.weight": "attn_c_proj_weight",
    "attn.c_proj.bias": "attn_c_proj_bias",
    "ln_2.weight": "ln_2_weight",
    "ln_2.bias": "ln_2_bias",
    "mlp.c_fc.weight": "c_fc_weight",
    "mlp.c_fc.bias": "c_fc_bias",
    "mlp.c_proj.weight": "mlp_c_proj_weight",
    "mlp.c_proj.bias": "mlp_c_proj_bias",
}


def expected_shapes(cfg: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 checkpoint must hold (bare Hub names) with its shape."""
    d, inner = cfg.n_embd, cfg.n_inner
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (cfg.vocab_size, d),
        "wpe.weight": (cfg.n_positions, d),
        "ln_f.weight": (d,),
        "ln_f.bias": (d,),
    }
    block = {
        "ln_1.weight": (d,), "ln_1.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
        "ln_2.weight": (d,), "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, inner), "mlp.c_fc.bias": (inner,),
        "mlp.c_proj.weight": (inner, d), "mlp.c_proj.bias": (d,),
    }  # fmt: skip
    for i in range(cfg.n_layer):
        for name, shape in block.items():
            shapes[f"h.{i}.{name}"] = shape
    return shapes


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder (one file, or the shards its index names)."""
    folder = Path(folder)
    single, index = folder / SINGLE_FILE, folder / INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index}: unreadable shard index ({e}); re-download the model") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(f"{folder / missing[0]}: shard listed in {INDEX_FILE} is missing; re-download the model")
        return [folder / s for s in shards]
    pickles = [name for name in PICKLE_FILES if (folder / name).exists()]
    if pickles:
        raise CheckpointError(
            f"{folder}: has only {pickles[0]} (pickle/other formats), which gpt2cli never loads because "
            "unpickling can run arbitrary code; convert it to model.safetensors"
        )
    raise ModelNotFoundError(f"{folder}: no {SINGLE_FILE} here; pass --model a GPT-2 folder with safetensors weights")


def _read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where its data starts, validated."""
    from safetensors import SafetensorError, safe_open  # validates header layout and offsets

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a valid safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "it may be truncated or corrupt: re-download the model"
        ) from None
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def _map_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of one file as a read-only view of its memory map (float16/bfloat16 upcast)."""
    header, start = _read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        begin, end = info["data_offsets"]
        if dtype is None:
            if _IGNORED.match(name.removeprefix("transformer.")):
                continue
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {info['dtype']}, but GPT-2 weights must be F32, F16 or BF16; "
                "re-download the model or re-export it in one of those"
            )
        raw = data[start + begin : start + end]
        array = raw.view(dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            array = array.astype(np.float32)
        tensors[name] = array
    return tensors


def load_weights(folder: Path, cfg: GPT2Config) -> Weights:
    """Maps the folder's safetensors into Weights, checking every expected tensor's presence and shape."""
    found: dict[str, tuple[np.ndarray, Path]] = {}
    for path in weight_files(folder):
        for name, array in _map_tensors(path).items():
            found[name.removeprefix("transformer.")] = (array, path)
    shapes = expected_shapes(cfg)
    layer_of = {name: int(m.group(1)) for name in found if (m := _LAYER.match(name))}
    for name, layer in layer_of.items():
        if layer >= cfg.n_layer and not _IGNORED.match(name):
            raise CheckpointError(
                f"{found[name][1]}: holds tensor {name!r} but config.json says n_layer={cfg.n_layer}; "
                "the config contradicts the weights: re-download the model"
            )
    where = ", ".join(sorted({str(p) for _, p in found.values()})) or str(folder)
    layers = set(layer_of.values())
    if layers and max(layers) + 1 < cfg.n_layer:
        # Whole layers absent: say that the two disagree rather than name one missing tensor.
        raise CheckpointError(
            f"{where}: holds {max(layers) + 1} layers but config.json says n_layer={cfg.n_layer}; "
            "the config contradicts the weights: re-download the model"
        )
    tensors = {}
    for name, shape in shapes.items():
        if name not in found:
            raise CheckpointError(f"{where}: tensor {name!r} is missing; the checkpoint is incomplete: re-download it")
        array, path = found[name]
        if tuple(array.shape) != shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {list(array.shape)}, config.json implies {list(shape)}; "
                "the config contradicts the weights: re-download the model"
            )
        tensors[name] = array
    blocks = tuple(
        Block(**{field: tensors[f"h.{i}.{name}"] for name, field in _BLOCK_FIELDS.items()})
        for i in range(cfg.n_layer)
    )
    return Weights(
        wte=tensors["wte.weight"],
        wpe=tensors["wpe.weight"],
        blocks=blocks,
        ln_f_weight=tensors["ln_f.weight"],
        ln_f_bias=tensors["ln_f.bias"],
    )


def load_model(folder: Path) -> GPT2Model:
    """A ready GPT2Model from a checkpoint folder (config.json + safetensors)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such model folder; pass --model a GPT-2 model folder")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"{folder}: no config.json, so this is not a model folder; pass --model a GPT-2 model folder"
        )
    cfg = GPT2Config.from_file(folder / "config.json")
    return GPT2Model(cfg, load_weights(folder, cfg))

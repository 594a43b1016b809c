"""safetensors files -> float32 Weights: name table, tying, dtype upcast, validation, zero-copy maps.

The safetensors library validates each file's header; the tensors themselves are numpy views of a
read-only memory map of the file, so float32 weights cost no copy and no load time. Knows nothing of
the engine that will run them (gpt2cli.spec is the shared vocabulary).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from gpt2cli.errors import CheckpointError, ModelNotFoundError
from gpt2cli.spec import Block, GPT2Config, Weights
from gpt2cli.store import layout

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
# A GPT-2 header lists ~15 tensors a layer at ~100 bytes each: even 1000 layers stay far below this.
_MAX_HEADER = 16_000_000
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
    """The safetensors files of a model folder: model.safetensors, or the shards its index names."""
    folder = Path(folder)
    single, index = folder / layout.SINGLE_WEIGHTS, folder / layout.SHARD_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            text = layout.read_small_text(index)
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{index}: cannot read the shard index ({_reason(e)}); {layout.remedy(folder)}") from None
        # The index may name only files beside it: never a path, never a file outside the folder.
        shards = layout.shards_of_index(text, str(index), layout.remedy(folder))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder / missing[0]}: shard listed in {layout.SHARD_INDEX} is missing; {layout.remedy(folder)}"
            )
        return [folder / s for s in shards]
    try:
        names = set(os.listdir(folder))
    except OSError:
        names = set()
    layout.refuse_other_formats(names, str(folder))
    raise ModelNotFoundError(f"{folder}: no {layout.SINGLE_WEIGHTS} here; pass --model a GPT-2 folder with safetensors weights")


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)


def _read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where its data starts, validated."""
    from safetensors import SafetensorError, safe_open  # validates header layout and offsets

    try:  # our own open first: a file we may not read is a permission problem, not a corrupt file
        with open(path, "rb") as f:
            first, file_size = f.read(8), os.fstat(f.fileno()).st_size
    except OSError as e:
        raise CheckpointError(
            f"{path}: cannot read the weights ({_reason(e)}); fix the file's permissions, or pass --model another model"
        ) from None
    header_size = struct.unpack("<Q", first)[0] if len(first) == 8 else 0
    if _MAX_HEADER < header_size <= file_size - 8:  # (one longer than the file: safetensors says truncated)
        # safetensors reads headers up to 100 MB: parsed into Python objects, gigabytes and seconds
        raise CheckpointError(
            f"{path}: its header takes {header_size / 1e6:.0f} MB, where a GPT-2 checkpoint's takes well under "
            f"{_MAX_HEADER // 1_000_000} MB; it is corrupt or not a GPT-2 checkpoint: {layout.remedy(path.parent)}"
        )
    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a valid safetensors file ({_reason(e)}); "
            f"it may be truncated or corrupt: {layout.remedy(path.parent)}"
        ) from None
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def _map_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of one file as a read-only view of its memory map, as stored (bfloat16 as uint16 bits):
    _upcast makes float32 of only the tensors used, once their shapes are checked (a file's unused or
    misshapen float16 tensors would otherwise each take twice their size of memory, read or not)."""
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
                f"{layout.remedy(path.parent)}, or re-export it in one of those"
            )
        array = data[start + begin : start + end].view(dtype).reshape(info["shape"])
        tensors[name] = np.asarray(array)  # a plain ndarray view of the map (see spec.Weights)
    return tensors


def _upcast(array: np.ndarray) -> np.ndarray:
    """float32 of a stored tensor: float32 as it is (no copy), float16 and bfloat16 (uint16 bits) upcast."""
    if array.dtype == np.uint16:  # bfloat16: the high half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array if array.dtype == np.float32 else array.astype(np.float32)


def load_weights(folder: Path, cfg: GPT2Config) -> Weights:
    """Maps the folder's safetensors into Weights, checking every expected tensor's presence and shape.

    The headers are checked against config.json before anything sized by the config is built, so a
    config claiming a million layers fails at once instead of allocating for them.
    """
    found: dict[str, tuple[np.ndarray, Path]] = {}
    for path in weight_files(folder):
        for name, array in _map_tensors(path).items():
            bare = name.removeprefix("transformer.")
            if bare in found and not _IGNORED.match(bare):  # two shards, or `h.0.x` beside `transformer.h.0.x`
                raise CheckpointError(
                    f"{path}: holds tensor {name!r}, which {found[bare][1]} holds too; the checkpoint is "
                    f"ambiguous: {layout.remedy(folder)}"
                )
            found[bare] = (array, path)
    fix = f"the config contradicts the weights: {layout.remedy(folder)}"
    layer_of = {name: int(m.group(1)) for name in found if (m := _LAYER.match(name))}
    for name, layer in layer_of.items():
        if layer >= cfg.n_layer and not _IGNORED.match(name):
            raise CheckpointError(
                f"{found[name][1]}: holds tensor {name!r} but config.json says n_layer={cfg.n_layer}; {fix}"
            )
    where = ", ".join(sorted({str(p) for _, p in found.values()})) or str(folder)
    layers = set(layer_of.values())
    if max(layers, default=-1) + 1 < cfg.n_layer:
        # Whole layers absent: say that the two disagree rather than name one missing tensor.
        raise CheckpointError(
            f"{where}: holds {max(layers, default=-1) + 1} layers but config.json says n_layer={cfg.n_layer}; {fix}"
        )
    shapes = expected_shapes(cfg)
    tensors = {}
    for name, shape in shapes.items():
        if name not in found:
            raise CheckpointError(f"{where}: tensor {name!r} is missing; the checkpoint is incomplete: {layout.remedy(folder)}")
        array, path = found[name]
        if tuple(array.shape) != shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {list(array.shape)}, config.json implies {list(shape)}; {fix}"
            )
        tensors[name] = _upcast(array)
    blocks = tuple(
        Block(**{field: tensors[f"h.{i}.{name}"] for name, field in _BLOCK_FIELDS.items()})
        for i in range(cfg.n_layer)
    )
    weights = Weights(
        wte=tensors["wte.weight"],
        wpe=tensors["wpe.weight"],
        blocks=blocks,
        ln_f_weight=tensors["ln_f.weight"],
        ln_f_bias=tensors["ln_f.bias"],
    )
    for name, array in weights.arrays().items():
        assert array.dtype == np.float32 and type(array) is np.ndarray, f"{name}: {type(array)} of {array.dtype}"
    return weights

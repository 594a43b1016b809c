"""config.json -> GPT2Config: every key gpt2cli relies on checked, every one it cannot honour refused."""

from __future__ import annotations

import json
from pathlib import Path

from gpt2cli.errors import CheckpointError
from gpt2cli.spec import GPT2Config

# The activations GPT-2 checkpoints name for the tanh approximation of GELU that we implement.
_SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_FIX = "fix config.json or re-download the model"


def from_dict(d: dict, source: str = "config.json") -> GPT2Config:
    def get_int(key: str, default: int | None = None) -> int:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{source}: '{key}' must be a positive integer, got {value!r}; {_FIX}")
        return value

    model_type = d.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise CheckpointError(
            f"{source}: model_type is {model_type!r}; gpt2cli runs GPT-2 architecture models only: pass --model a GPT-2 model"
        )
    activation = d.get("activation_function", "gelu_new")
    if activation not in _SUPPORTED_ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation_function {activation!r} is not supported (expected gelu_new); {_FIX}"
        )
    n_inner = d.get("n_inner")
    n_embd = get_int("n_embd", 768)
    if n_inner not in (None, 4 * n_embd):
        raise CheckpointError(f"{source}: n_inner={n_inner} is not supported (must be 4 * n_embd); {_FIX}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if d.get(flag):
            raise CheckpointError(f"{source}: '{flag}' is not supported; {_FIX}")
    if d.get("scale_attn_weights", True) is not True:
        raise CheckpointError(f"{source}: scale_attn_weights=false is not supported; {_FIX}")
    eps = d.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise CheckpointError(f"{source}: 'layer_norm_epsilon' must be a positive number, got {eps!r}; {_FIX}")
    config = GPT2Config(
        vocab_size=get_int("vocab_size", 50257),
        n_positions=get_int("n_positions", d.get("n_ctx", 1024)),
        n_embd=n_embd,
        n_layer=get_int("n_layer", 12),
        n_head=get_int("n_head", 12),
        layer_norm_epsilon=float(eps),
        eos_token_id=d.get("eos_token_id", 50256),
    )
    eos = config.eos_token_id
    if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < config.vocab_size:
        raise CheckpointError(
            f"{source}: eos_token_id must be a token id below vocab_size={config.vocab_size}, got {eos!r}; {_FIX}"
        )
    if config.n_embd % config.n_head:
        raise CheckpointError(
            f"{source}: n_embd={config.n_embd} is not divisible by n_head={config.n_head}; {_FIX}"
        )
    return config


def read_config(path: Path) -> GPT2Config:
    """The GPT2Config of a config.json file."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: config.json is missing; the folder is not a complete model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read config.json ({e}); re-download the model") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: config.json is not a JSON object; re-download the model")
    return from_dict(d, source=str(path))

"""config.json -> GPT2Config: every key gpt2cli relies on checked, every one it cannot honour refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

from gpt2cli.errors import CheckpointError
from gpt2cli.spec import GPT2Config
from gpt2cli.store import layout

# The activations GPT-2 checkpoints name for the tanh approximation of GELU that we implement.
_SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_FIX = "fix config.json or re-download the model"
# No GPT-2 size comes near this; a bigger one is a broken or hostile config (the weights' headers are
# checked against the sizes before anything is allocated, this only keeps the numbers sane).
_MAX_SIZE = 2**31 - 1


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def from_dict(d: dict, source: str = "config.json", fix: str = _FIX) -> GPT2Config:
    """`fix` is the remedy the messages give: for a user's own folder, no re-download."""

    def get_int(key: str, default: int | None = None) -> int:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_SIZE:
            raise CheckpointError(
                f"{source}: '{key}' must be a positive integer (at most {_MAX_SIZE}), got {_shown(value)}; {fix}"
            )
        return value

    model_type = d.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise CheckpointError(
            f"{source}: model_type is {model_type!r}; gpt2cli runs GPT-2 architecture models only: pass --model a GPT-2 model"
        )
    activation = d.get("activation_function", "gelu_new")
    if activation not in _SUPPORTED_ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation_function {activation!r} is not supported (expected gelu_new); {fix}"
        )
    n_inner = d.get("n_inner")
    n_embd = get_int("n_embd", 768)
    if n_inner not in (None, 4 * n_embd):
        raise CheckpointError(f"{source}: n_inner={_shown(n_inner)} is not supported (must be 4 * n_embd); {fix}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if d.get(flag):
            raise CheckpointError(f"{source}: '{flag}' is not supported; {fix}")
    scale = d.get("scale_attn_weights", True)
    if scale is not True:
        said = "scale_attn_weights=false is not supported" if scale is False else f"'scale_attn_weights' must be true, got {_shown(scale)}"
        raise CheckpointError(f"{source}: {said}; {fix}")
    # Untied, the logits come from lm_head.weight, which gpt2cli never reads (it computes them from wte):
    # running such a checkpoint would print another model's text without a word of warning.
    if d.get("tie_word_embeddings", True) is not True:
        raise CheckpointError(
            f"{source}: tie_word_embeddings={_shown(d.get('tie_word_embeddings'))} is not supported: gpt2cli runs "
            f"GPT-2 models whose output layer is the token embeddings (tie_word_embeddings true); {fix}"
        )
    eps = d.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps and math.isfinite(eps)):
        raise CheckpointError(
            f"{source}: 'layer_norm_epsilon' must be a positive finite number, got {_shown(eps)}; {fix}"
        )
    config = GPT2Config(
        vocab_size=get_int("vocab_size", 50257),
        n_positions=get_int("n_positions", d.get("n_ctx", 1024)),
        n_embd=n_embd,
        n_layer=get_int("n_layer", 12),
        n_head=get_int("n_head", 12),
        layer_norm_epsilon=float(eps),
        eos_token_id=_one_eos(d.get("eos_token_id", 50256), source, fix),
    )
    eos = config.eos_token_id
    if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < config.vocab_size:
        raise CheckpointError(
            f"{source}: eos_token_id must be a token id below vocab_size={config.vocab_size}, got {_shown(eos)}; {fix}"
        )
    if config.n_positions < 2:  # a prompt token and the one it predicts: the least a run (or a slide) holds
        raise CheckpointError(f"{source}: n_positions={config.n_positions} is too small: a context holds at least 2 tokens; {fix}")
    if config.n_embd % config.n_head:
        raise CheckpointError(
            f"{source}: n_embd={config.n_embd} is not divisible by n_head={config.n_head}; {fix}"
        )
    return config


def _one_eos(eos: object, source: str, fix: str) -> object:
    """config.json's eos_token_id as one id: Hugging Face also writes a list of ids (generation stops at
    any of them); a list of one is that id, and a longer one is refused, since gpt2cli stops at one."""
    if not isinstance(eos, list):
        return eos
    if len(eos) == 1:
        return eos[0]
    raise CheckpointError(
        f"{source}: eos_token_id lists {len(eos)} ids ({_shown(eos)}) but gpt2cli stops at one end-of-text token; "
        f"{'keep one of them' if eos else 'give the id of the end-of-text token'} ({fix})"
    )


def read_config(path: Path) -> GPT2Config:
    """The GPT2Config of a config.json file."""
    path = Path(path)
    fix = layout.remedy(path.parent)
    try:
        d = json.loads(layout.read_small_text(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: config.json is missing, so the folder is not a complete model; {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise CheckpointError(f"{path}: cannot read config.json ({reason}); {fix}") from None
    except (ValueError, RecursionError) as e:  # bad JSON, nesting too deep, an integer too long to parse
        raise CheckpointError(f"{path}: cannot read config.json (not valid JSON: {str(e)[:80]}); {fix}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: config.json is not a JSON object; {fix}")
    own = fix.startswith("fix")
    return from_dict(d, source=str(path), fix="fix config.json" + ("" if own else " or " + fix))

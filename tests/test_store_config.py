"""The model config (store/config.py): config.json of every GPT-2 size, as the Hub
publishes them, and configs we must refuse."""

from __future__ import annotations

import pytest

from gpt2cli.errors import CheckpointError
from gpt2cli.store.config import from_dict

COMMON = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "resid_pdrop": 0.1, "summary_activation": None,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
    "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257, "n_ctx": 1024, "n_positions": 1024,
}  # fmt: skip
SIZES = {
    "gpt2": dict(n_embd=768, n_head=12, n_layer=12),
    "distilgpt2": dict(n_embd=768, n_head=12, n_layer=6, _num_labels=1),
    "gpt2-medium": dict(n_embd=1024, n_head=16, n_layer=24, n_special=0, predict_special_tokens=True),
    "gpt2-large": dict(n_embd=1280, n_head=20, n_layer=36),
    "gpt2-xl": dict(n_embd=1600, n_head=25, n_layer=48, output_past=True),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_hub_configs_of_every_size_load(name):
    cfg = from_dict({**COMMON, **SIZES[name]})
    assert (cfg.n_embd, cfg.n_head, cfg.n_layer) == tuple(SIZES[name][k] for k in ("n_embd", "n_head", "n_layer"))
    assert cfg.head_dim == 64 and cfg.n_inner == 4 * cfg.n_embd
    assert cfg.vocab_size == 50257 and cfg.n_positions == 1024 and cfg.eos_token_id == 50256


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "llama"}, "model_type"),
        ({"activation_function": "relu"}, "activation_function"),
        ({"n_embd": 100, "n_head": 12}, "divisible"),
        ({"n_layer": 0}, "n_layer"),
        ({"n_head": "12"}, "n_head"),
        ({"layer_norm_epsilon": -1}, "layer_norm_epsilon"),
        ({"n_inner": 1000}, "n_inner"),
    ],
)
def test_configs_we_cannot_run_are_refused_with_the_key(change, message):
    with pytest.raises(CheckpointError, match=message):
        from_dict({**COMMON, **SIZES["gpt2"], **change})


def test_an_eos_token_id_list_of_one_is_that_id():
    """Hugging Face writes eos_token_id as a list too; one id in it is the end-of-text token."""
    assert from_dict({**COMMON, **SIZES["gpt2"], "eos_token_id": [50256]}).eos_token_id == 50256


@pytest.mark.parametrize("ids, says", [([50256, 198], "lists 2 ids ([50256, 198])"), ([], "lists 0 ids")])
def test_an_eos_token_id_list_of_several_or_none_is_refused_for_what_it_is(ids, says):
    """Not 'must be a token id ... got [50256, 198]': the list is named, and what to do with it."""
    with pytest.raises(CheckpointError) as e:
        from_dict({**COMMON, **SIZES["gpt2"], "eos_token_id": ids})
    assert says in str(e.value) and "stops at one end-of-text token" in str(e.value)
    assert ("keep one of them" in str(e.value)) == bool(ids)


def test_an_eos_token_id_list_holding_something_else_is_still_not_a_token_id():
    with pytest.raises(CheckpointError, match=r"eos_token_id must be a token id below vocab_size=50257, got 'x'"):
        from_dict({**COMMON, **SIZES["gpt2"], "eos_token_id": ["x"]})

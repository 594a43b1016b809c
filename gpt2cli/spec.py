"""What a GPT-2 is, whoever reads it and whoever runs it: the blueprint (GPT2Config) and the
tensors under the checkpoint's names (Weights). store/ fills them from files; engine/ runs them.

llama2.c's split: Config and read-only TransformerWeights here, RunState (the KV cache) in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    eos_token_id: int = 50256

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_inner(self) -> int:
        return 4 * self.n_embd


@dataclass(frozen=True)
class Block:
    """One transformer layer's weights, under the checkpoint's names (Conv1D weights are [in, out])."""

    ln_1_weight: np.ndarray  # [n_embd]
    ln_1_bias: np.ndarray  # [n_embd]
    c_attn_weight: np.ndarray  # [n_embd, 3*n_embd]
    c_attn_bias: np.ndarray  # [3*n_embd]
    attn_c_proj_weight: np.ndarray  # [n_embd, n_embd]
    attn_c_proj_bias: np.ndarray  # [n_embd]
    ln_2_weight: np.ndarray  # [n_embd]
    ln_2_bias: np.ndarray  # [n_embd]
    c_fc_weight: np.ndarray  # [n_embd, 4*n_embd]
    c_fc_bias: np.ndarray  # [4*n_embd]
    mlp_c_proj_weight: np.ndarray  # [4*n_embd, n_embd]
    mlp_c_proj_bias: np.ndarray  # [n_embd]


@dataclass(frozen=True)
class Weights:
    """Every tensor the forward pass reads: float32 plain ndarrays (views of a file's memory map).

    Plain ndarrays, not np.memmap: a memmap operand sends every result through the subclass's
    Python-level wrapping, which a decode step would pay ~100 times.
    """

    wte: np.ndarray  # [vocab_size, n_embd]; also the LM head (tied)
    wpe: np.ndarray  # [n_positions, n_embd]
    blocks: tuple[Block, ...]
    ln_f_weight: np.ndarray  # [n_embd]
    ln_f_bias: np.ndarray  # [n_embd]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every tensor by a readable name (`h.3.c_fc_weight`), for checks over all of them."""
        out = {"wte": self.wte, "wpe": self.wpe, "ln_f_weight": self.ln_f_weight, "ln_f_bias": self.ln_f_bias}
        for i, block in enumerate(self.blocks):
            out.update({f"h.{i}.{f}": getattr(block, f) for f in Block.__dataclass_fields__})
        return out

"""The NumPy GPT-2 engine: read-only Weights, a preallocated KVCache, and GPT2Model.forward().

Everything is float32 and batched ([B, T, ...]); nothing here prints or touches files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpt2cli.config import GPT2Config

F32 = np.float32
# sqrt(2 / pi) for gelu_new, kept as float32 so that no float64 scalar upcasts an activation (NEP 50).
_GELU_C = F32(0.7978845608028654)
_GELU_A = F32(0.044715)


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
    wte: np.ndarray  # [vocab_size, n_embd]; also the LM head (tied)
    wpe: np.ndarray  # [n_positions, n_embd]
    blocks: tuple[Block, ...]
    ln_f_weight: np.ndarray  # [n_embd]
    ln_f_bias: np.ndarray  # [n_embd]


class KVCache:
    """Keys and values of every layer for a batch of sequences that share one length.

    Allocated once at full capacity (zero pages cost no memory until written); decoding writes
    each new position in place, beam search reorders rows in place.
    """

    def __init__(self, config: GPT2Config, batch: int, capacity: int):
        shape = (config.n_layer, batch, config.n_head, capacity, config.head_dim)
        self.k = np.zeros(shape, dtype=F32)  # [n_layer, B, n_head, capacity, head_dim]
        self.v = np.zeros(shape, dtype=F32)  # [n_layer, B, n_head, capacity, head_dim]
        self.length = 0

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def repeat(self, n: int) -> "KVCache":
        """A batch-n cache whose every row is a copy of this batch-1 cache (one prefill, many rows)."""
        assert self.batch == 1, "repeat() expands a batch-1 cache"
        out = KVCache.__new__(KVCache)
        n_layer, _, n_head, capacity, head_dim = self.k.shape
        out.k = np.zeros((n_layer, n, n_head, capacity, head_dim), dtype=F32)
        out.v = np.zeros_like(out.k)
        out.k[:, :, :, : self.length] = self.k[:, :, :, : self.length]
        out.v[:, :, :, : self.length] = self.v[:, :, :, : self.length]
        out.length = self.length
        return out

    def reorder(self, rows: np.ndarray) -> None:
        """Row b becomes the old row rows[b] (beam search following the chosen parents), in place."""
        n = self.length
        self.k[:, :, :, :n] = self.k[:, rows, :, :n]
        self.v[:, :, :, :n] = self.v[:, rows, :, :n]


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    # [..., n_embd] -> [..., n_embd]
    mean = x.mean(axis=-1, keepdims=True)  # [..., 1]
    centered = x - mean  # [..., n_embd]
    var = np.einsum("...i,...i->...", centered, centered)[..., None]  # [..., 1]
    var *= F32(1.0 / x.shape[-1])
    var += F32(eps)
    np.sqrt(var, out=var)
    centered /= var
    centered *= weight
    centered += bias
    return centered


def gelu_new(x: np.ndarray) -> np.ndarray:
    """GPT-2's tanh GELU, in place on x (a fresh activation buffer): [..., n] -> [..., n]."""
    t = x * x  # [..., n]
    t *= _GELU_A
    t += F32(1.0)
    t *= x
    t *= _GELU_C
    np.tanh(t, out=t)
    t += F32(1.0)
    x *= F32(0.5)
    x *= t
    return x


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    # [..., n_in] @ [n_in, n_out] + [n_out] -> [..., n_out]
    out = x @ weight
    out += bias
    return out


def softmax_inplace(x: np.ndarray) -> np.ndarray:
    # [..., n] -> [..., n], rows sum to 1
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


class GPT2Model:
    """GPT-2 forward passes over a KVCache: a batched prefill, or one-token decode steps."""

    def __init__(self, config: GPT2Config, weights: Weights):
        self.config = config
        self.weights = weights
        self._scale = F32(1.0 / np.sqrt(config.head_dim))
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    def new_cache(self, batch: int = 1, capacity: int | None = None) -> KVCache:
        return KVCache(self.config, batch, capacity or self.config.n_positions)

    def _causal_mask(self, past: int, t: int) -> np.ndarray:
        """Additive mask [t, past+t]: query i (at position past+i) sees keys 0..past+i."""
        key = (past, t)
        mask = self._masks.get(key)
        if mask is None:
            i = np.arange(t)[:, None]
            j = np.arange(past + t)[None, :]
            mask = np.where(j > past + i, F32(-np.inf), F32(0.0)).astype(F32)
            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = mask
        return mask

    def _attention(self, x: np.ndarray, block: Block, layer: int, cache: KVCache) -> np.ndarray:
        # [B, T, n_embd] -> [B, T, n_embd]
        cfg = self.config
        b, t, _ = x.shape
        past = cache.length
        qkv = linear(x, block.c_attn_weight, block.c_attn_bias)  # [B, T, 3*n_embd]
        qkv = qkv.reshape(b, t, 3, cfg.n_head, cfg.head_dim)  # [B, T, 3, n_head, head_dim]
        q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # [B, n_head, T, head_dim]
        cache.k[layer, :, :, past : past + t] = qkv[:, :, 1].transpose(0, 2, 1, 3)
        cache.v[layer, :, :, past : past + t] = qkv[:, :, 2].transpose(0, 2, 1, 3)
        k = cache.k[layer, :, :, : past + t]  # [B, n_head, past+T, head_dim]
        v = cache.v[layer, :, :, : past + t]  # [B, n_head, past+T, head_dim]
        q = q * self._scale  # [B, n_head, T, head_dim]
        scores = q @ k.transpose(0, 1, 3, 2)  # [B, n_head, T, past+T]
        if t > 1:
            scores += self._causal_mask(past, t)
        softmax_inplace(scores)
        out = scores @ v  # [B, n_head, T, head_dim]
        out = out.transpose(0, 2, 1, 3).reshape(b, t, cfg.n_embd)  # [B, T, n_embd]
        return linear(out, block.attn_c_proj_weight, block.attn_c_proj_bias)

    def _mlp(self, x: np.ndarray, block: Block) -> np.ndarray:
        # [B, T, n_embd] -> [B, T, n_embd]
        h = linear(x, block.c_fc_weight, block.c_fc_bias)  # [B, T, 4*n_embd]
        return linear(gelu_new(h), block.mlp_c_proj_weight, block.mlp_c_proj_bias)

    def hidden_states(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """Runs the transformer over tokens, appending them to the cache: [B, T] -> [B, T, n_embd]."""
        cfg, w = self.config, self.weights
        tokens = np.asarray(tokens)
        b, t = tokens.shape
        past = cache.length
        if b != cache.batch:
            raise ValueError(f"batch of {b} rows for a cache of {cache.batch}")
        if past + t > min(cache.capacity, cfg.n_positions):
            raise ValueError(f"{past + t} positions exceed the context of {min(cache.capacity, cfg.n_positions)}")
        x = w.wte[tokens] + w.wpe[past : past + t]  # [B, T, n_embd]
        eps = cfg.layer_norm_epsilon
        for layer, block in enumerate(w.blocks):
            x += self._attention(layer_norm(x, block.ln_1_weight, block.ln_1_bias, eps), block, layer, cache)
            x += self._mlp(layer_norm(x, block.ln_2_weight, block.ln_2_bias, eps), block)
        cache.length = past + t
        return layer_norm(x, w.ln_f_weight, w.ln_f_bias, eps)  # [B, T, n_embd]

    def logits(self, h: np.ndarray) -> np.ndarray:
        # [..., n_embd] @ wte.T -> [..., vocab_size]
        return h @ self.weights.wte.T

    def forward(self, tokens: np.ndarray, cache: KVCache, *, all_logits: bool = False) -> np.ndarray:
        """Appends tokens [B, T] to the cache; logits of the last position [B, V] (or all: [B, T, V])."""
        h = self.hidden_states(tokens, cache)  # [B, T, n_embd]
        if all_logits:
            return self.logits(h)  # [B, T, V]
        return self.logits(np.ascontiguousarray(h[:, -1]))  # [B, V]

"""The GPT-2 forward pass over a preallocated KVCache: a batched prefill, or one-token decode steps.

Reads like picoGPT (layer norm, attention, MLP, residuals, under the checkpoint's names), batched
([B, T, ...]) and float32; the kernels and product routes it calls live in kernels.py. Nothing here
prints or touches files.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from gpt2cli.engine import threads
from gpt2cli.engine.kernels import F32, layer_norm, layer_norm_rows, gelu_new, gelu_rows, linear, linear_t, lm_head, lm_head_layout, matmul, softmax, transposed
from gpt2cli.engine.cache import KVCache, SharedPrefixCache, SlotCache
from gpt2cli.spec import GPT2Config, Weights

Progress = Callable[[int, int], None]  # (layers done, n_layer)
# A prompt's causal attention runs in tiles of this many queries, each against only the keys it can
# see, which skips nearly half of the score matrix.
_QUERY_TILE = 128
# From this many rows (tokens x batch) on, a forward pass runs split over the engine's threads
# (GPT2Model.splits, engine.threads): a 512-token prefill took ~400 ms instead of ~460 on 2 cores.
# Below it, handing work to a thread costs more than it saves.
_SPLIT_ROWS = 32


def layout_copy_bytes(config: GPT2Config) -> int:
    """Bytes of the weight copies a model makes for decoding, beside the checkpoint's own weights (new
    memory, unlike the weights, which are mapped from their file): the LM head's wte laid out
    [n_embd, vocab] and every layer's mlp.c_proj laid out [n_embd, 4*n_embd]. GPT-2 small 0.27 GB,
    gpt2-xl 2.3 GB."""
    return 4 * (config.vocab_size * config.n_embd + config.n_layer * config.n_inner * config.n_embd)


class GPT2Model:
    """GPT-2 forward passes over a KVCache: a batched prefill, or one-token decode steps.

    Not for concurrent use from several threads on one cache (nothing else is shared).
    """

    def __init__(self, config: GPT2Config, weights: Weights):
        self.config = config
        self.weights = weights  # float32 ndarrays, checked by the loader (store.checkpoint)
        self._blocks = weights.blocks
        self._wte = weights.wte
        self._wpe = weights.wpe
        self._ln_f = (weights.ln_f_weight, weights.ln_f_bias)
        self._lm_head: np.ndarray | None = None  # [n_embd, vocab]: wte laid out for the logits, at the first logits()
        self._mlp_proj_t: list[np.ndarray] | None = None  # per layer [n_embd, 4*n_embd]: at the first pass not split
        self._scale = F32(1.0 / np.sqrt(config.head_dim))
        self._eps = F32(config.layer_norm_epsilon)
        self._masks: dict[int, np.ndarray] = {}

    def pending_copy_bytes(self) -> int:
        """Bytes of layout_copy_bytes() this model has not made yet (0 once a run has decoded)."""
        made = [] if self._lm_head is None else [self._lm_head]
        made += self._mlp_proj_t or []
        return layout_copy_bytes(self.config) - sum(w.nbytes for w in made)

    def new_cache(self, batch: int = 1, capacity: int | None = None) -> KVCache:
        return KVCache(self.config, batch, capacity or self.config.n_positions)

    def _tile_mask(self, t: int) -> np.ndarray:
        """Additive mask [t, t]: within a tile, query i sees keys 0..i."""
        mask = self._masks.get(t)
        if mask is None:
            mask = np.triu(np.full((t, t), -np.inf, dtype=F32), k=1)
            self._masks[t] = mask
        return mask

    def _attention(
        self, qkv: np.ndarray, bias: np.ndarray, layer: int, cache: KVCache, b: int, t: int, past: int, *, split: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        # [B*T, 3*n_embd] (c_attn's product, its bias not yet added; q's part is scaled in place) for
        # positions past.. -> [B*T, n_embd] (into out [B*T, n_embd] if given)
        cfg = self.config
        if t == 1:
            return self._decode_attention(qkv, bias, layer, cache, past)
        qkv = qkv.reshape(b, t, 3, cfg.n_head, cfg.head_dim)  # [B, T, 3, n_head, head_dim]
        bias = bias.reshape(3, cfg.n_head, cfg.head_dim)  # [3, n_head, head_dim]
        out = np.empty((b, t, cfg.n_head, cfg.head_dim), F32) if out is None else out.reshape(b, t, cfg.n_head, cfg.head_dim)
        if split:  # a prompt: heads in parts on the engine's threads
            threads.split(lambda h0, h1: self._attend_heads(qkv, bias, layer, cache, past, out, h0, h1), cfg.n_head, calls_blas=True)
        else:
            self._attend_heads(qkv, bias, layer, cache, past, out, 0, cfg.n_head)
        return out.reshape(b * t, cfg.n_embd)

    def _decode_attention(
        self, qkv: np.ndarray, bias: np.ndarray, layer: int, cache: "KVCache | SharedPrefixCache", past: int
    ) -> np.ndarray:
        """One new position per row: its key and value into the cache, its query against every key.

        As few numpy calls as possible (a decoding step runs this once per layer): one bias add for
        q, k and v together, the cache writes as two assignments, and [B, heads, 1, head_dim]
        results that are already the [B, n_embd] output.
        """
        # qkv [B, 3*n_embd] (bias not yet added) -> [B, n_embd]
        cfg = self.config
        b = qkv.shape[0]
        qkv += bias
        q = qkv[:, : cfg.n_embd].reshape(b, cfg.n_head, 1, cfg.head_dim)  # [B, n_head, 1, head_dim] view
        q *= self._scale
        kv = qkv[:, cfg.n_embd :].reshape(b, 2, cfg.n_head, cfg.head_dim)  # [B, 2, n_head, head_dim] view
        if isinstance(cache, SharedPrefixCache):
            return self._shared_decode_attention(q, kv, layer, cache, past)
        if isinstance(cache, SlotCache):
            return self._slot_decode_attention(q, kv, layer, cache)
        cache.k[layer, :, :, past] = kv[:, 0]
        cache.v[layer, :, :, past] = kv[:, 1]
        k = cache.k[layer, :, :, : past + 1]  # [B, n_head, past+1, head_dim]
        scores = np.matmul(q, k.transpose(0, 1, 3, 2))  # [B, n_head, 1, past+1]
        out = np.matmul(softmax(scores, inplace=True), cache.v[layer, :, :, : past + 1])  # [B, n_head, 1, head_dim]
        return out.reshape(b, cfg.n_embd)

    def _shared_decode_attention(
        self, q: np.ndarray, kv: np.ndarray, layer: int, cache: SharedPrefixCache, past: int
    ) -> np.ndarray:
        """A decoding step over [the shared prompt ; each row's own positions]: one softmax over both.

        The prompt's part is one [B, head_dim] x [head_dim, P] product per head for all rows at once.
        """
        # q [B, n_head, 1, head_dim] (scaled), kv [B, 2, n_head, head_dim] -> [B, n_embd]
        b, p, own = q.shape[0], cache.prefix.length, past - cache.prefix.length
        cache.own.k[layer, :, :, own] = kv[:, 0]
        cache.own.v[layer, :, :, own] = kv[:, 1]
        shared_k = cache.prefix.k[layer, 0, :, :p]  # [n_head, P, head_dim]
        shared_v = cache.prefix.v[layer, 0, :, :p]  # [n_head, P, head_dim]
        heads_q = q[:, :, 0].transpose(1, 0, 2)  # [n_head, B, head_dim]
        scores = np.empty((b, q.shape[1], 1, p + own + 1), F32)  # [B, n_head, 1, P+own+1]
        scores[:, :, 0, :p] = np.matmul(heads_q, shared_k.transpose(0, 2, 1)).transpose(1, 0, 2)  # [n_head, B, P] -> [B, n_head, P]
        scores[:, :, :, p:] = np.matmul(q, cache.own.k[layer, :, :, : own + 1].transpose(0, 1, 3, 2))  # [B, n_head, 1, own+1]
        probs = softmax(scores, inplace=True)
        out = np.matmul(probs[:, :, :, p:], cache.own.v[layer, :, :, : own + 1])  # [B, n_head, 1, head_dim]
        out[:, :, 0] += np.matmul(probs[:, :, 0, :p].transpose(1, 0, 2), shared_v).transpose(1, 0, 2)  # [B, n_head, head_dim]
        return out.reshape(b, self.config.n_embd)

    def _slot_decode_attention(self, q: np.ndarray, kv: np.ndarray, layer: int, cache: SlotCache) -> np.ndarray:
        """A decoding step of slots 0..n-1, each at its own position: its key and value written there,
        its query against its own keys only (cache.mask hides the positions past each slot's)."""
        # q [n, n_head, 1, head_dim] (scaled), kv [n, 2, n_head, head_dim] -> [n, n_embd]
        n = q.shape[0]
        positions = cache.lengths[:n]
        span = cache.mask.shape[-1]
        cache.k[layer, np.arange(n), :, positions] = kv[:, 0]  # [n, n_head, head_dim] into each slot's position
        cache.v[layer, np.arange(n), :, positions] = kv[:, 1]
        scores = np.matmul(q, cache.k[layer, :n, :, :span].transpose(0, 1, 3, 2))  # [n, n_head, 1, span]
        scores += cache.mask
        out = np.matmul(softmax(scores, inplace=True), cache.v[layer, :n, :, :span])  # [n, n_head, 1, head_dim]
        return out.reshape(n, self.config.n_embd)

    def _attend_heads(
        self, qkv: np.ndarray, bias: np.ndarray, layer: int, cache: KVCache, past: int, out: np.ndarray, h0: int, h1: int
    ) -> None:
        """Attention of heads h0:h1: their keys and values into the cache, their outputs into out."""
        # qkv [B, T, 3, n_head, head_dim], bias [3, n_head, head_dim] -> out[:, :, h0:h1] [B, T, heads, head_dim]
        t = qkv.shape[1]
        heads = slice(h0, h1)
        q = qkv[:, :, 0, heads]  # [B, T, heads, head_dim]
        q += bias[0, heads]
        q *= self._scale
        q = q.transpose(0, 2, 1, 3)  # [B, heads, T, head_dim]
        self._write_kv(qkv, bias, layer, cache, past, heads)
        k = cache.k[layer, :, heads, : past + t]  # [B, heads, past+T, head_dim]
        v = cache.v[layer, :, heads, : past + t]  # [B, heads, past+T, head_dim]
        heads_out = out[:, :, heads].transpose(0, 2, 1, 3)  # [B, heads, T, head_dim] view
        for start in range(0, t, _QUERY_TILE):
            stop = min(t, start + _QUERY_TILE)
            seen = past + stop  # keys the tile's last query sees
            scores = np.matmul(q[:, :, start:stop], k[:, :, :seen].transpose(0, 1, 3, 2))  # [B, heads, tile, seen]
            scores[..., past + start :] += self._tile_mask(stop - start)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            total = scores.sum(axis=-1, keepdims=True)  # [B, heads, tile, 1]
            tile_out = heads_out[:, :, start:stop]  # [B, heads, tile, head_dim] view
            np.matmul(scores, v[:, :, :seen], out=tile_out)
            tile_out /= total  # normalizing the [tile, head_dim] output, not the [tile, seen] scores

    def hidden_states(
        self, tokens: np.ndarray, cache: KVCache, progress: Progress | None = None, *, last_only: bool = False
    ) -> np.ndarray:
        """Runs the transformer over tokens, appending them to the cache: [B, T] -> [B, T, n_embd].

        last_only: the hidden state of the last position only, [B, 1, n_embd]. The last layer then
        computes just the keys and values of the other positions (all the cache needs): for a
        512-token prompt that skips 3 of the last layer's 4 products and most of its attention.
        progress(layers_done, n_layer) is called after each layer, for a caller that shows long prefills.
        """
        tokens = np.asarray(tokens)
        shortcut = last_only and tokens.shape[1] > 1
        layers = self.config.n_layer - 1 if shortcut else self.config.n_layer
        x, split, qkv = self._run_layers(tokens, cache, progress, layers)
        if shortcut:
            return self._last_layer_last_position(x, tokens.shape, cache, qkv, progress)
        return self._final_norm(x, tokens.shape, cache, split)

    def padded_hidden_states(self, rows: list[list[int]], cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
        """Prompts of different lengths in one pass (one GEMM per weight for all their tokens): each row
        right-padded to the longest, into the empty batch-len(rows) cache. -> (every position's hidden
        state [B, T_max, n_embd], the rows' lengths [B]).

        Row i's first len(rows[i]) positions, and their keys and values, are its own: attention is causal,
        so no position sees the padding after it. Past its length, a row's hidden states and cache
        positions hold the padding's (finite, never attended to once the caller records the lengths).
        """
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))  # [B]
        if len(rows) == 0 or lengths.min() < 1 or cache.length:
            raise ValueError("padded_hidden_states takes non-empty prompts into an empty cache")
        tokens = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)  # [B, T_max]; token 0 pads
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
        return self.hidden_states(tokens, cache), lengths

    def prefill_two_ways(
        self, tokens: np.ndarray, last: KVCache, every: KVCache, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both prefills of one prompt (batch 1, empty caches) from one pass over all layers but the last:
        into `last` as hidden_states(last_only=True) fills it, into `every` as hidden_states() does, bit
        for bit; returns (the last position's hidden state [1, 1, n_embd], every position's [1, T, n_embd]).

        Contrastive search compares candidates with every position's hidden state, the other decodings
        start from the last-position shortcut; the layers below the last are the same in both, so they
        run once and only the last layer runs twice (`compare` reads its prompt once).
        """
        tokens = np.asarray(tokens)
        b, t = tokens.shape
        if b != 1 or last.length or every.length:
            raise ValueError("prefill_two_ways fills two empty batch-1 caches")
        if t == 1:  # no shortcut: both are the whole pass
            h = self.hidden_states(tokens, every, progress)
            last.k[:, :, :, :1], last.v[:, :, :, :1], last.length = every.k[:, :, :, :1], every.v[:, :, :, :1], 1
            return h, h
        below = self.config.n_layer - 1
        x, split, qkv = self._run_layers(tokens, last, progress, below)
        every.k[:below, :, :, :t] = last.k[:below, :, :, :t]
        every.v[:below, :, :, :t] = last.v[:below, :, :, :t]
        full = x.copy()  # [T, n_embd]
        if split:  # the last layer from the products the split pass made for it (their keys and values kept)
            with threads.one_blas_thread():
                self._split_layer(full, qkv, below, every, b, t, 0)
        else:
            self._layer(full, below, every, b, t, 0)
        h_every = self._final_norm(full, tokens.shape, every, split)
        return self._last_layer_last_position(x, tokens.shape, last, qkv, None), h_every

    def _run_layers(
        self, tokens: np.ndarray, cache: KVCache, progress: Progress | None, layers: int
    ) -> tuple[np.ndarray, bool, np.ndarray | None]:
        """Embeds tokens [B, T] at the cache's next positions and runs the first `layers` layers over them,
        writing their keys and values. -> (the residual stream [B*T, n_embd], whether the pass ran split,
        and, from a split pass that stops below the last layer, the next layer's c_attn products
        [B*T, 3*n_embd], bias not added).

        (Computing only the keys' and values' columns for a last-position prefill's last layer would save
        ~0.7 % of a prompt's products, but a GEMM over other columns rounds differently, and compare's
        prefill_two_ways must give both prefills' bits from one pass.)"""
        cfg = self.config
        b, t = tokens.shape
        past = cache.length  # None for slots: each row at its own position
        x = self._wte[tokens.reshape(-1)]  # [B*T, n_embd]
        x.reshape(b, t, -1)[...] += self._wpe[cache.start(b, t, cfg.n_positions)]  # [T, n_embd] or, slots, [B, 1, n_embd]
        # Slots' decoding steps run on OpenBLAS's own threads, not split: a step's products have a few
        # dozen rows, and there OpenBLAS's threaded GEMM measured ~20% faster than column parts on two
        # engine threads (GPT-2 small, 16-48 rows, same run; benchmarks/README.md).
        if not (past is not None and self.splits(b * t)):
            for layer in range(layers):
                self._layer(x, layer, cache, b, t, past)
                if progress is not None:
                    progress(layer + 1, cfg.n_layer)
            return x, False, None
        n, d = b * t, cfg.n_embd
        with threads.one_blas_thread():
            qkv = np.empty((n, 3 * d), F32)  # [B*T, 3*n_embd]: each layer's c_attn products, one buffer for all
            self._row_parts(x, qkv, None, None, 0)
            attn = np.empty((n, d), F32)  # [B*T, n_embd]: each layer's attention output, one buffer for all
            for layer in range(layers):
                self._split_layer(x, qkv, layer, cache, b, t, past, attn=attn)
                if progress is not None:
                    progress(layer + 1, cfg.n_layer)
        return x, True, (qkv if layers < cfg.n_layer else None)

    def _split_layer(
        self, x: np.ndarray, qkv: np.ndarray, layer: int, cache: KVCache, b: int, t: int, past: int, *, attn: np.ndarray | None = None
    ) -> None:
        """One layer of a split pass, from its c_attn products qkv [B*T, 3*n_embd] (bias not added):
        attention by heads (into attn [B*T, n_embd] if given), then the rest in row parts, which go on to
        the next layer's layer norm and c_attn product into qkv; x [B*T, n_embd] is updated in place. The
        caller holds OpenBLAS to one thread.

        Two fork-joins a layer instead of one per step (seven): each part runs longer, so the threads wait
        on each other less often, and a part's rows stay in its core's cache from one step to the next. A
        512-token GPT-2 small prefill measured 1.075x faster (paired, same process; benchmarks/README.md).
        """
        attn = self._attention(qkv, self._blocks[layer].c_attn_bias, layer, cache, b, t, past, split=True, out=attn)  # [B*T, n_embd]
        self._row_parts(x, qkv, attn, layer, layer + 1 if layer + 1 < self.config.n_layer else None)

    def _row_parts(self, x: np.ndarray, qkv: np.ndarray, attn: np.ndarray | None, layer: int | None, nxt: int | None) -> None:
        """In row parts on the engine's threads: layer `layer`'s steps after attention (if not None), then
        layer nxt's ln_1 and c_attn product into qkv (if not None)."""

        def part(r0: int, r1: int) -> None:
            if layer is not None:
                self._rows_rest(x, attn, layer, r0, r1)
            if nxt is not None:
                self._rows_qkv(x, qkv, nxt, r0, r1)

        threads.split(part, len(x), calls_blas=True)

    def _rows_qkv(self, x: np.ndarray, qkv: np.ndarray, layer: int, r0: int, r1: int) -> None:
        """Rows r0..r1-1 of a layer's ln_1 and c_attn product into qkv, bias not added."""
        blk = self._blocks[layer]
        h = layer_norm_rows(x[r0:r1], blk.ln_1_weight, blk.ln_1_bias, self._eps)  # [r, n_embd]
        np.matmul(h, blk.c_attn_weight, out=qkv[r0:r1])

    def _rows_rest(self, x: np.ndarray, attn: np.ndarray, layer: int, r0: int, r1: int) -> None:
        """Rows r0..r1-1 of a layer after attention: attn.c_proj, the residual, ln_2, the MLP, the residual."""
        blk = self._blocks[layer]
        rows = x[r0:r1]  # [r, n_embd] view
        y = np.matmul(attn[r0:r1], blk.attn_c_proj_weight)  # [r, n_embd]
        y += blk.attn_c_proj_bias
        rows += y
        h = layer_norm_rows(rows, blk.ln_2_weight, blk.ln_2_bias, self._eps)  # [r, n_embd]
        fc = np.matmul(h, blk.c_fc_weight)  # [r, 4*n_embd]
        gelu_rows(fc, blk.c_fc_bias)
        y = np.matmul(fc, blk.mlp_c_proj_weight)  # [r, n_embd]
        y += blk.mlp_c_proj_bias
        rows += y

    def _last_layer_last_position(
        self, x: np.ndarray, shape: tuple[int, int], cache: KVCache, qkv: np.ndarray | None, progress: Progress | None
    ) -> np.ndarray:
        """The last layer of hidden_states(last_only=True): only the keys and values of positions but the
        last (from qkv, the products a split pass made for this layer, or computed here), then the last
        position alone, as a decoding step runs it. -> [B, 1, n_embd]"""
        cfg = self.config
        b, t = shape
        past, last = cache.length, cfg.n_layer - 1
        if qkv is not None:
            kv = qkv.reshape(b, t, 3, cfg.n_head, cfg.head_dim)[:, :-1]  # [B, T-1, 3, n_head, head_dim]
            self._write_kv(kv, self._blocks[last].c_attn_bias.reshape(3, cfg.n_head, cfg.head_dim), last, cache, past, slice(None))
        else:
            head = x.reshape(b, t, -1)[:, :-1].reshape(b * (t - 1), -1)  # [B*(T-1), n_embd]
            self._store_kv(head, last, cache, b, t - 1, past)
        x = np.ascontiguousarray(x.reshape(b, t, -1)[:, -1])  # [B, n_embd]
        self._layer(x, last, cache, b, 1, past + t - 1)
        if progress is not None:
            progress(cfg.n_layer, cfg.n_layer)
        return self._final_norm(x, (b, 1), cache, False, appended=t)

    def _final_norm(self, x: np.ndarray, shape: tuple[int, int], cache: KVCache, split: bool, appended: int | None = None) -> np.ndarray:
        """ln_f of the residual stream [B*T, n_embd] -> [B, T, n_embd]; the cache now holds the new positions."""
        b, t = shape
        cache.advance(t if appended is None else appended)
        return layer_norm(x, self._ln_f[0], self._ln_f[1], self._eps, split=split and t > 1).reshape(b, t, self.config.n_embd)

    @staticmethod
    def splits(rows: int) -> bool:
        """Whether a forward pass over this many rows runs split over the engine's threads.

        Only where OpenBLAS can be held to one thread for the whole pass: while OpenBLAS's own
        threads still spin after a product of theirs, a Python thread beside them slows both down
        (a prefill's attention measured 15% slower split than not).
        """
        return rows >= _SPLIT_ROWS and threads.workers() > 1 and threads.can_pin_blas()

    def _layer(self, x: np.ndarray, layer: int, cache: KVCache, b: int, t: int, past: int) -> None:
        """One transformer layer over positions past..past+T-1, on the caller's thread (OpenBLAS's own
        threads in the products); updates the residual stream x in place. A split pass runs its layers
        through _split_layer instead."""
        # x [B*T, n_embd]
        blk, eps = self._blocks[layer], self._eps
        h = layer_norm(x, blk.ln_1_weight, blk.ln_1_bias, eps)  # [B*T, n_embd]
        qkv = matmul(h, blk.c_attn_weight)  # [B*T, 3*n_embd]
        attn = self._attention(qkv, blk.c_attn_bias, layer, cache, b, t, past)  # [B*T, n_embd]
        x += linear(attn, blk.attn_c_proj_weight, blk.attn_c_proj_bias)
        h = layer_norm(x, blk.ln_2_weight, blk.ln_2_bias, eps)  # [B*T, n_embd]
        fc = gelu_new(matmul(h, blk.c_fc_weight), blk.c_fc_bias)  # [B*T, 4*n_embd]
        x += linear_t(fc, self._mlp_proj_layout(layer), blk.mlp_c_proj_bias)

    def _mlp_proj_layout(self, layer: int) -> np.ndarray:
        """mlp.c_proj's weight of this layer laid out [n_embd, 4*n_embd] (a copy of the checkpoint's
        [4*n_embd, n_embd], made for every layer at the first pass that is not split).

        A decoding token's product with the checkpoint's tall [3072, 768] layout reads every weight row
        in two strided halves (OpenBLAS's two threads split its 768 outputs); laid out [768, 3072], each
        thread reads a contiguous half of the weight: a whole GPT-2 small decoding token measured 13-14 %
        faster (26.8 against 30.8 ms and 32.2 against 36.1, paired medians of 8 and 10), steps of 2-8
        rows 2-10 %, for 113 MB (small; 2 GB at xl) and 0.1-0.2 s at a process's first decoding step.
        Long prompts' split passes keep the checkpoint's layout, so scoring long texts makes no copy.
        """
        if self._mlp_proj_t is None:
            self._mlp_proj_t = [transposed(blk.mlp_c_proj_weight) for blk in self._blocks]
        return self._mlp_proj_t[layer]

    def _store_kv(self, x: np.ndarray, layer: int, cache: KVCache, b: int, t: int, past: int) -> None:
        """Only the keys and values of one layer for positions past..past+T-1, into the cache."""
        # x [B*T, n_embd] (the residual stream entering the layer)
        cfg, blk = self.config, self._blocks[layer]
        h = layer_norm(x, blk.ln_1_weight, blk.ln_1_bias, self._eps)  # [B*T, n_embd]
        qkv = matmul(h, blk.c_attn_weight)  # [B*T, 3*n_embd]
        qkv = qkv.reshape(b, t, 3, cfg.n_head, cfg.head_dim)  # [B, T, 3, n_head, head_dim]
        self._write_kv(qkv, blk.c_attn_bias.reshape(3, cfg.n_head, cfg.head_dim), layer, cache, past, slice(None))

    @staticmethod
    def _write_kv(qkv: np.ndarray, bias: np.ndarray, layer: int, cache: KVCache, past: int, heads: slice) -> None:
        """Keys and values of positions past..past+T-1 for these heads into the cache; the bias add is the copy."""
        # qkv [B, T, 3, n_head, head_dim] (bias not yet added), bias [3, n_head, head_dim]
        t = qkv.shape[1]
        for cache_part, i in ((cache.k, 1), (cache.v, 2)):
            np.add(qkv[:, :, i, heads].transpose(0, 2, 1, 3), bias[i, heads][:, None], out=cache_part[layer, :, heads, past : past + t])

    def logits(self, h: np.ndarray) -> np.ndarray:
        """[..., n_embd] @ wte.T -> [..., vocab_size], through the LM head's own copy of wte laid out
        [n_embd, vocab] (kernels.lm_head_layout), made once, at the first call: every logit of the
        process comes from the same layout, so the same rows give the same bits whatever ran before."""
        if self._lm_head is None:
            self._lm_head = lm_head_layout(self._wte)
        rows = np.ascontiguousarray(h, dtype=F32).reshape(-1, self._wte.shape[1])  # [N, n_embd]
        return lm_head(rows, self._lm_head).reshape(*h.shape[:-1], self._wte.shape[0])

    def forward(
        self, tokens: np.ndarray, cache: KVCache, *, all_logits: bool = False, progress: Progress | None = None
    ) -> np.ndarray:
        """Appends tokens [B, T] to the cache; logits of the last position [B, V] (or all: [B, T, V])."""
        if all_logits:
            return self.logits(self.hidden_states(tokens, cache, progress))  # [B, T, V]
        return self.logits(self.hidden_states(tokens, cache, progress, last_only=True)[:, -1])  # [B, V]

"""The engine's numerical kernels: layer norm, GELU, the product routes and the weight layouts they
read, softmax and the log-probabilities.

Everything is float32; nothing here prints or touches files. Decoding is bound by reading every
weight once per token, so these add as little as possible to the matrix products; each route and
constant was chosen by measurement (benchmarks/README.md has the figures).
"""

from __future__ import annotations

import numpy as np

from gpt2cli.engine import threads

F32 = np.float32
# gelu_new's constants, folded (sqrt(2/pi) and sqrt(2/pi) * 0.044715), as float32 so that no float64
# scalar upcasts an activation (NEP 50).
_GELU_C = F32(0.7978845608028654)
_GELU_AC = F32(0.7978845608028654 * 0.044715)
# GELU's form follows what numpy's float32 tanh costs on this CPU. numpy has a vectorised tanh where it
# can use AVX-512 (Skylake-X and later): there 0.5 x (1 + tanh(z)) measured faster than the exp form
# (1.8 vs 2.0 ms for [512, 3072] on an Intel Xeon). Elsewhere its tanh is slow (AMD EPYC, AVX2:
# 4.6 ns a value, exp 2.4), and x / (1 + exp(-2z)), the same function (0.5 (1 + tanh(z)) is the
# logistic sigmoid of 2z), measured faster: 3.8 against 6.4 ns a value, a 16-row decoding step 3.2 ms
# less. The choice is fixed per machine, so a machine's results never change between runs.
try:
    from numpy._core._multiarray_umath import __cpu_features__ as _cpu

    _GELU_TANH = bool(_cpu.get("AVX512_SKX"))
except ImportError:  # numpy's private feature table moved: the exp form, right everywhere
    _GELU_TANH = False


# exp's argument is held below this, so that a very negative x gives x / (1 + 1.7e38) = -0.0 with no
# overflow (exp(88) is still a finite float32).
_GELU_EXP_MAX = F32(88.0)

# Elementwise passes over a long prompt's activations run on row slices of about this many floats,
# so that a slice and its scratch stay in L2 between passes (GELU on 512 rows: 1.8 ms, not 3.3 ms).
_SLICE_FLOATS = 96 * 1024
# OpenBLAS's sgemm packs the whole weight matrix on every call, so a product with a handful of rows
# costs several single-row products. Two rows get a gemv each over ~2 MiB row blocks of the weight
# instead, so the second row finds the block in L2 cache (GPT-2 small's block products: 36 ms against
# 43 for a GEMM); from 3 rows a (padded, below) GEMM is faster (AMD EPYC, same run: 3 rows 42 vs 45 ms,
# 4 rows 42 vs 50, 8 rows 42 vs 88).
_FEW_ROWS = 2
# With OpenBLAS's two threads, a GEMM whose row count is a multiple of 8 runs fastest for its size:
# GPT-2 small's block products measured 42 ms at 8 rows against 61 at 6, 55 at 16 against 76 at 14,
# 98 at 48 against 129 at 46 (median of 6 runs, every count from 1 to 72; 8k+1 rows cost about what
# 8k do). So a GEMM of fewer than _PAD_BELOW rows runs with zero rows added up to the next multiple of
# _GEMM_ROWS, unless it is one past a multiple (whole decoding steps: 6 rows 71 instead of 103 ms,
# 8 rows 77 instead of 114 (the old few-row route), 30 rows 198 instead of 218). A row's result does
# not depend on the rows beside it except in rounding, as for any product of several rows.
_GEMM_ROWS = 8
_PAD_BELOW = 128
# The LM head ([n_embd, vocab], lm_head_layout) is one gemv per row up to this many rows, a GEMM from
# there: its columns cannot be blocked for the cache (each is a strided read), and a GEMM over it
# measured faster than gemvs from 3 rows on (GPT-2 small: 3 rows 22.7 vs 23.1 ms, 4 rows 20.5 vs 30.6;
# padded as gemm_rows() says, 3 to 7 rows now cost what 8 do: 15 ms against 17-24).
_LM_HEAD_GEMV_ROWS = 2
# transposed() (the LM head's copy of wte, mlp.c_proj's copies) moves rows to columns this many at a
# time, in parts on the engine's threads:
# numpy's own copy of the whole transposed view (np.ascontiguousarray(wte.T)) took 0.74 s for GPT-2
# small's wte; blocks of 1024 rows 0.10 s, of 128 rows 0.10 s on one thread and 0.05 s on two.
_TRANSPOSE_ROWS = 128
# ~2 MiB: small enough for L2, big enough that OpenBLAS still runs each gemv on all its threads.
_BLOCK_FLOATS = 512 * 1024


def row_slices(n_rows: int, row_len: int, floats: int) -> list[slice]:
    """Consecutive slices of range(n_rows), each about `floats` floats of rows of row_len."""
    step = max(1, floats // max(row_len, 1))
    return [slice(i, i + step) for i in range(0, n_rows, step)]


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, *, split: bool = False) -> np.ndarray:
    # [..., n_embd] -> [..., n_embd] (a new array); split: in row parts on the engine's threads
    n = x.shape[-1]
    if split:
        rows = x.reshape(-1, n)  # [N, n_embd]
        out = np.empty_like(rows)  # [N, n_embd]

        def part(start: int, stop: int) -> None:
            out[start:stop] = layer_norm_rows(rows[start:stop], weight, bias, eps)

        threads.split(part, len(rows))
        return out.reshape(x.shape)
    return layer_norm_rows(x, weight, bias, eps)


def layer_norm_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    # [..., n_embd] -> [..., n_embd] (a new array)
    n = x.shape[-1]
    if x.size == n:  # one row (decoding): scalar statistics, 6 array operations in all
        centered = x - F32(np.add.reduce(x, axis=None) / F32(n))  # [..., n_embd]
        var = np.dot(centered.ravel(), centered.ravel()) / F32(n)  # float32 scalar
        centered *= weight * (F32(1.0) / np.sqrt(var + F32(eps)))
        centered += bias
        return centered
    mean = np.add.reduce(x, axis=-1, keepdims=True)  # [..., 1]
    mean *= F32(1.0 / n)
    centered = x - mean  # [..., n_embd]
    var = np.einsum("...i,...i->...", centered, centered)[..., None]  # [..., 1]
    var *= F32(1.0 / n)
    var += F32(eps)
    np.sqrt(var, out=var)
    centered /= var
    centered *= weight
    centered += bias
    return centered


def gelu_new(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """GPT-2's tanh GELU of x (+ bias), in place on x (a fresh activation buffer): [..., n] -> [..., n]."""
    gelu_rows(x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1), bias)
    return x


def gelu_rows(rows: np.ndarray, bias: np.ndarray | None) -> None:
    # [N, n] (any strides), in place
    tanh_form = _GELU_TANH
    # z = sqrt(2/pi) (x + 0.044715 x^3) = x (c + ac x^2); the exp form takes -2z, the -2 folded in here
    c, ac = (_GELU_C, _GELU_AC) if tanh_form else (F32(-2.0) * _GELU_C, F32(-2.0) * _GELU_AC)
    scratch = np.empty((min(len(rows), max(1, _SLICE_FLOATS // rows.shape[1])), rows.shape[1]), F32)
    for part in row_slices(len(rows), rows.shape[1], _SLICE_FLOATS):
        xs = rows[part]  # [r, n]
        t = scratch[: len(xs)]  # [r, n]
        if bias is not None:  # c_fc's bias, added here while the slice is in cache
            xs += bias
        np.multiply(xs, xs, out=t)
        t *= ac
        t += c
        t *= xs
        if tanh_form:  # x (0.5 + 0.5 tanh(z))
            np.tanh(t, out=t)
            t *= F32(0.5)
            t += F32(0.5)
            xs *= t
        else:  # x / (1 + exp(-2z))
            np.minimum(t, _GELU_EXP_MAX, out=t)
            np.exp(t, out=t)
            t += F32(1.0)
            xs /= t


def matmul(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x @ weight by the fastest route for x's number of rows: one gemv, two rows' blocked gemvs, or a
    padded GEMM (gemm).

    weight [n_in, n_out] (Conv1D's layout): [N, n_in] -> [N, n_out] (a new array).
    """
    n = x.shape[0]
    if n == 1:
        out = np.empty((n, weight.shape[1]), F32)
        np.dot(x[0], weight, out=out[0])
    elif n <= _FEW_ROWS:
        out = np.empty((n, weight.shape[1]), F32)
        _few_rows_matmul(x, weight, out)
    else:
        out = gemm(x, weight)
    return out


def gemm_rows(n: int) -> int:
    """The rows a GEMM of n rows runs with: n, or n padded with zero rows up to a multiple of _GEMM_ROWS."""
    if n < _PAD_BELOW and n % _GEMM_ROWS > 1:
        return n + _GEMM_ROWS - n % _GEMM_ROWS
    return n


def gemm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x @ weight as one GEMM, its rows padded as gemm_rows() says: [N, n_in] -> [N, n_out] (a view of the
    first N rows of a new C-contiguous array, itself C-contiguous)."""
    n = x.shape[0]
    rows = gemm_rows(n)
    out = np.empty((rows, weight.shape[1]), F32)
    if rows != n:
        padded = np.zeros((rows, x.shape[1]), F32)
        padded[:n] = x
        x = padded
    np.dot(x, weight, out=out)
    return out[:n]


def _few_rows_matmul(x: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
    """out[i] = x[i] @ weight, one gemv per row and ~2 MiB block of weight's rows (contiguous in memory),
    the blocks' partial products summed."""
    # x [N, n_in] -> out [N, n_out]
    blocks = row_slices(weight.shape[0], weight.shape[1], _BLOCK_FLOATS)
    if len(blocks) == 1:
        for i in range(len(x)):
            np.dot(x[i], weight, out=out[i])
        return
    partial = np.empty((len(blocks), *out.shape), F32)  # [n_blocks, N, n_out]
    for part, block in zip(partial, blocks):
        w = weight[block]  # [rows of the block, n_out]
        for i in range(len(x)):
            np.dot(x[i, block], w, out=part[i])
    np.add.reduce(partial, axis=0, out=out)


def transposed(w: np.ndarray) -> np.ndarray:
    """A new C-contiguous copy of w [r, c] laid out [c, r], made in blocks of rows on the engine's threads
    (numpy's own np.ascontiguousarray(w.T) took 0.74 s for GPT-2 small's wte, this 0.05-0.1 s)."""
    out = np.empty(w.shape[::-1], F32)  # [c, r]

    def part(start: int, stop: int) -> None:  # rows start..stop-1 of w into columns of out
        for i in range(start, stop, _TRANSPOSE_ROWS):
            j = min(stop, i + _TRANSPOSE_ROWS)
            out[:, i:j] = w[i:j].T

    threads.split(part, w.shape[0])
    return out


def lm_head_layout(wte: np.ndarray) -> np.ndarray:
    """The LM head's weight: wte [vocab, n_embd] transposed into a new C-contiguous [n_embd, vocab].

    Logits as x @ W[n_embd, vocab] measured 6-11 % faster per decoding token than x @ wte.T (GPT-2
    small, batch 1; ~35 % at 16 rows: 21 vs 33.5 ms), for one copy of wte (+154 MB, made in ~0.05-0.3 s:
    the copy itself and the new memory's first page faults, which vary most on a VM).
    """
    return transposed(wte)


def matmul_t(x: np.ndarray, weight_t: np.ndarray) -> np.ndarray:
    """x @ weight_t.T, the weight laid out [n_out, n_in]: [N, n_in] -> [N, n_out] (a new array, or the
    first N rows of one). One row: a gemv that reads the weight's rows whole (each of OpenBLAS's threads a
    contiguous half of the weight); two: a gemv each over ~2 MiB blocks of rows; more: a padded GEMM."""
    n = x.shape[0]
    if n > _FEW_ROWS:
        return gemm(x, weight_t.T)
    out = np.empty((n, weight_t.shape[0]), F32)
    if n == 1:
        np.dot(weight_t, x[0], out=out[0])
        return out
    for block in row_slices(weight_t.shape[0], weight_t.shape[1], _BLOCK_FLOATS):
        w = weight_t[block]  # [rows of the block, n_in], contiguous
        for i in range(n):
            np.dot(w, x[i], out=out[i, block])
    return out


def lm_head(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Logits x @ weight (lm_head_layout's [n_embd, vocab]): [N, n_embd] -> [N, vocab] (a new array)."""
    if x.shape[0] > _LM_HEAD_GEMV_ROWS:
        return gemm(x, weight)
    out = np.empty((x.shape[0], weight.shape[1]), F32)
    for i in range(x.shape[0]):
        np.dot(x[i], weight, out=out[i])
    return out


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    # [N, n_in] @ [n_in, n_out] + [n_out] -> [N, n_out] (a new array)
    out = matmul(x, weight)
    out += bias
    return out


def linear_t(x: np.ndarray, weight_t: np.ndarray, bias: np.ndarray) -> np.ndarray:
    # [N, n_in] @ [n_out, n_in].T + [n_out] -> [N, n_out] (a new array): linear() for a weight laid out [n_out, n_in]
    out = matmul_t(x, weight_t)
    out += bias
    return out


def softmax(x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    # [..., n] -> [..., n] float32 probabilities, rows summing to 1; inplace reuses x
    out = x if inplace else x.copy()
    out -= out.max(axis=-1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def token_logprobs(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log_softmax(logits)[i, tokens[i]] for each row i of logits [N, V], bit for bit, without writing
    the [N, V] log-probabilities: row by row, 4 passes over a row that stays in cache, instead of
    log_softmax's 10 over all of them (a 64-row batch step: 10-12 ms instead of 16-19). -> [N] float32."""
    out = np.empty(logits.shape[0], F32)  # [N]
    for i, row in enumerate(logits):  # row [V]
        top = row.max()
        shifted = row - top  # [V]
        np.exp(shifted, out=shifted)
        out[i] = (row[tokens[i]] - top) - np.log(shifted.sum())  # the sum as log_softmax takes it
    return out


def log_softmax(logits: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """[..., V] -> [..., V] log-probabilities, float32; inplace reuses a logits buffer nobody needs."""
    out = logits if inplace else logits.copy()
    out -= out.max(axis=-1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=-1, keepdims=True))
    return out

"""Fused causal attention (`attention = "flash"`): softmax(q·kᵀ·scale, causal) @ v as one op that keeps no scores.

FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023) computes the attention core without ever holding the
(s × t) score matrix: forward walks the keys in tiles with an online softmax (a running row maximum m and row sum l)
and keeps, besides q, k, v and its output, only the softmax's log-sum-exp L = m + log l, one value per query row
(b·a·s floats); backward recomputes each tile's probabilities P = exp(q·kᵀ·scale − L) from them and forms
dV = Pᵀ·dO, dS = P ∘ (dO·vᵀ − D) with D = rowsum(dO ∘ O), dQ = dS·k·scale, dK = dSᵀ·q·scale, as its backward does.

Here the tiles run over the keys only (`KEY_TILE` keys at a time, every query row at once), so the op's scratch is
linear in s: a tile of scores (b·a·s·KEY_TILE values), a copy of q (scaled) and, in backward, of dO, the running
statistics, and a float32 accumulator for the output (dQ in backward) when that is 16-bit, as FlashAttention-2's
backward keeps a float32 dq_accum. Every such buffer is reported as the op's workspace (`ctx.workspace`, the ledger's
`flash_attention.<role>`), a temporary while the op runs, never an activation. Tiles wholly above the diagonal are
skipped (their keys' gradients are zero).

Grouped-query attention without repeating K and V: q is (b, a, s, d), k and v are (b, kv, t, d) with kv dividing a;
each group's a / kv query heads are stacked as the rows of one matrix per K/V head, (b, kv, g·s, d), as the eager
Llama path does. `offset`: the position of the first query among the keys (a KV cache's length before this forward);
query i sees keys 0..offset + i.

Dtypes: the arithmetic is in float32 for 16-bit operands (float64 for float64 ones: `precision.compute_dtype`), the
output and the gradients are rounded once into the operands' dtypes, and the log-sum-exp is kept in the compute
dtype (FlashAttention keeps it in float32). Shape-only predictor: the same buffers are made and reported, and the
loops, which allocate nothing the ledger sees, are skipped (as `emulate.matmul` does).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..engine import Node, Function
from ..precision import compute_dtype
from .emulate import is_real

KEY_TILE = 128  # keys per tile: bounds the scores' scratch to b·a·s·KEY_TILE values (FlashAttention's block size)


class FlashAttention(Function):
    """Causal softmax(q·kᵀ·scale)·v in key tiles; saves q, k, v, the output and the log-sum-exp (see the module
    docstring). `scale`: default 1/√d."""

    name = "flash_attention"

    @staticmethod
    def forward(ctx: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, *, offset: int = 0,
                scale: float | None = None) -> np.ndarray:
        b, a, s, d = _check(q, k, v)
        kv, t = k.shape[1], k.shape[2]
        work = _work_dtype(q, k, v)
        ctx.offset, ctx.scale = int(offset), 1.0 / math.sqrt(d) if scale is None else float(scale)
        out = np.empty((b, a, s, d), dtype=np.result_type(q.dtype, k.dtype, v.dtype), like=q)
        lse = np.empty((b, a, s), dtype=work, like=q)
        tile = max(1, min(KEY_TILE, t))
        query = ctx.workspace(np.empty((b, a, s, d), dtype=work, like=q), "query")
        keys = ctx.workspace(np.empty(b * kv * tile * d, dtype=work, like=q), "key_tile")
        values = ctx.workspace(np.empty(b * kv * tile * d, dtype=work, like=q), "value_tile")
        scores = ctx.workspace(np.empty(b * a * s * tile, dtype=work, like=q), "scores")
        acc = out if out.dtype == work else ctx.workspace(np.empty(out.shape, dtype=work, like=q), "accumulator")
        product = ctx.workspace(np.empty((b, a, s, d), dtype=work, like=q), "product")
        row_sum = ctx.workspace(np.empty((b, a, s), dtype=work, like=q), "row_sum")
        row_new = ctx.workspace(np.empty((b, a, s), dtype=work, like=q), "row_max")
        mask = ctx.workspace(np.empty(s * tile, dtype=bool, like=q), "mask")
        ctx.result(out)
        recording = ctx.parents is not None
        if recording:
            ctx.result(lse)  # kept for backward
        else:
            ctx.workspace(lse, "lse")  # inference: dropped with the op's scratch
        if is_real(out):
            _forward_tiles(q, k, v, ctx.scale, ctx.offset, tile, out, lse,
                           (query, keys, values, scores, acc, product, row_sum, row_new, mask))
        ctx.save(q=q, k=k, v=v, out=out, lse=lse)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        q, k, v, out, lse = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad
        (b, a, s, d), (kv, t) = q.shape, k.shape[1:3]
        work = lse.dtype
        tile = max(1, min(KEY_TILE, t))
        grad_q = ctx.result(np.empty(q.shape, dtype=q.dtype, like=q)) if need_q else None
        grad_k = ctx.result(np.empty(k.shape, dtype=k.dtype, like=k)) if need_k else None
        grad_v = ctx.result(np.empty(v.shape, dtype=v.dtype, like=v)) if need_v else None
        query = ctx.workspace(np.empty((b, a, s, d), dtype=work, like=q), "query")
        grad_out = ctx.workspace(np.empty((b, a, s, d), dtype=work, like=q), "grad_out")
        keys = ctx.workspace(np.empty(b * kv * tile * d, dtype=work, like=q), "key_tile")
        values = ctx.workspace(np.empty(b * kv * tile * d, dtype=work, like=q), "value_tile")
        probs = ctx.workspace(np.empty(b * a * s * tile, dtype=work, like=q), "scores")
        grad_probs = ctx.workspace(np.empty(b * a * s * tile, dtype=work, like=q), "grad_scores")
        acc = None if grad_q is None else grad_q if grad_q.dtype == work else \
            ctx.workspace(np.empty(q.shape, dtype=work, like=q), "accumulator")
        product = ctx.workspace(np.empty((b, a, s, d), dtype=work, like=q), "product")
        key_grad = ctx.workspace(np.empty(b * kv * tile * d, dtype=work, like=q), "key_grad_tile")
        value_grad = ctx.workspace(np.empty(b * kv * tile * d, dtype=work, like=q), "value_grad_tile")
        delta = ctx.workspace(np.empty((b, a, s), dtype=work, like=q), "delta")
        mask = ctx.workspace(np.empty(s * tile, dtype=bool, like=q), "mask")
        if is_real(lse):
            _backward_tiles(q, k, v, out, lse, grad, ctx.scale, ctx.offset, tile, (grad_q, grad_k, grad_v),
                            (query, grad_out, keys, values, probs, grad_probs, acc, product, key_grad, value_grad,
                             delta, mask))
        return grad_q, grad_k, grad_v


def _check(q: Any, k: Any, v: Any) -> tuple[int, int, int, int]:
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"flash_attention takes q (b, a, s, d) and k, v (b, kv, t, d), got shapes {q.shape}, "
                         f"{k.shape} and {v.shape}")
    b, a, s, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or k.shape[1] < 1 or a % k.shape[1]:
        raise ValueError(f"flash_attention: k and v (b, kv, t, d) must match q (b, a, s, d) with kv dividing a, got "
                         f"q {q.shape} and k {k.shape}")
    return b, a, s, d


def _work_dtype(*arrays: Any) -> np.dtype:
    """float32 for 16-bit and float32 operands, float64 when one is float64."""
    return np.result_type(*(compute_dtype(x.dtype) for x in arrays))


def _view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first elements of a 1-d scratch buffer shaped as `shape` (a view)."""
    return buffer[: math.prod(shape)].reshape(shape)


def _tiles(s: int, t: int, offset: int, tile: int) -> list[tuple[int, int]]:
    """(start, stop) of the key tiles some query sees (query i sees keys ≤ offset + i): the rest are skipped."""
    return [(j, min(j + tile, t)) for j in range(0, min(t, offset + s), tile)]


def _mask(buffer: np.ndarray, s: int, start: int, stop: int, offset: int) -> np.ndarray | None:
    """The (s, stop − start) boolean of the keys start..stop-1 above the diagonal (key > offset + query), or None
    when every query sees every key of the tile."""
    if stop - 1 <= offset:
        return None
    above = _view(buffer, (s, stop - start))
    np.greater(np.arange(start, stop)[None, :], np.arange(offset, offset + s)[:, None], out=above)
    return above


def _forward_tiles(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, offset: int, tile: int,
                   out: np.ndarray, lse: np.ndarray, scratch: tuple) -> None:
    """The online softmax over key tiles (a function of its own: the scratch's views die with it, before the scratch,
    the same way on every path). lse holds the running row maximum until the end."""
    query, keys, values, scores, acc, product, row_sum, row_new, mask = scratch
    (b, a, s, d), (kv, t) = q.shape, k.shape[1:3]
    rows = a // kv * s  # a group's query heads stacked: (b, kv, g·s, d)
    np.copyto(query, q, casting="unsafe")
    query *= scale
    grouped_q = query.reshape(b, kv, rows, d)
    grouped_acc, grouped_product = acc.reshape(b, kv, rows, d), product.reshape(b, kv, rows, d)
    tiles = _tiles(s, t, offset, tile)
    if not tiles:  # no keys: an empty softmax, a zero output
        acc.fill(0)
        lse.fill(-np.inf)
    for number, (start, stop) in enumerate(tiles):
        n = stop - start
        k_tile, v_tile = _view(keys, (b, kv, n, d)), _view(values, (b, kv, n, d))
        np.copyto(k_tile, k[:, :, start:stop], casting="unsafe")
        np.copyto(v_tile, v[:, :, start:stop], casting="unsafe")
        grouped = _view(scores, (b, kv, rows, n))
        np.matmul(grouped_q, np.swapaxes(k_tile, -1, -2), out=grouped)
        tile_scores = grouped.reshape(b, a, s, n)
        above = _mask(mask, s, start, stop, offset)
        if above is not None:
            np.copyto(tile_scores, -np.inf, where=above)
        if number == 0:  # key 0 is in it: every row's maximum is finite from here on
            np.max(tile_scores, axis=-1, out=lse)
            tile_scores -= lse[..., None]
            np.exp(tile_scores, out=tile_scores)
            np.add.reduce(tile_scores, axis=-1, out=row_sum)
            np.matmul(grouped, v_tile, out=grouped_acc)
            continue
        np.max(tile_scores, axis=-1, out=row_new)
        np.maximum(row_new, lse, out=row_new)  # the new running maximum
        np.subtract(lse, row_new, out=lse)
        np.exp(lse, out=lse)  # exp(old − new): rescales what was summed so far
        row_sum *= lse
        acc *= lse[..., None]
        np.copyto(lse, row_new)
        tile_scores -= lse[..., None]
        np.exp(tile_scores, out=tile_scores)
        np.add.reduce(tile_scores, axis=-1, out=row_new)
        row_sum += row_new
        np.matmul(grouped, v_tile, out=grouped_product)
        acc += product
    if tiles:
        acc /= row_sum[..., None]
        np.log(row_sum, out=row_sum)
        lse += row_sum  # m + log l
    if acc is not out:
        np.copyto(out, acc, casting="unsafe")


def _backward_tiles(q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray, lse: np.ndarray, grad: np.ndarray,
                    scale: float, offset: int, tile: int, grads: tuple, scratch: tuple) -> None:
    """FlashAttention's backward over key tiles: each tile's probabilities recomputed from the log-sum-exp."""
    grad_q, grad_k, grad_v = grads
    query, grad_out, keys, values, probs, grad_probs, acc, product, key_grad, value_grad, delta, mask = scratch
    (b, a, s, d), (kv, t) = q.shape, k.shape[1:3]
    rows = a // kv * s
    np.copyto(query, q, casting="unsafe")
    query *= scale
    np.copyto(grad_out, grad, casting="unsafe")
    np.copyto(product, out, casting="unsafe")
    product *= grad_out
    np.add.reduce(product, axis=-1, out=delta)  # D = rowsum(dO ∘ O)
    grouped_q, grouped_grad = query.reshape(b, kv, rows, d), grad_out.reshape(b, kv, rows, d)
    grouped_product = product.reshape(b, kv, rows, d)
    grouped_acc = None if acc is None else acc.reshape(b, kv, rows, d)
    for g in (grad_k, grad_v):
        if g is not None:
            g.fill(0)  # the keys no query sees (tiles skipped below)
    tiles = _tiles(s, t, offset, tile)
    if not tiles and acc is not None:
        acc.fill(0)
    for number, (start, stop) in enumerate(tiles):
        n = stop - start
        k_tile, v_tile = _view(keys, (b, kv, n, d)), _view(values, (b, kv, n, d))
        np.copyto(k_tile, k[:, :, start:stop], casting="unsafe")
        np.copyto(v_tile, v[:, :, start:stop], casting="unsafe")
        grouped_p, grouped_dp = _view(probs, (b, kv, rows, n)), _view(grad_probs, (b, kv, rows, n))
        np.matmul(grouped_q, np.swapaxes(k_tile, -1, -2), out=grouped_p)
        p = grouped_p.reshape(b, a, s, n)
        above = _mask(mask, s, start, stop, offset)
        if above is not None:
            np.copyto(p, -np.inf, where=above)
        p -= lse[..., None]
        np.exp(p, out=p)  # P = exp(S − L), zero above the diagonal
        if grad_v is not None:
            dv = _view(value_grad, (b, kv, n, d))
            np.matmul(np.swapaxes(grouped_p, -1, -2), grouped_grad, out=dv)  # Pᵀ·dO, summed over the group
            np.copyto(grad_v[:, :, start:stop], dv, casting="unsafe")
        np.matmul(grouped_grad, np.swapaxes(v_tile, -1, -2), out=grouped_dp)  # dP = dO·vᵀ
        dp = grouped_dp.reshape(b, a, s, n)
        dp -= delta[..., None]
        dp *= p  # dS = P ∘ (dP − D), with the scale folded into the query copy
        if grad_k is not None:
            dk = _view(key_grad, (b, kv, n, d))
            np.matmul(np.swapaxes(grouped_dp, -1, -2), grouped_q, out=dk)  # dSᵀ·(q·scale)
            np.copyto(grad_k[:, :, start:stop], dk, casting="unsafe")
        if grad_q is not None:
            if number == 0:
                np.matmul(grouped_dp, k_tile, out=grouped_acc)
            else:
                np.matmul(grouped_dp, k_tile, out=grouped_product)
                acc += product
    if grad_q is not None:
        acc *= scale
        if acc is not grad_q:
            np.copyto(grad_q, acc, casting="unsafe")

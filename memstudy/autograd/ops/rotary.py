"""Rotary position embedding (Su et al. 2021) in transformers' rotate-half form, and the angle tables it reads."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from ..precision import FLOAT32, dtype as as_dtype, is_low
from .chunks import blocks, part, scratch
from .emulate import load, store


class RotaryTables(Function):
    """cos and sin of the rotary angles of positions 0..s−1 as one (2, s, d) array: [0] is cos, [1] is sin.

    transformers' default rope: inv_freq_i = theta^(−2i/d) for i < d/2, angle(p, j) = p · inv_freq_(j mod d/2)
    (`emb = cat(freqs, freqs)`), computed in float32 as `LlamaRotaryEmbedding` does (in float64 for a float64 model,
    where the float32 step would lose what the model keeps), then cast to `dtype`. Takes no gradient and saves
    nothing: it runs once per forward, and every layer's `Rotary` saves views of its one output buffer (the ledger
    sees that buffer made by this op, `rotary_tables`, and held for backward by `rotary`).
    Shape-only predictor: the same numpy calls on shape-only arrays give the table's shape and dtype.
    """

    name = "rotary_tables"

    @staticmethod
    def forward(ctx: Node, positions: np.ndarray, *, dim: int, theta: float, dtype: str | np.dtype) -> np.ndarray:
        if dim < 2 or dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {dim}")
        dtype = as_dtype(dtype)
        compute = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
        half = dim // 2
        inv_freq = np.arange(0, dim, 2, dtype=compute, like=positions)
        inv_freq /= dim
        inv_freq = np.power(compute.type(theta), inv_freq)  # theta ** (2i / d), in `compute` (NEP 50)
        np.divide(1, inv_freq, out=inv_freq)
        freqs = np.multiply(positions.astype(compute)[:, None], inv_freq[None, :])  # (s, d/2)
        out = np.empty((2, positions.shape[0], dim), dtype=dtype, like=positions)
        for row, fn in ((0, np.cos), (1, np.sin)):
            values = fn(freqs)
            np.copyto(out[row, :, :half], values, casting="unsafe")
            np.copyto(out[row, :, half:], values, casting="unsafe")
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:  # pragma: no cover - positions are integers
        return (None,)


def _table_index(index: tuple, x_ndim: int, table_shape: tuple[int, ...]) -> tuple:
    """The index of a table (broadcast against x) that matches x's block `index` (from `chunks.blocks`)."""
    if index == (Ellipsis,):
        return index
    offset = x_ndim - len(table_shape)
    out = []
    for axis, entry in enumerate(index):
        t_axis = axis - offset
        if t_axis < 0:
            continue  # an axis the table does not have: it broadcasts
        if table_shape[t_axis] == 1:
            out.append(0 if isinstance(entry, int) else slice(None))  # a broadcast axis of length 1
        else:
            out.append(entry)
    return tuple(out) + (Ellipsis,)


class Rotary(Function):
    """x · cos + rotate_half(x) · sin over the last axis d, rotate_half(x) = concat(−x[..., d/2:], x[..., :d/2])
    (transformers' `apply_rotary_pos_emb`). x is (..., s, d) (a (b, heads, s, d) query or key); cos and sin are
    (s, d), or any shape that broadcasts to x's with the same last axis (transformers' (1, 1, s, d)).

    Saves no activation: the rotation is linear in x, so backward needs the angle tables only, and saves cos and
    sin (views of `RotaryTables`' one buffer, shared by every layer, so counted once per step) when x's gradient
    is needed. Backward: grad[..., :d/2] = g₁·cos₁ + g₂·sin₂, grad[..., d/2:] = g₂·cos₂ − g₁·sin₁ (subscripts:
    first and second half). The tables take no gradient.

    Elementwise the same arithmetic as transformers' q·cos + rotate_half(q)·sin. Any layout (a transposed view of a
    projection's output is the usual x): computed in blocks that are views of x, the tables, the gradient and the
    new C-contiguous result (`chunks.blocks`): no hidden copy, and the hidden half-width product stays
    ≤ CHUNK_ELEMENTS elements. A 16-bit operand: each block in float32, rounded once into the result. Shape-only
    predictor: the same ufuncs on one block of shape-only arrays give every buffer's shape.
    """

    name = "rotary"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise ValueError("rotary: the cos and sin tables take no gradient")
        d = x.shape[-1] if x.ndim else 0
        if x.ndim < 1 or d % 2 or cos.shape != sin.shape or cos.shape[-1:] != (d,) \
                or np.broadcast_shapes(x.shape, cos.shape) != x.shape:
            raise ValueError(f"rotary takes x of shape (..., s, d), d even, and cos, sin broadcasting to it, got "
                             f"{x.shape}, {cos.shape} and {sin.shape}")
        half = d // 2
        out = np.empty(x.shape, dtype=np.result_type(x.dtype, cos.dtype, sin.dtype), like=x)
        indices = blocks(x, keep_last=True)
        low = is_low(out.dtype) or is_low(x.dtype)
        if low:
            inputs, results = scratch(x, indices[0], FLOAT32), scratch(x, indices[0], FLOAT32)
        for index in indices:
            xb, ob = x[index], out[index]
            cb, sb = cos[_table_index(index, x.ndim, cos.shape)], sin[_table_index(index, x.ndim, sin.shape)]
            if low:
                xb, target, ob = load(inputs, xb), ob, part(results, ob)
            x1, x2, o1, o2 = xb[..., :half], xb[..., half:], ob[..., :half], ob[..., half:]
            np.multiply(x1, cb[..., :half], out=o1)  # x₁·cos₁ − x₂·sin₁
            o1 -= np.multiply(x2, sb[..., :half])  # the block's scratch: one half-width product
            np.multiply(x2, cb[..., half:], out=o2)  # x₂·cos₂ + x₁·sin₂
            o2 += np.multiply(x1, sb[..., half:])
            if low:
                store(target, ob)
        need = ctx.needs_input_grad[0]
        ctx.save(cos=cos if need else None, sin=sin if need else None)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        cos, sin = ctx.saved_tensors
        d = grad.shape[-1]
        half = d // 2
        result = np.empty(grad.shape, dtype=grad.dtype, like=grad)
        indices = blocks(grad, keep_last=True)
        low = is_low(grad.dtype)
        if low:
            grads, results = scratch(grad, indices[0], FLOAT32), scratch(grad, indices[0], FLOAT32)
        for index in indices:
            gb, rb = grad[index], result[index]
            cb, sb = cos[_table_index(index, grad.ndim, cos.shape)], sin[_table_index(index, grad.ndim, sin.shape)]
            if low:
                gb, target, rb = load(grads, gb), rb, part(results, rb)
            g1, g2, r1, r2 = gb[..., :half], gb[..., half:], rb[..., :half], rb[..., half:]
            np.multiply(g1, cb[..., :half], out=r1)  # g₁·cos₁ + g₂·sin₂
            r1 += np.multiply(g2, sb[..., half:])
            np.multiply(g2, cb[..., half:], out=r2)  # g₂·cos₂ − g₁·sin₁
            r2 -= np.multiply(g1, sb[..., :half])
            if low:
                store(target, rb)
        return result, None, None

"""The attention core's ops: batched matmul, causal masking, softmax over an axis, and one piece of a split.

Scaled dot-product attention as nanoGPT's explicit path writes it is these ops plus `Scale` (the 1/√d factor,
which saves nothing) and `Dropout`: scores = q @ kᵀ · 1/√d, masked, softmax, dropout, then @ v.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..engine import Function, Node
from ..precision import compute_dtype, dtype as as_dtype, is_low
from .chunks import blocks, part, scratch
from .emulate import load, store
from .linalg import product
from .shape import unbroadcast


class BatchedMatMul(Function):
    """a @ b over leading (batch, head) axes: (..., m, k) @ (..., k, n) → (..., m, n), leading axes broadcast.

    Saves a when b's gradient is needed and b when a's is; operands that are views (q, kᵀ, v of one c_attn
    output) are saved as views, so the ledger counts their common buffer once.
    Shape-only predictor: np.matmul of shape-only arrays gives the output's shape.
    """

    name = "batched_matmul"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"batched_matmul takes (..., m, k) @ (..., k, n), got shapes {a.shape} and {b.shape}")
        need_a, need_b = ctx.needs_input_grad
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        ctx.save(a=a if need_b else None, b=b if need_a else None)
        return product(ctx, a, b)  # numpy's matmul, or float32 tiles for 16-bit operands

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        grad_a = unbroadcast(product(ctx, grad, np.swapaxes(b, -1, -2)), ctx.a_shape) if need_a else None
        grad_b = unbroadcast(product(ctx, np.swapaxes(a, -1, -2), grad), ctx.b_shape) if need_b else None
        return grad_a, grad_b


class CausalMask(Function):
    """Scores above the diagonal of the last two axes set to −inf (query i sees keys 0..i + offset); saves nothing.

    `offset`: the position of the first query among the keys (the tokens a KV cache held before this forward),
    so that query i, at position offset + i, sees keys 0..offset + i, and a static cache's unfilled slots (keys
    beyond the last query) are masked too. The output (and the gradient) is a C-ordered copy of its input with the
    triangle above the diagonal overwritten, whatever the input's layout. The triangle is rebuilt from the shape in
    backward (np.tri: a hidden s × s boolean, 1/(4·b·a) of the float32 scores it masks). Shape-only predictor:
    np.tri, the copy and np.copyto on shape-only arrays give the shapes.
    """

    name = "causal_mask"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, offset: int = 0) -> np.ndarray:
        ctx.offset = offset
        out = x.copy()
        np.copyto(out, -np.inf, where=_above_diagonal(x, offset))  # a Python float takes x's dtype
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        result = grad.copy()  # never written into: the incoming gradient may be read-only
        np.copyto(result, 0, where=_above_diagonal(grad, ctx.offset))
        return (result,)


def _above_diagonal(x: np.ndarray, offset: int = 0) -> np.ndarray:
    """The (rows, cols) boolean of the entries above the diagonal of x's last two axes, shifted right by `offset`."""
    above = np.tri(x.shape[-2], x.shape[-1], k=offset, dtype=bool, like=x)
    return np.logical_not(above, out=above)


class Softmax(Function):
    """exp(x − max) / Σ exp(x − max) over `axis`; saves its output only (backward: y · (g − Σ g·y)).

    `dtype`: the output's dtype when it is not x's (transformers' Llama takes the softmax of 16-bit scores in float32,
    `softmax(..., dtype=torch.float32)`, and keeps that float32 output for backward); x's gradient is in x's dtype.
    Hidden scratch: the per-row maxima and sums (one value per row). A 16-bit x (or output): rows in blocks, each
    computed in float32 and rounded once into the output (and the gradient). Shape-only predictor: the same ufuncs
    and reductions on shape-only arrays give the output's shape.
    """

    name = "softmax"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axis: int = -1, dtype: Any = None) -> np.ndarray:
        ctx.axis, ctx.x_dtype = axis, x.dtype
        dtype = x.dtype if dtype is None else as_dtype(dtype)
        if is_low(x.dtype) or dtype != x.dtype:
            out = _softmax_rows(x, axis, dtype)
            ctx.save(out=out if ctx.needs_input_grad[0] else None)
            return out
        out = np.subtract(x, np.max(x, axis=axis, keepdims=True, initial=-np.inf))  # initial: an axis may be empty
        np.exp(out, out=out)
        out /= np.add.reduce(out, axis=axis, keepdims=True)
        ctx.save(out=out if ctx.needs_input_grad[0] else None)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        if is_low(out.dtype) or is_low(grad.dtype) or out.dtype != ctx.x_dtype:
            return (_softmax_grad_rows(grad, out, ctx.axis, ctx.x_dtype),)
        result = np.multiply(grad, out)  # g·y, then overwritten by (g − Σ g·y)·y: no second full-size buffer
        total = np.add.reduce(result, axis=ctx.axis, keepdims=True)
        np.subtract(grad, total, out=result)
        result *= out
        return (result,)


def _softmax_rows(x: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
    """softmax over `axis` into a new array of `dtype`: blocks of whole rows (the axis moved last, views) in float32
    (float64 when x or the output is float64)."""
    out = np.empty(x.shape, dtype=dtype, like=x)
    work = np.result_type(compute_dtype(x.dtype), compute_dtype(dtype))
    xs, os = np.swapaxes(x, axis, -1), np.swapaxes(out, axis, -1)
    indices = blocks(xs, keep_last=True)
    values = scratch(xs, indices[0], work)
    for index in indices:
        v = load(values, xs[index])
        v -= np.max(v, axis=-1, keepdims=True, initial=-np.inf)
        np.exp(v, out=v)
        v /= np.add.reduce(v, axis=-1, keepdims=True)
        store(os[index], v)
    return out


def _softmax_grad_rows(grad: np.ndarray, y: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
    """(g − Σ g·y)·y over `axis` into a new array of `dtype` (the input's): rows in float32 blocks (float64 when an
    operand is), rounded once."""
    result = np.empty(grad.shape, dtype=dtype, like=grad)
    work = np.result_type(compute_dtype(grad.dtype), compute_dtype(y.dtype))
    gs, ys, rs = (np.swapaxes(a, axis, -1) for a in (grad, y, result))
    indices = blocks(gs, keep_last=True)
    grads, outs, products = (scratch(gs, indices[0], work) for _ in range(3))
    for index in indices:
        g, o = load(grads, gs[index]), load(outs, ys[index])
        p = part(products, g)
        np.multiply(g, o, out=p)
        total = np.add.reduce(p, axis=-1, keepdims=True)
        np.subtract(g, total, out=p)
        p *= o
        store(rs[index], p)
    return result


class Slice(Function):
    """x[start:stop] along `axis`, a view that saves nothing: one piece of a split (nanoGPT's q, k, v).

    Backward places the gradient into zeros of x's shape; the pieces' gradients add up into x's.
    Shape-only predictor: slicing and np.zeros(like=) on shape-only arrays give the shapes.
    """

    name = "slice"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axis: int, start: int, stop: int) -> np.ndarray:
        axis = axis % x.ndim
        ctx.shape, ctx.index = x.shape, (slice(None),) * axis + (slice(start, stop),)
        return x[ctx.index]

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        result = np.zeros(ctx.shape, dtype=grad.dtype, like=grad)
        result[ctx.index] = grad
        return (result,)

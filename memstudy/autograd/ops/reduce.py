"""Reductions: sum, mean, the sum of squares (the L2 penalty), and argmax (greedy decoding's next token)."""
from __future__ import annotations

import math

import numpy as np

from ..engine import Function, Node
from ..precision import is_low
from . import emulate
from .chunks import sum_of_squares


class Sum(Function):
    """Shape-only prediction: by dispatch (same numpy calls; a full sum is a 0-d array via `like=x`)."""

    name = "sum"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axis=None, keepdims: bool = False) -> np.ndarray:
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        if is_low(x.dtype):  # accumulated in float32
            return emulate.reduce_sum(x, axis, keepdims)
        return np.asarray(np.sum(x, axis=axis, keepdims=keepdims), like=x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (_expand(grad, ctx.shape, ctx.axis, ctx.keepdims),)


class Mean(Function):
    """Shape-only prediction: by dispatch (same numpy calls; a full mean is a 0-d array via `like=x`)."""

    name = "mean"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axis=None, keepdims: bool = False) -> np.ndarray:
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        if is_low(x.dtype):  # accumulated and divided in float32, rounded once
            axes = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
            ctx.count = math.prod(x.shape[a] for a in axes)
            return emulate.reduce_sum(x, axis, keepdims, scale=1.0 / ctx.count if ctx.count else float("nan"))
        out = np.asarray(np.mean(x, axis=axis, keepdims=keepdims), like=x)
        ctx.count = x.size // max(out.size, 1)  # elements averaged into each output element
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (_expand(emulate.ufunc(np.divide, grad, ctx.count), ctx.shape, ctx.axis, ctx.keepdims),)


def _expand(grad: np.ndarray, shape: tuple[int, ...], axis, keepdims: bool) -> np.ndarray:
    """Broadcast a reduction's gradient back to the input's shape (a read-only view, no copy)."""
    if axis is not None and not keepdims:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        axes = tuple(a % len(shape) for a in axes)
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)


class SumSquares(Function):
    """Σ x² (the squared Frobenius norm); np.vdot reads x once without an x² temporary, block by block
    (`chunks.sum_of_squares`: any layout, no copy of a non-contiguous x beyond a block).

    Shape-only prediction: by dispatch (same numpy calls; np.vdot gives a 0-d MetaArray).
    """

    name = "sum_squares"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        return np.asarray(sum_of_squares(x), dtype=x.dtype, like=x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        return (emulate.ufunc(_twice_product, x, grad),)


def _twice_product(x: np.ndarray, grad: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x · 2·grad (into `out`, when given)."""
    if out is None:
        return x * (2 * grad)
    np.multiply(grad, 2, out=out)
    out *= x
    return out


class Argmax(Function):
    """The index of the largest value along `axis` (np.argmax, int64): greedy decoding's next token, (b, 1, V)
    logits → (b, 1) ids. Saves nothing; an index has no gradient, so it runs where no graph is recorded (an input
    that requires grad is refused by the integer output, as any integer tensor that would require grad is).
    Shape-only prediction: by dispatch (np.argmax of a shape-only array)."""

    name = "argmax"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axis: int = -1) -> np.ndarray:
        return np.argmax(x, axis=axis)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:  # pragma: no cover - an integer output records no graph
        return (None,)

"""Shape ops: views that save nothing (transpose, reshape), concatenation, and `unbroadcast` for gradients of
broadcast ops."""
from __future__ import annotations

import math

import numpy as np

from ..engine import Function, Node
from ..precision import is_low
from . import emulate


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting (leading axes, then axes of size 1).

    Shape-only prediction: by dispatch (`.sum` and `.reshape` of a MetaArray)."""
    if grad.shape == shape:
        return grad
    low = is_low(grad.dtype)  # a 16-bit gradient is summed in float32 (emulate.reduce_sum)
    extra = grad.ndim - len(shape)
    if extra > 0:
        axes = tuple(range(extra))
        grad = emulate.reduce_sum(grad, axes) if low else grad.sum(axis=axes)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = emulate.reduce_sum(grad, axes, keepdims=True) if low else grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Transpose(Function):
    """Shape-only prediction: by dispatch (same numpy calls; the result is a view, as numpy's)."""

    name = "transpose"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axes=None) -> np.ndarray:
        # non-negative axes: argsort of e.g. (-1, 0, 1) would not invert the permutation
        ctx.axes = None if axes is None else tuple(a % x.ndim for a in axes)
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        if ctx.axes is None:
            return (np.transpose(grad),)
        return (np.transpose(grad, np.argsort(ctx.axes)),)


class Reshape(Function):
    """numpy's reshape: a view where numpy's is one; numpy copies an input whose strides do not allow it (a
    transpose merged into one axis), and that copy is the op's result (the ledger counts it as the output).

    Shape-only prediction: by dispatch (same numpy calls; a view or a copy exactly when numpy's is)."""

    name = "reshape"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, shape) -> np.ndarray:
        ctx.shape = x.shape
        return np.reshape(x, shape)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (np.reshape(grad, ctx.shape),)


class Flatten(Function):
    """Axes start_dim.. folded into one (a view of a contiguous input, a copy of another, as `np.reshape`); saves
    nothing. Shape-only prediction: runs unchanged (a reshape)."""

    name = "flatten"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, start_dim: int = 1) -> np.ndarray:
        ctx.shape = x.shape
        start = start_dim % x.ndim
        return np.reshape(x, x.shape[:start] + (math.prod(x.shape[start:]),))  # not -1: an axis may be 0

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (np.reshape(grad, ctx.shape),)


class Concatenate(Function):
    """The inputs joined along `axis` (np.concatenate): a new buffer holding a copy of each; saves nothing (their
    sizes along `axis` only). Backward hands each input its slice of the gradient (views of it).
    Shape-only prediction: by dispatch (np.concatenate of shape-only arrays)."""

    name = "concatenate"

    @staticmethod
    def forward(ctx: Node, *arrays: np.ndarray, axis: int = 0) -> np.ndarray:
        if not arrays:
            raise ValueError("concatenate needs at least one array")
        ctx.axis = axis % arrays[0].ndim
        ctx.sizes = tuple(a.shape[ctx.axis] for a in arrays)
        return np.concatenate(arrays, axis=ctx.axis)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        pieces, start = [], 0
        for size in ctx.sizes:
            index = (slice(None),) * ctx.axis + (slice(start, start + size),)
            pieces.append(grad[index])
            start += size
        return tuple(pieces)

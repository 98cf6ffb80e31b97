"""Shape ops: views that save nothing (transpose, reshape), and `unbroadcast` for gradients of broadcast ops."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting (leading axes, then axes of size 1).

    Shape-only prediction: by dispatch (`.sum` and `.reshape` of a MetaArray)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
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
    """Shape-only prediction: by dispatch (same numpy calls; the result is a view, as numpy's)."""

    name = "reshape"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, shape) -> np.ndarray:
        ctx.shape = x.shape
        return np.reshape(x, shape)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (np.reshape(grad, ctx.shape),)

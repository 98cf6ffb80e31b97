"""Pooling on NCHW arrays: max-pooling (saving one byte per output), average pooling, global average pooling.

Max-pooling's backward routes each output's gradient to the input position that held the window's maximum.
PyTorch saves that position as an int64 index into the input plane (8 bytes per output element); here it is
saved as the maximum's offset within its window, k·i + j < k², in one uint8 (1 byte per output element):
the same information for any window of up to 256 positions, 7 bytes per output element fewer.
"""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from ..precision import FLOAT32, is_low
from . import emulate
from .linalg import small_ufunc_buffer

MAX_WINDOW_POSITIONS = 256  # a position within the window must fit in one uint8


def pooled_size(size: int, kernel: int, stride: int) -> int:
    """Output positions along one axis, no padding, floor mode (PyTorch's default): (size − kernel) // stride + 1."""
    return (size - kernel) // stride + 1


def _window_views(x: np.ndarray, kernel: int, stride: int, out_h: int, out_w: int):
    """(code, view) per kernel offset (i, j), code = k·i + j: the input elements at that offset of every
    window, as an (N, C, Ho, Wo) strided view of x."""
    for i in range(kernel):
        for j in range(kernel):
            yield i * kernel + j, x[:, :, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]


def _check(x_shape: tuple[int, ...], kernel: int, stride: int, name: str) -> tuple[int, int]:
    if len(x_shape) != 4:
        raise ValueError(f"{name} takes (N, C, H, W) input, got shape {x_shape}")
    if kernel < 1 or stride < 1:
        raise ValueError(f"{name}: kernel and stride must be at least 1, got {kernel} and {stride}")
    if x_shape[2] < kernel or x_shape[3] < kernel:
        raise ValueError(f"{name}: a {kernel}×{kernel} window does not fit a {x_shape[2]}×{x_shape[3]} input")
    return pooled_size(x_shape[2], kernel, stride), pooled_size(x_shape[3], kernel, stride)


class MaxPool2d(Function):
    """The maximum of each k×k window (stride s, no padding, floor mode); the first maximum wins a tie.

    Saves, per output element, the maximum's position within its window as one uint8 (see the module
    docstring). The comparison mask (one bool per output element, in forward and backward) is reported
    as a workspace. Shape-only prediction: runs unchanged on shape-only arrays (strided slices, ufuncs with
    `out=`/`where=`, `np.copyto`); the positions are data but only ever saved and compared, never used
    for a shape.
    """

    name = "max_pool2d"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, kernel: int = 2, stride: int | None = None) -> np.ndarray:
        stride = kernel if stride is None else stride
        out_h, out_w = _check(x.shape, kernel, stride, "max_pool2d")
        if kernel * kernel > MAX_WINDOW_POSITIONS:
            raise ValueError(f"max_pool2d: a {kernel}×{kernel} window has more positions than one byte holds")
        ctx.x_shape, ctx.kernel, ctx.stride = x.shape, kernel, stride
        need_x = ctx.needs_input_grad[0]
        views = _window_views(x, kernel, stride, out_h, out_w)
        # offset (0, 0): the running maximum starts there. The output and the positions are reported as they are
        # made: the comparison mask (a workspace) lives beside them
        out = ctx.result(next(views)[1].copy())
        positions = ctx.result(np.zeros(out.shape, dtype=np.uint8, like=x)) if need_x else None
        larger = ctx.workspace(np.empty(out.shape, dtype=bool, like=x), "mask") if need_x else None
        with small_ufunc_buffer():  # masked and strided ufuncs go through numpy's hidden buffer: keep it small
            for code, view in views:
                if need_x:
                    np.greater(view, out, out=larger)  # strictly greater: the first maximum keeps its position
                    np.copyto(positions, code, where=larger)
                np.maximum(out, view, out=out)
        larger = None
        ctx.save(positions=positions)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (positions,) = ctx.saved_tensors
        out_h, out_w = grad.shape[2], grad.shape[3]
        grad_x = ctx.result(np.zeros(ctx.x_shape, dtype=grad.dtype, like=grad))  # the mask lives beside it
        chosen = ctx.workspace(np.empty(grad.shape, dtype=bool, like=grad), "mask")
        with small_ufunc_buffer():  # the masked add into a strided view is buffered by numpy: keep it small
            for code, target in _window_views(grad_x, ctx.kernel, ctx.stride, out_h, out_w):
                np.equal(positions, code, out=chosen)
                np.add(target, grad, out=target, where=chosen)  # add, not assign: overlapping windows (s < k)
        return (grad_x,)


class AvgPool2d(Function):
    """The mean of each k×k window (stride s, no padding, floor mode). Saves nothing: backward needs shapes only.

    16-bit: the window sums (and the gradient's overlapping adds) in a float32 workspace (`fp32_out`), rounded once.
    Shape-only prediction: runs unchanged on shape-only arrays (strided slices and ufuncs with `out=`).
    """

    name = "avg_pool2d"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, kernel: int = 2, stride: int | None = None) -> np.ndarray:
        stride = kernel if stride is None else stride
        out_h, out_w = _check(x.shape, kernel, stride, "avg_pool2d")
        ctx.x_shape, ctx.kernel, ctx.stride = x.shape, kernel, stride
        views = _window_views(x, kernel, stride, out_h, out_w)
        low = is_low(x.dtype)
        first = next(views)[1]
        out = ctx.workspace(first.astype(FLOAT32), "fp32_out") if low else first.copy()
        for _, view in views:
            np.add(out, view, out=out)
        out *= 1.0 / (kernel * kernel)
        return ctx.result(out.astype(x.dtype)) if low else out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        out_h, out_w = grad.shape[2], grad.shape[3]
        low = is_low(grad.dtype)
        grad_x = np.zeros(ctx.x_shape, dtype=FLOAT32 if low else grad.dtype, like=grad)
        if low:
            ctx.workspace(grad_x, "fp32_out")
        for _, target in _window_views(grad_x, ctx.kernel, ctx.stride, out_h, out_w):
            np.add(target, grad, out=target)
        grad_x *= 1.0 / (ctx.kernel * ctx.kernel)  # once at the end: no scaled copy of grad
        return (ctx.result(grad_x.astype(grad.dtype)) if low else grad_x,)


class GlobalAvgPool2d(Function):
    """The mean over the spatial axes: (N, C, H, W) -> (N, C). Saves nothing; its gradient is a broadcast view
    of an (N, C) array (no (N, C, H, W) buffer). Shape-only prediction: runs unchanged (a reduction and
    `np.broadcast_to`)."""

    name = "global_avg_pool2d"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"global_avg_pool2d takes (N, C, H, W) input, got shape {x.shape}")
        ctx.x_shape = x.shape
        n, c, h, w = x.shape
        if is_low(x.dtype):  # summed and scaled in float32, rounded once
            return emulate.reduce_sum(x, (2, 3), scale=1.0 / (h * w))
        if x.flags.c_contiguous:  # reduce over one contiguous axis of H·W elements (np.mean over (2, 3) walks two)
            out = np.add.reduce(x.reshape(n, c, h * w), axis=2)
        else:  # merging H and W of another layout would copy x: reduce over both axes in place
            out = np.add.reduce(x, axis=(2, 3))
        out *= 1.0 / (h * w)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        scaled = emulate.ufunc(np.multiply, grad, 1.0 / (ctx.x_shape[2] * ctx.x_shape[3]))
        return (np.broadcast_to(scaled[:, :, None, None], ctx.x_shape),)

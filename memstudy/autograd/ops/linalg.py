"""Matrix products: MatMul and the fused Linear (x @ Wᵀ + b), and numpy's small-ufunc-buffer scope."""
from __future__ import annotations

import math

import numpy as np

from ..engine import STATE, Function, Node
from ..precision import is_low
from . import emulate
from .strided import rows


def product(ctx: Node, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """a @ b (+ bias): numpy's matmul, or for a 16-bit operand the float32 emulation (`emulate.matmul`, its tiles
    reported as workspaces of `ctx`). A 1-d operand is a vector, as in np.matmul."""
    if not (is_low(a.dtype) or is_low(b.dtype)):
        out = a @ b
        if bias is not None:
            out += bias
        return out
    if a.ndim == 1:
        return product(ctx, a[None, :], b, bias)[..., 0, :]
    if b.ndim == 1:
        return product(ctx, a, b[:, None], bias)[..., 0]
    return emulate.matmul(ctx, a, b, bias)


class MatMul(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "matmul"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul takes 2-d operands, got shapes {a.shape} and {b.shape}")
        need_a, need_b = ctx.needs_input_grad
        # grad of a needs b, grad of b needs a: save an operand only if the other one needs its gradient
        ctx.save(a=a if need_b else None, b=b if need_a else None)
        return product(ctx, a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (product(ctx, grad, b.T) if need_a else None, product(ctx, a.T, grad) if need_b else None)


BIAS_BUFFER_ELEMENTS = 1024


class small_ufunc_buffer:
    """Context manager: numpy's ufunc buffer is `BIAS_BUFFER_ELEMENTS` elements inside it.

    numpy broadcasts (the bias add) through a hidden buffer of `bufsize` elements (8192: 64 KiB in float64,
    invisible to the ledger); a small buffer keeps that scratch negligible at no measurable cost. Setting it
    costs ~0.8 µs each way, so a model enters this scope once per forward instead of once per layer;
    `Linear` outside it sets the buffer size around its own bias add.
    """

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        self._previous = None
        if not STATE.small_ufunc_buffer:
            self._previous = np.setbufsize(BIAS_BUFFER_ELEMENTS)
            STATE.small_ufunc_buffer = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            np.setbufsize(self._previous)
            STATE.small_ufunc_buffer = False


class Linear(Function):
    """Fused x @ Wᵀ + b (PyTorch's addmm): one output buffer instead of a matmul result plus a sum.

    Any layout. The weight's gradient folds x's and the gradient's leading axes into rows: free for C-contiguous
    arrays, a copy of x (and of the gradient) for non-contiguous ones, reported as workspaces `input_rows` /
    `grad_rows` for as long as backward holds them.

    Shape-only prediction: by dispatch (same numpy calls; `small_ufunc_buffer` still sets numpy's real bufsize).
    """

    name = "linear"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save(x=x if need_w else None, weight=weight if need_x else None)
        if is_low(x.dtype) or is_low(weight.dtype):  # 16-bit: float32 tiles, the bias added before rounding
            if x.ndim > 2 and x.flags.c_contiguous:
                return product(ctx, _matrix(x), weight.T, bias).reshape(x.shape[:-1] + (weight.shape[0],))
            return product(ctx, x, weight.T, bias)
        if x.ndim > 2 and x.flags.c_contiguous:  # (b, s, in): one BLAS call on (b·s, in), not one per example
            out = (_matrix(x) @ weight.T).reshape(x.shape[:-1] + (weight.shape[0],))
        else:
            out = x @ weight.T
        if bias is None:
            return out
        if out.size <= BIAS_BUFFER_ELEMENTS or STATE.small_ufunc_buffer:
            out += bias  # in place: `out` is fresh and nobody else holds it yet
            return out
        with small_ufunc_buffer():  # see there: numpy's hidden broadcast buffer stays small
            out += bias
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if is_low(grad.dtype) or (weight is not None and is_low(weight.dtype)) or (x is not None and is_low(x.dtype)):
            return Linear._backward_emulated(ctx, grad, x, weight)
        if grad.ndim > 2 and grad.flags.c_contiguous:  # extra leading axes: one BLAS call, as in forward
            grad_x = (_matrix(grad) @ weight).reshape(grad.shape[:-1] + (weight.shape[1],)) if needs[0] else None
        else:
            grad_x = grad @ weight if needs[0] else None
        grad_w = None
        if needs[1]:  # Σ over every leading axis of gradᵀ · x: both folded into rows (one example: one row)
            grad_w = (grad.T @ x) if grad.ndim == 2 else rows(ctx, grad, "grad_rows").T @ rows(ctx, x, "input_rows")
        if len(needs) == 2:
            return grad_x, grad_w
        # np.add.reduce: ndarray.sum's Python wrapper costs as much as the sum at small sizes
        return grad_x, grad_w, (np.add.reduce(grad, axis=tuple(range(grad.ndim - 1))) if needs[2] else None)


    @staticmethod
    def _backward_emulated(ctx: Node, grad: np.ndarray, x: np.ndarray | None, weight: np.ndarray | None) -> tuple:
        """Backward with a 16-bit operand: the products through `product` (float32 tiles), the bias's gradient
        summed in float32 (`emulate.reduce_sum`)."""
        needs = ctx.needs_input_grad
        grad_x = grad_w = None
        if needs[0]:
            if grad.ndim > 2 and grad.flags.c_contiguous:
                grad_x = product(ctx, _matrix(grad), weight).reshape(grad.shape[:-1] + (weight.shape[1],))
            else:
                grad_x = product(ctx, grad, weight)
        if needs[1]:
            grad_w = product(ctx, grad.T, x) if grad.ndim == 2 else \
                product(ctx, rows(ctx, grad, "grad_rows").T, rows(ctx, x, "input_rows"))
        if len(needs) == 2:
            return grad_x, grad_w
        return grad_x, grad_w, (emulate.reduce_sum(grad, axis=tuple(range(grad.ndim - 1))) if needs[2] else None)


def _matrix(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array's leading axes folded into rows: a view (sizes spelled out: -1 fails on an axis of 0)."""
    return array.reshape(math.prod(array.shape[:-1]), array.shape[-1])

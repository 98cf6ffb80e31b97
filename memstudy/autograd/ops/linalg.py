"""Matrix products: MatMul and the fused Linear (x @ Wᵀ + b), and numpy's small-ufunc-buffer scope."""
from __future__ import annotations

import math

import numpy as np

from ..engine import STATE, Function, Node
from .strided import rows


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
        return a @ b

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (grad @ b.T if need_a else None, a.T @ grad if need_b else None)


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


def _matrix(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array's leading axes folded into rows: a view (sizes spelled out: -1 fails on an axis of 0)."""
    return array.reshape(math.prod(array.shape[:-1]), array.shape[-1])

"""Activations of the MLP: ReLU, sigmoid and tanh, each saving its output.

numpy returns a scalar for a ufunc of a 0-d array; what an op saves or writes into with `out=` must be an array
(the ledger tracks buffers), hence `_as_array` on the results made here. A 16-bit input: ReLU is exact in numpy's
16-bit loops; sigmoid and tanh compute in float32 and round once (`emulate.ufunc`)."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node, _as_array
from ..precision import is_low
from .emulate import ufunc


class ReLU(Function):
    """Saves its output (not its input): out > 0 exactly where x > 0, and the next Linear saves it anyway.

    Shape-only prediction: by dispatch (same numpy calls).
    """

    name = "relu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        out = _as_array(np.maximum(x, 0))  # an array even for a 0-d x (numpy gives a scalar): it is saved
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        # out ≥ 0, so sign(out) is the mask out > 0 as 0.0/1.0, made in the result buffer in the compute dtype:
        # no hidden boolean mask nor cast buffer the ledger could not see (tests/test_ufunc_buffer.py), and one
        # numpy call fewer than empty + greater(out=). A NaN output passes NaN back.
        result = np.sign(out)
        result *= grad
        return (result,)


class Sigmoid(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "sigmoid"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        if is_low(x.dtype):
            out = ufunc(_sigmoid, x)
        else:
            out = _as_array(np.negative(x))  # an array even for a 0-d x: written in place, and saved
            np.exp(out, out=out)
            out += 1
            np.reciprocal(out, out=out)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        if is_low(out.dtype) or is_low(grad.dtype):
            return (ufunc(_sigmoid_grad, out, grad),)
        result = np.subtract(1, out)  # σ' = σ(1-σ), built in one buffer
        result *= out
        result *= grad
        return (result,)


class Tanh(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "tanh"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        out = _as_array(ufunc(np.tanh, x))  # an array even for a 0-d x: it is saved
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        if is_low(out.dtype) or is_low(grad.dtype):
            return (ufunc(_tanh_grad, out, grad),)
        result = _as_array(np.square(out))  # tanh' = 1 - tanh², built in one buffer
        np.subtract(1, result, out=result)
        result *= grad
        return (result,)


def _sigmoid(x: np.ndarray, out: np.ndarray) -> None:
    """1 / (1 + e^(−x)) into `out` (which may be x)."""
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)


def _sigmoid_grad(y: np.ndarray, grad: np.ndarray, out: np.ndarray) -> None:
    np.subtract(1, y, out=out)
    out *= y
    out *= grad


def _tanh_grad(y: np.ndarray, grad: np.ndarray, out: np.ndarray) -> None:
    np.square(y, out=out)
    np.subtract(1, out, out=out)
    out *= grad

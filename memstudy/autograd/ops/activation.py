"""Activations of the MLP: ReLU, sigmoid and tanh, each saving its output.

numpy returns a scalar for a ufunc of a 0-d array; what an op saves or writes into with `out=` must be an array
(the ledger tracks buffers), hence `_as_array` on the results made here. A 16-bit input: ReLU is exact in numpy's
16-bit loops, and on bfloat16 works on the bits (ml_dtypes' loops are ~10x slower than float32's); sigmoid and tanh
compute in float32 and round once (`emulate.ufunc`)."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node, _as_array
from ..precision import is_low
from .emulate import finite_bfloat16, is_bfloat16, ufunc


class ReLU(Function):
    """Saves its output (not its input): out > 0 exactly where x > 0, and the next Linear saves it anyway.

    Shape-only prediction: by dispatch (same numpy calls).
    """

    name = "relu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        if is_bfloat16(x) and finite_bfloat16(x):
            # a sign-magnitude float read as int16 orders like the float where x ≥ 0 and is negative where x < 0
            # (-0 included: ml_dtypes' maximum(-0, 0) is +0 too); inf and NaN take ml_dtypes' loop
            out = np.empty_like(x)  # the layout np.maximum would give
            np.maximum(x.view(np.int16), np.int16(0), out=out.view(np.int16))
        else:
            out = _as_array(np.maximum(x, 0))  # an array even for a 0-d x (numpy gives a scalar): it is saved
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        if is_bfloat16(out) and is_bfloat16(grad) and _relu_bits_apply(out, grad):
            # sign(out)·grad on the bits: grad where out > 0, else +0·grad (a zero with grad's sign), built in the
            # result buffer as the mask 0xFFFF / 0x8000 (the sign bit) and-ed with grad
            result = np.empty_like(out)  # the layout np.sign would give
            mask = result.view(np.int16)
            np.negative(out.view(np.int16), out=mask)  # < 0 exactly where out > 0
            np.right_shift(mask, 15, out=mask)  # -1 (all bits) there, else 0
            np.bitwise_or(mask, np.int16(-0x8000), out=mask)
            np.bitwise_and(mask, grad.view(np.int16), out=mask)
            return (result,)
        # out ≥ 0, so sign(out) is the mask out > 0 as 0.0/1.0, made in the result buffer in the compute dtype:
        # no hidden boolean mask nor cast buffer the ledger could not see (tests/test_ufunc_buffer.py), and one
        # numpy call fewer than empty + greater(out=). A NaN output passes NaN back.
        result = np.sign(out)
        result *= grad
        return (result,)


def _relu_bits_apply(out: np.ndarray, grad: np.ndarray) -> bool:
    """Whether ReLU's bfloat16 backward may work on the bits: out ≥ +0 (no -0, whose sign is -0) and finite, grad
    finite (inf·0 and NaN are ml_dtypes' to make)."""
    return out.size == 0 or (int(np.minimum.reduce(out.view(np.int16), axis=None)) >= 0 and finite_bfloat16(out)
                             and finite_bfloat16(grad))


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

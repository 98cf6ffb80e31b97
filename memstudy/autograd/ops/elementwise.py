"""Element-wise arithmetic: add, sub, mul, scale, neg, exp, log, square, pow.

A 16-bit operand: the arithmetic runs in float32 and each result is rounded once (`emulate.ufunc`); negation is
exact and stays numpy's.
"""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node, _as_array
from ..precision import is_low
from .emulate import ufunc
from .shape import unbroadcast


class Add(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "add"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.a_shape, ctx.b_shape = np.shape(a), np.shape(b)
        return ufunc(np.add, a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        need_a, need_b = ctx.needs_input_grad
        return (
            unbroadcast(grad, ctx.a_shape) if need_a else None,
            unbroadcast(grad, ctx.b_shape) if need_b else None,
        )


class Sub(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "sub"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.a_shape, ctx.b_shape = np.shape(a), np.shape(b)
        return ufunc(np.subtract, a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        need_a, need_b = ctx.needs_input_grad
        return (
            unbroadcast(grad, ctx.a_shape) if need_a else None,
            -unbroadcast(grad, ctx.b_shape) if need_b else None,
        )


class Mul(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "mul"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        need_a, need_b = ctx.needs_input_grad
        ctx.a_shape, ctx.b_shape = np.shape(a), np.shape(b)
        ctx.save(a=a if need_b else None, b=b if need_a else None)
        return ufunc(np.multiply, a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (
            unbroadcast(ufunc(np.multiply, grad, b), ctx.a_shape) if need_a else None,
            unbroadcast(ufunc(np.multiply, grad, a), ctx.b_shape) if need_b else None,
        )


class Scale(Function):
    """x * c for a Python number c: the constant is an attribute, so nothing is saved.

    Shape-only prediction: by dispatch (same numpy calls; NEP 50 keeps float32 * Python float in float32).
    """

    name = "scale"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, factor: float) -> np.ndarray:
        ctx.factor = factor
        return ufunc(np.multiply, x, factor)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (ufunc(np.multiply, grad, ctx.factor),)


class Neg(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "neg"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        return np.negative(x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (np.negative(grad),)


class Exp(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "exp"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        out = _as_array(ufunc(np.exp, x))  # an array even for a 0-d x (numpy gives a scalar): it is saved
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        return (ufunc(np.multiply, grad, out),)


class Log(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "log"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        return ufunc(np.log, x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        return (ufunc(np.divide, grad, x),)


class Square(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "square"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        return ufunc(np.square, x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        if _low(x) or _low(grad):
            return (ufunc(_twice_product, x, grad),)
        out = x * 2
        out *= grad
        return (out,)


class Pow(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "pow"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, exponent: float) -> np.ndarray:
        ctx.exponent = exponent
        ctx.save(x=x)
        return ufunc(np.power, x, exponent)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        if _low(x) or _low(grad):
            return (ufunc(_power_grad(ctx.exponent), x, grad),)
        out = np.power(x, ctx.exponent - 1)
        out *= ctx.exponent
        out *= grad
        return (out,)


def _low(x: np.ndarray) -> bool:
    return is_low(x.dtype)


def _twice_product(x: np.ndarray, grad: np.ndarray, out: np.ndarray) -> None:
    np.multiply(x, 2, out=out)
    out *= grad


def _power_grad(exponent: float):
    """d(xᵉ)/dx · grad as fn(x, grad, out=) for `elementwise`."""
    def fn(x: np.ndarray, grad: np.ndarray, out: np.ndarray) -> None:
        np.power(x, exponent - 1, out=out)
        out *= exponent
        out *= grad
    return fn

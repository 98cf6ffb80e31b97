"""Element-wise arithmetic: add, sub, mul, scale, neg, exp, log, square, pow."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node, _as_array
from .shape import unbroadcast


class Add(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "add"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.a_shape, ctx.b_shape = np.shape(a), np.shape(b)
        return np.add(a, b)

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
        return np.subtract(a, b)

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
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (
            unbroadcast(grad * b, ctx.a_shape) if need_a else None,
            unbroadcast(grad * a, ctx.b_shape) if need_b else None,
        )


class Scale(Function):
    """x * c for a Python number c: the constant is an attribute, so nothing is saved.

    Shape-only prediction: by dispatch (same numpy calls; NEP 50 keeps float32 * Python float in float32).
    """

    name = "scale"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, factor: float) -> np.ndarray:
        ctx.factor = factor
        return x * factor

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (grad * ctx.factor,)


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
        out = _as_array(np.exp(x))  # an array even for a 0-d x (numpy gives a scalar): it is saved
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        return (grad * out,)


class Log(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "log"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        return np.log(x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        return (grad / x,)


class Square(Function):
    """Shape-only prediction: by dispatch (same numpy calls)."""

    name = "square"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        return np.square(x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
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
        return np.power(x, exponent)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        out = np.power(x, ctx.exponent - 1)
        out *= ctx.exponent
        out *= grad
        return (out,)

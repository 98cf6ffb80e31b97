"""`Tensor`: an ndarray, its gradient, and the node that produced it (if a graph was recorded)."""
from __future__ import annotations

from numbers import Number
from typing import Any

import numpy as np

from . import ops
from . import engine
from .engine import apply, backward
from .meta import MetaArray


class Tensor:
    """Wraps an ndarray (or a shape-only `MetaArray`). Float arrays keep their dtype; `grad` is an ndarray or None."""

    __slots__ = ("data", "grad", "requires_grad", "name", "_node", "__weakref__")
    # numpy defers to Tensor's reflected operators: `ndarray + Tensor` and `ndarray @ Tensor` call
    # Tensor.__radd__ / __rmatmul__ instead of building an object array of Tensors (or failing)
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None):
        array = data if type(data) is np.ndarray or type(data) is MetaArray else np.asarray(data)
        if requires_grad and array.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got {array.dtype}")
        self.data = array
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._node = None  # the Node that produced this tensor; None for leaves

    # --- plain facts -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        return Tensor(self.data, requires_grad=False, name=self.name)

    def backward(self, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
        backward(self, grad, retain_graph)

    def __repr__(self) -> str:
        label = f", name={self.name!r}" if self.name else ""
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{flag}{label})"

    # --- ops ---------------------------------------------------------------------------------
    def __matmul__(self, other: Any) -> "Tensor":
        return apply(ops.MatMul, self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return apply(ops.MatMul, other, self)

    def __add__(self, other: Any) -> "Tensor":
        return apply(ops.Add, self, _constant(other, self))

    def __radd__(self, other: Any) -> "Tensor":
        return apply(ops.Add, _constant(other, self), self)

    def __sub__(self, other: Any) -> "Tensor":
        return apply(ops.Sub, self, _constant(other, self))

    def __rsub__(self, other: Any) -> "Tensor":
        return apply(ops.Sub, _constant(other, self), self)

    def __mul__(self, other: Any) -> "Tensor":
        if isinstance(other, Number):
            return apply(ops.Scale, self, factor=other)
        return apply(ops.Mul, self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        if isinstance(other, Number):
            return apply(ops.Scale, self, factor=other)
        return apply(ops.Mul, other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        if isinstance(other, Number):
            return apply(ops.Scale, self, factor=1.0 / other)
        if not isinstance(other, (Tensor, MetaArray)):
            other = np.asarray(other)
        return self * (other ** -1 if isinstance(other, Tensor) else 1.0 / other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return (self ** -1) * other

    def __neg__(self) -> "Tensor":
        return apply(ops.Neg, self)

    def __pow__(self, exponent: Any) -> "Tensor":
        if not isinstance(exponent, Number):
            raise TypeError("Tensor ** takes a Python number exponent")
        if exponent == 2:
            return apply(ops.Square, self)
        return apply(ops.Pow, self, exponent=exponent)

    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return apply(ops.Sum, self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return apply(ops.Mean, self, axis=axis, keepdims=keepdims)

    def transpose(self, *axes: int) -> "Tensor":
        return apply(ops.Transpose, self, axes=axes or None)

    @property
    def T(self) -> "Tensor":
        return apply(ops.Transpose, self, axes=None)

    def reshape(self, *shape: Any) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return apply(ops.Reshape, self, shape=shape)

    def exp(self) -> "Tensor":
        return apply(ops.Exp, self)

    def log(self) -> "Tensor":
        return apply(ops.Log, self)

    def square(self) -> "Tensor":
        return apply(ops.Square, self)

    def relu(self) -> "Tensor":
        return apply(ops.ReLU, self)

    def sigmoid(self) -> "Tensor":
        return apply(ops.Sigmoid, self)

    def tanh(self) -> "Tensor":
        return apply(ops.Tanh, self)

    def sum_squares(self) -> "Tensor":
        return apply(ops.SumSquares, self)


def _constant(value: Any, like: Tensor) -> Any:
    """Python numbers join a tensor's arithmetic in its dtype (no float32 -> float64 promotion)."""
    if isinstance(value, Number):
        return np.asarray(value, dtype=like.data.dtype)
    return value


engine.Tensor = Tensor  # the engine wraps results in Tensor without importing this module at call time

"""User families for tests: Linear, one custom op written with a numpy function, Linear (issue 21, items 2 and 8).

- `EinsumViewFamily`: the op saves `np.einsum("bi->ib", x)`, which numpy returns as a *view* of x (no new
  buffer): the prediction must not count a new one.
- `EinsumLinearFamily`: the op is a linear map written as `np.einsum("bi,oi->bo", x, w)` and reshapes its
  result, so the prediction must lay the result out as numpy's einsum does.
- `InterpFamily`: a piecewise-linear activation by `np.interp`, a function the shape-only arrays do not know:
  the prediction is unavailable, the step is measured anyway (tests/families/interp_rule.py registers a rule).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from memstudy.autograd import Function, Node, Tensor, apply, layer_scope
from memstudy.nn import Linear, Module, init
from memstudy.nn.models import Family, Field

KNOTS = np.array([-1.0, 0.0, 1.0])
VALUES = np.array([-0.5, 0.0, 1.0])
SLOPES = np.array([0.5, 0.5, 1.0, 1.0])  # left of, between and right of the knots


class EinsumViewScale(Function):
    """out = 2·x; it saves x and x's einsum transpose, which numpy returns as a view of x: one buffer, not two."""

    name = "einsum_view_scale"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x, xt=np.einsum("bi->ib", x))
        return np.multiply(x, 2.0, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, xt = ctx.saved_tensors
        return (np.multiply(grad, 2.0, dtype=grad.dtype) + 0.0 * (x + xt.T),)


class EinsumSquare(Function):
    """out = x ⊙ x through einsum; it also saves the product flattened, which copies exactly when numpy's einsum
    lays the product out other than C-contiguous."""

    name = "einsum_square"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        squared = np.einsum("bi,bi->ib", x, x)  # laid out by numpy's iterator: a transpose of a C buffer
        ctx.save(x=x, flat=squared.reshape(-1))  # a copy exactly when that layout is not C-contiguous
        return squared.T

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, flat = ctx.saved_tensors
        return (np.multiply(grad, x) * 2.0,)


class Interp(Function):
    """A piecewise-linear activation through np.interp, cast back to the input's dtype; it keeps np.interp's
    float64 result beside its input (so a shape rule that gets that dtype wrong shows in the bytes held)."""

    name = "interp"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        exact = np.interp(x, KNOTS, VALUES)
        ctx.save(x=x, exact=exact)
        return exact.astype(x.dtype)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, _ = ctx.saved_tensors
        slope = np.where(x < -1, SLOPES[0], np.where(x < 0, SLOPES[1], SLOPES[2])).astype(grad.dtype)
        return (slope * grad,)


class OpMLP(Module):
    """Linear(in_features, width), the custom op, Linear(width, classes)."""

    def __init__(self, op: type, in_features: int, width: int, classes: int, dtype: str, seed: int):
        rng = np.random.default_rng(seed)
        self.op = op
        self.first = Linear(in_features, width, dtype=dtype, seed=rng)
        self.last = Linear(width, classes, dtype=dtype, seed=rng)

    def parameter_layers(self) -> list[int | None]:
        return [0, 0, 1, 1]

    def forward(self, x: Any) -> Tensor:
        with layer_scope(0):
            h = apply(self.op, self.first(x))
        with layer_scope(1):
            return self.last(h)


class _OpFamily(Family):
    op: type = EinsumViewScale
    description = "Linear, a custom op, Linear; softmax cross-entropy"
    defaults = {"width": 16, "depth": 1}
    fields = (Field("in_features", int, 8, "input features", minimum=1),
              Field("classes", int, 5, "output classes", minimum=1))

    def build(self, config: dict[str, Any]) -> OpMLP:
        return OpMLP(self.op, config["in_features"], config["width"], config["classes"], config["dtype"],
                     config["seed"])

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        x = init.normal(rng, (config["batch_size"], config["in_features"]), config["dtype"])
        return x, init.integers(rng, 0, config["classes"], config["batch_size"])

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return ["first", "last"]


class EinsumViewFamily(_OpFamily):
    name = "einsum-view"
    op = EinsumViewScale


class EinsumSquareFamily(_OpFamily):
    name = "einsum-square"
    op = EinsumSquare


class InterpFamily(_OpFamily):
    name = "interp"
    op = Interp

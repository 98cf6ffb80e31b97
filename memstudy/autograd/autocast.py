"""Autocast as PyTorch's CPU autocast does it: parameters stay float32, some ops run in a 16-bit type.

Inside `autocast(dtype)` (dtype bfloat16 or float16), `apply` casts an op's floating-point inputs before the op
runs, by the op's policy in PyTorch's CPU lists:
- `lower_precision_fp` ops (matrix products and convolutions) get their float32 inputs cast to `dtype`;
- `fp32` ops (the losses) get their 16-bit inputs cast to float32;
- every other op runs in its inputs' dtypes; numpy's promotion makes a float32 + bfloat16 sum float32, as
  PyTorch's type promotion does (the residual stream stays float32).
float64 inputs are never cast (PyTorch's `is_eligible`).

The lists followed are PyTorch 2.13.0's (the version memstudy's cross-checks pin): `TORCH_LIBRARY_IMPL(aten,
AutocastCPU, m)` in aten/src/ATen/autocast_mode.cpp. `POLICY` maps memstudy's ops to them, and `TORCH_OPS` names the
aten ops each stands for; tests/test_autocast.py checks against the installed torch that each of those has an
AutocastCPU kernel, and that the ops memstudy leaves alone (softmax, layer_norm, gelu, ...) fall through.

A cast is an op (`Cast`): its output is a new buffer the ledger counts, it saves nothing, and its backward casts the
gradient back to the input's dtype. A cast of a parameter (a leaf that requires grad, float32, going to the 16-bit
type) is made once per autocast scope and reused by every op that takes that parameter, as PyTorch's autocast
weight-cast cache does; it is a `CastWeight`, so the ledger names these 16-bit copies of the weights (op
`autocast_weight`): 2 bytes per cast parameter, held while some op saved them for backward (a Linear whose input
needs a gradient saves its weight) or until the scope ends. Cached casts are dropped when the outermost scope ends.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .engine import STATE, Function, Node
from .precision import FLOAT32, dtype as as_dtype, is_low

AUTOCAST_DTYPES = ("bfloat16", "float16")
LOWER, FP32 = "lower_precision_fp", "fp32"

# memstudy op -> PyTorch's CPU autocast policy, and the aten ops (in PyTorch 2.13.0's CPU lists) it stands for
POLICY: dict[str, str] = {
    "linear": LOWER, "matmul": LOWER, "batched_matmul": LOWER, "conv2d": LOWER, "flash_attention": LOWER,
    "softmax_cross_entropy": FP32, "mse": FP32,
}
TORCH_OPS: dict[str, tuple[str, ...]] = {
    "linear": ("linear", "addmm"), "matmul": ("matmul", "mm"), "batched_matmul": ("matmul", "bmm"),
    "conv2d": ("conv2d",), "flash_attention": ("scaled_dot_product_attention",), "softmax_cross_entropy": ("cross_entropy_loss", "nll_loss"), "mse": ("mse_loss",),
}
# ops memstudy runs in their inputs' dtype under autocast, and the aten ops whose AutocastCPU entry falls through
FALLTHROUGH_TORCH_OPS: dict[str, tuple[str, ...]] = {
    "softmax": ("softmax.int", "_softmax"), "layer_norm": ("layer_norm", "native_layer_norm"), "gelu": ("gelu",),
    "embedding": ("embedding",), "add": ("add.Tensor",), "mul": ("mul.Tensor",), "dropout": ("dropout",),
    "silu": ("silu",), "batch_norm": ("batch_norm",), "max_pool2d": ("max_pool2d",), "relu": ("relu",),
}


class autocast:
    """Context manager: the ops applied inside it cast their inputs by their policy (see the module docstring).

    `autocast(None)` or `autocast("none")` turns it off inside. The outermost scope that turns it on owns the
    weight-cast cache; the cache (and the 16-bit weight copies only it holds) goes when that scope ends.
    """

    __slots__ = ("dtype", "_previous")

    def __init__(self, dtype: Any):
        if dtype is None or (isinstance(dtype, str) and dtype == "none"):
            self.dtype = None
            return
        dt = as_dtype(dtype)
        if not is_low(dt):
            raise ValueError(f"autocast takes a 16-bit type ({', '.join(AUTOCAST_DTYPES)}), got {dt.name}")
        self.dtype = dt

    def __enter__(self) -> "autocast":
        self._previous = (STATE.autocast, STATE.autocast_cache)
        STATE.autocast = self.dtype
        if self.dtype is not None and STATE.autocast_cache is None:
            STATE.autocast_cache = {}
        return self

    def __exit__(self, *exc: Any) -> None:
        STATE.autocast, STATE.autocast_cache = self._previous


class Cast(Function):
    """x in another floating-point dtype: a new buffer; saves nothing; backward casts the gradient back.

    Shape-only predictor: `astype` of a shape-only array gives the new buffer."""

    name = "autocast"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, dtype: np.dtype) -> np.ndarray:
        ctx.source_dtype = x.dtype
        with np.errstate(over="ignore"):  # beyond float16's range: inf, as on hardware
            return x.astype(dtype)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        with np.errstate(over="ignore"):  # a scaled gradient beyond float16's range: inf (the loss scaler backs off)
            return (grad.astype(ctx.source_dtype),)


class CastWeight(Cast):
    """A parameter's 16-bit copy under autocast, made once per scope (see the module docstring)."""

    name = "autocast_weight"


def target(fn: type, x_dtype: np.dtype) -> np.dtype | None:
    """The dtype the active autocast casts a floating-point input of `fn` to, or None (left as it is)."""
    policy = POLICY.get(fn.name)
    if policy is None or x_dtype == np.float64:
        return None
    to = STATE.autocast if policy == LOWER else FLOAT32
    return None if x_dtype == to else to


__all__ = ["AUTOCAST_DTYPES", "Cast", "CastWeight", "FALLTHROUGH_TORCH_OPS", "POLICY", "TORCH_OPS", "autocast",
           "target"]

"""SiLU (swish), x · σ(x): the gate of Llama's SwiGLU MLP, saving its input (as PyTorch's `F.silu` does)."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from .chunks import row_blocks


class SiLU(Function):
    """x · σ(x) = x / (1 + e^(−x)) (PyTorch's CPU formula); saves x: backward needs σ(x), which it recomputes from x
    rather than keeping a second full-size array.

    The SwiGLU product silu(gate) · up is the existing `Mul`, not a fused op: Mul keeps both factors (silu(gate)
    for up's gradient, up for silu's), exactly what transformers' `act_fn(gate_proj(x)) * up_proj(x)` keeps, so the
    ledger's bytes can be reconciled with transformers' saved tensors term by term (a fused op could keep gate and
    up only and recompute silu(gate) in backward: one f-sized buffer less per layer, and no longer transformers').

    Computed block by block (`chunks.row_blocks`): the hidden scratch stays ≤ CHUNK_ELEMENTS elements. Any layout:
    the output is a new C-contiguous buffer. Shape-only predictor: the same ufuncs on one block of shape-only
    arrays give the output's shape and dtype.
    """

    name = "silu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x if ctx.needs_input_grad[0] else None)
        out = np.empty(x.shape, dtype=x.dtype, like=x)
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # flat_out is a view: out is fresh and C-contiguous
        with np.errstate(over="ignore"):  # e^(−x) = inf for very negative x gives x / inf = −0, as PyTorch's
            for block in row_blocks(flat_x, 1):
                xb, ob = flat_x[block], flat_out[block]
                np.negative(xb, out=ob)
                np.exp(ob, out=ob)
                ob += 1
                np.divide(xb, ob, out=ob)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        # d/dx = σ(x) · (1 + x · (1 − σ(x)))
        result = np.empty(grad.shape, dtype=grad.dtype, like=grad)
        flat_x, flat_g, flat_r = x.reshape(-1), grad.reshape(-1), result.reshape(-1)
        blocks = row_blocks(flat_x, 1)
        sigmoids = np.empty(flat_x[blocks[0]].shape, dtype=grad.dtype, like=grad)  # one block, reused
        with np.errstate(over="ignore"):
            for block in blocks:
                xb, rb = flat_x[block], flat_r[block]
                s = sigmoids[: xb.size]
                np.negative(xb, out=s)
                np.exp(s, out=s)
                s += 1
                np.reciprocal(s, out=s)
                np.subtract(1, s, out=rb)
                rb *= xb
                rb += 1
                rb *= s
                rb *= flat_g[block]
        return (result,)

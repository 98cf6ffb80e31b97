"""SiLU (swish), x · σ(x): the gate of Llama's SwiGLU MLP, saving its input (as PyTorch's `F.silu` does)."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from ..precision import FLOAT32, is_low
from .chunks import blocks, part, scratch
from .emulate import load, store


class SiLU(Function):
    """x · σ(x) = x / (1 + e^(−x)) (PyTorch's CPU formula); saves x: backward needs σ(x), which it recomputes from x
    rather than keeping a second full-size array.

    The SwiGLU product silu(gate) · up is the existing `Mul`, not a fused op: Mul keeps both factors (silu(gate)
    for up's gradient, up for silu's), exactly what transformers' `act_fn(gate_proj(x)) * up_proj(x)` keeps, so the
    ledger's bytes can be reconciled with transformers' saved tensors term by term (a fused op could keep gate and
    up only and recompute silu(gate) in backward: one f-sized buffer less per layer, and no longer transformers').

    Any layout: computed in blocks that are views of x, the gradient and the new C-contiguous result
    (`chunks.blocks`): no hidden copy, and the hidden scratch stays ≤ CHUNK_ELEMENTS elements. A 16-bit x: each block
    in float32, rounded once. Shape-only
    predictor: the same ufuncs on one block of shape-only arrays give the output's shape and dtype.
    """

    name = "silu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x if ctx.needs_input_grad[0] else None)
        out = np.empty(x.shape, dtype=x.dtype, like=x)
        indices = blocks(x, keep_last=True)
        low = is_low(x.dtype)
        if low:
            inputs, results = scratch(x, indices[0], FLOAT32), scratch(x, indices[0], FLOAT32)
        with np.errstate(over="ignore"):  # e^(−x) = inf for very negative x gives x / inf = −0, as PyTorch's
            for index in indices:
                xb, ob = x[index], out[index]
                if low:
                    xb, target, ob = load(inputs, xb), ob, part(results, ob)
                np.negative(xb, out=ob)
                np.exp(ob, out=ob)
                ob += 1
                np.divide(xb, ob, out=ob)
                if low:
                    store(target, ob)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        # d/dx = σ(x) · (1 + x · (1 − σ(x)))
        result = np.empty(grad.shape, dtype=grad.dtype, like=grad)
        indices = blocks(grad, keep_last=True)
        low = is_low(grad.dtype) or is_low(x.dtype)
        if low:
            inputs, grads, results = (scratch(grad, indices[0], FLOAT32) for _ in range(3))
        with np.errstate(over="ignore"):
            for index in indices:
                xb, rb, gb = x[index], result[index], grad[index]
                if low:
                    xb, gb, target, rb = load(inputs, xb), load(grads, gb), rb, part(results, rb)
                s = np.empty(xb.shape, dtype=rb.dtype, like=grad)  # the block's scratch: σ(x)
                np.negative(xb, out=s)
                np.exp(s, out=s)
                s += 1
                np.reciprocal(s, out=s)
                np.subtract(1, s, out=rb)
                rb *= xb
                rb += 1
                rb *= s
                rb *= gb
                if low:
                    store(target, rb)
        return (result,)

"""GELU in GPT-2's tanh approximation, saving its input (as PyTorch's `gelu(approximate="tanh")` does)."""
from __future__ import annotations

import math

import numpy as np

from ..engine import Function, Node
from ..precision import FLOAT32, is_low
from .chunks import blocks, part, scratch
from .emulate import load, store

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


class GELU(Function):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); saves x (backward needs x, and tanh of the inner term, which
    it recomputes rather than saving a second full-size array).

    Any layout: the output (and x's gradient) is a new C-ordered array, computed block by block (`chunks.blocks`:
    the same index picks a block of x, of the gradient and of the result, whatever their strides), so the hidden
    scratch stays ≤ CHUNK_ELEMENTS elements and a non-contiguous x costs nothing more.
    A 16-bit x: each block is computed in float32 scratch and rounded once into the result (emulate.load/store).
    Shape-only predictor: the same ufuncs on one block of shape-only arrays give the output's shape and dtype.
    """

    name = "gelu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x if ctx.needs_input_grad[0] else None)
        out = np.empty(x.shape, dtype=x.dtype, like=x)
        indices = blocks(x)
        low = is_low(x.dtype)
        if low:  # float32 scratch for the block's input and result
            inputs, results = scratch(x, indices[0], FLOAT32), scratch(x, indices[0], FLOAT32)
        for index in indices:
            xb, ob = x[index], out[index]
            if low:
                xb, target, ob = load(inputs, xb), ob, part(results, ob)
            np.multiply(xb, xb, out=ob)  # ob = tanh(c·(x + k·x³)), built in place
            ob *= xb
            ob *= CUBIC
            ob += xb
            ob *= SQRT_2_OVER_PI
            np.tanh(ob, out=ob)
            ob += 1  # ob = 0.5·x·(1 + t)
            ob *= xb
            ob *= 0.5
            if low:
                store(target, ob)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        # d/dx = 0.5·(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3k·x²), t = tanh(c·(x + k·x³))
        result = np.empty(grad.shape, dtype=grad.dtype, like=grad)
        indices = blocks(x)
        low = is_low(x.dtype) or is_low(grad.dtype)
        work = FLOAT32 if low else x.dtype
        squares, tanhs = scratch(x, indices[0], work), scratch(x, indices[0], work)  # reused by every block
        if low:
            inputs, grads, results = (scratch(x, indices[0], FLOAT32) for _ in range(3))
        for index in indices:
            xb, rb, gb = x[index], result[index], grad[index]
            if low:
                xb, gb, target, rb = load(inputs, xb), load(grads, gb), rb, part(results, rb)
            x2, t = part(squares, xb), part(tanhs, xb)
            np.multiply(xb, xb, out=x2)
            np.multiply(x2, xb, out=t)
            t *= CUBIC
            t += xb
            t *= SQRT_2_OVER_PI
            np.tanh(t, out=t)
            # rb = 0.5·x·(1 − t²)·c·(1 + 3k·x²)
            x2 *= 3 * CUBIC
            x2 += 1
            x2 *= SQRT_2_OVER_PI
            np.multiply(t, t, out=rb)
            np.subtract(1, rb, out=rb)
            rb *= x2
            rb *= xb
            t += 1  # + (1 + t), then the common factor 0.5 and the incoming gradient
            rb += t
            rb *= 0.5
            rb *= gb
            if low:
                store(target, rb)
        return (result,)

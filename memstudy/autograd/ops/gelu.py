"""GELU in GPT-2's tanh approximation, saving its input (as PyTorch's `gelu(approximate="tanh")` does)."""
from __future__ import annotations

import math

import numpy as np

from ..engine import Function, Node
from .chunks import blocks, part, scratch

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


class GELU(Function):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); saves x (backward needs x, and tanh of the inner term, which
    it recomputes rather than saving a second full-size array).

    Any layout: the output (and x's gradient) is a new C-ordered array, computed block by block (`chunks.blocks`:
    the same index picks a block of x, of the gradient and of the result, whatever their strides), so the hidden
    scratch stays ≤ CHUNK_ELEMENTS elements and a non-contiguous x costs nothing more.
    Shape-only predictor: the same ufuncs on one block of shape-only arrays give the output's shape and dtype.
    """

    name = "gelu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x if ctx.needs_input_grad[0] else None)
        out = np.empty(x.shape, dtype=x.dtype, like=x)
        for index in blocks(x):
            xb, ob = x[index], out[index]
            np.multiply(xb, xb, out=ob)  # ob = tanh(c·(x + k·x³)), built in place
            ob *= xb
            ob *= CUBIC
            ob += xb
            ob *= SQRT_2_OVER_PI
            np.tanh(ob, out=ob)
            ob += 1  # ob = 0.5·x·(1 + t)
            ob *= xb
            ob *= 0.5
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        # d/dx = 0.5·(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3k·x²), t = tanh(c·(x + k·x³))
        result = np.empty(grad.shape, dtype=grad.dtype, like=grad)
        indices = blocks(x)
        squares, tanhs = scratch(x, indices[0]), scratch(x, indices[0])  # reused by every block
        for index in indices:
            xb, rb = x[index], result[index]
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
            rb *= grad[index]
        return (result,)

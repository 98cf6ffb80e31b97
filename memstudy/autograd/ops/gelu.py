"""GELU in GPT-2's tanh approximation, saving its input (as PyTorch's `gelu(approximate="tanh")` does)."""
from __future__ import annotations

import math

import numpy as np

from ..engine import Function, Node
from .chunks import row_blocks

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


class GELU(Function):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); saves x (backward needs x, and tanh of the inner term, which
    it recomputes rather than saving a second full-size array).

    Computed block by block (`chunks.row_blocks`): the hidden scratch stays ≤ CHUNK_ELEMENTS elements.
    Shape-only predictor: the same ufuncs on one block of shape-only arrays give the output's shape and dtype.
    """

    name = "gelu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x if ctx.needs_input_grad[0] else None)
        out = np.empty_like(x)
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)
        for block in row_blocks(flat_x, 1):
            xb, ob = flat_x[block], flat_out[block]
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
        result = np.empty_like(grad)
        flat_x, flat_g, flat_r = x.reshape(-1), grad.reshape(-1), result.reshape(-1)
        blocks = row_blocks(flat_x, 1)
        squares, tanhs = np.empty_like(flat_x[blocks[0]]), np.empty_like(flat_x[blocks[0]])  # reused per block
        for block in blocks:
            xb, rb = flat_x[block], flat_r[block]
            x2, t = squares[: xb.size], tanhs[: xb.size]
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
            rb *= flat_g[block]
        return (result,)

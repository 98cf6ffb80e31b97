"""Inverted dropout with a 1-byte boolean mask; the random draw is isolated in `keep_mask`."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from .chunks import row_blocks
from .emulate import low_dtype, ufunc


def keep_mask(rng: np.random.Generator, x: np.ndarray, p: float) -> np.ndarray:
    """A boolean array of x's shape, True with probability 1 − p (drawn block by block: the hidden float32
    draw stays ≤ CHUNK_ELEMENTS elements). For a shape-only x no number is drawn: an empty mask of its shape."""
    if not isinstance(x, np.ndarray):
        return np.empty(x.shape, dtype=bool, like=x)
    mask = np.empty(x.shape, dtype=bool)
    flat = mask.reshape(-1)
    for block in row_blocks(flat, 1):
        part = flat[block]
        np.greater_equal(rng.random(part.size, dtype=np.float32), p, out=part)
    return mask


class Dropout(Function):
    """Zero each element with probability p and scale the rest by 1/(1 − p); saves the 1-byte keep mask.

    With p = 0 it returns its input and saves nothing (the model skips it outside training). The mask is
    drawn from `rng` (a numpy Generator passed as a constant: the same generator state gives the same mask,
    which a checkpoint's recompute relies on). Shape-only predictor: `keep_mask` returns an empty boolean
    mask of the input's shape without drawing, and the ufuncs give the output's shape.
    """

    name = "dropout"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, p: float, rng: np.random.Generator) -> np.ndarray:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        if p == 0.0:
            ctx.save(mask=None)
            return x
        mask = keep_mask(rng, x, p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save(mask=mask if ctx.needs_input_grad[0] else None)
        return _masked(x, mask, ctx.scale)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (mask,) = ctx.saved_tensors
        if mask is None:  # p = 0: the identity
            return (grad,)
        return (_masked(grad, mask, ctx.scale),)


def _masked(x: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """x · mask · scale in one new buffer (a 16-bit x in float32 blocks, rounded once)."""
    if low_dtype(x) is not None:
        return ufunc(lambda v, m, out: np.multiply(np.multiply(v, m, out=out), scale, out=out), x, mask)
    out = np.multiply(x, mask)
    out *= scale
    return out

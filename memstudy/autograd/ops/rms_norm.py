"""Root-mean-square normalisation over the last axis (Zhang & Sennrich 2019), as Llama uses it."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from .chunks import row_blocks
from .linalg import small_ufunc_buffer


class RMSNorm(Function):
    """y = x · rstd · weight, rstd = 1/√(mean(x²) + eps) over the last axis (transformers' `LlamaRMSNorm`).

    Saves, for backward: x and rstd (one value per row, shaped (..., 1)) when x's or weight's gradient is needed,
    and weight when x's is. The normalised x̂ = x · rstd is recomputed in backward, block by block
    (`chunks.row_blocks`), so the hidden scratch stays ≤ CHUNK_ELEMENTS elements. (transformers' unfused module
    also keeps x̂, which its `weight * x̂` saves for the weight's gradient: one more full-size buffer per norm whose
    weight is trained; tests/test_llama_hf.py counts it.)

    Backward: grad_w = Σ_rows g·x̂; grad_x = rstd · (g·w − x̂ · mean(g·w·x̂)) over the last axis.
    Any layout: the output and gradients are new C-contiguous buffers; a non-contiguous x or gradient is read
    through its row view (a copy numpy makes for reading only). Shape-only predictor: the same ufuncs on one block
    of shape-only arrays give every buffer's shape.
    """

    name = "rms_norm"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
        if x.ndim < 1 or weight.shape != x.shape[-1:]:
            raise ValueError(f"rms_norm takes (..., width) and a (width,) weight, got {x.shape} and {weight.shape}")
        width = x.shape[-1]
        dtype = np.result_type(x, weight)
        out = np.empty(x.shape, dtype=dtype, like=x)
        rstd = np.empty(x.shape[:-1] + (1,), dtype=dtype, like=x)
        rows, out_rows, rstd_rows = x.reshape(-1, width), out.reshape(-1, width), rstd.reshape(-1, 1)
        blocks = row_blocks(rows, width)
        squares = np.empty(rows[blocks[0]].shape, dtype=dtype, like=x)  # one block of scratch, reused
        with small_ufunc_buffer():  # weight broadcasts over the rows
            for block in blocks:
                xb, ob, rb = rows[block], out_rows[block], rstd_rows[block]
                sq = squares[: xb.shape[0]]
                np.multiply(xb, xb, out=sq)
                np.add.reduce(sq, axis=1, keepdims=True, out=rb)  # Σ x² per row, then 1/√(mean + eps)
                rb /= max(width, 1)
                rb += eps
                np.sqrt(rb, out=rb)
                np.divide(1, rb, out=rb)
                np.multiply(xb, rb, out=ob)
                ob *= weight
        need_x, need_w = ctx.needs_input_grad
        keep = need_x or need_w
        ctx.eps = eps
        ctx.save(x=x if keep else None, rstd=rstd if keep else None, weight=weight if need_x else None)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, rstd, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad
        width = grad.shape[-1]
        g_rows, x_rows, rstd_rows = grad.reshape(-1, width), x.reshape(-1, width), rstd.reshape(-1, 1)
        grad_w = np.zeros(width, dtype=grad.dtype, like=grad) if need_w else None
        grad_x = np.empty(grad.shape, dtype=grad.dtype, like=grad) if need_x else None
        gx_rows = grad_x.reshape(-1, width) if need_x else None  # a view: grad_x is fresh and C-contiguous
        blocks = row_blocks(x_rows, width)
        # three blocks of scratch, allocated once: x̂, grad · weight, and a product
        xhats, gws, products = (np.empty(x_rows[blocks[0]].shape, dtype=grad.dtype, like=grad) for _ in range(3))
        with small_ufunc_buffer():
            for block in blocks:
                gb = g_rows[block]
                n = gb.shape[0]
                xhat, gw, product = xhats[:n], gws[:n], products[:n]
                np.multiply(x_rows[block], rstd_rows[block], out=xhat)
                if need_w:
                    np.multiply(gb, xhat, out=product)
                    grad_w += np.add.reduce(product, axis=0)  # Σ over rows of grad · x̂
                if need_x:
                    np.multiply(gb, weight, out=gw)
                    np.multiply(gw, xhat, out=product)
                    m = np.add.reduce(product, axis=1, keepdims=True)
                    m /= max(width, 1)
                    xhat *= m
                    out = gx_rows[block]
                    np.subtract(gw, xhat, out=out)
                    out *= rstd_rows[block]
        return grad_x, grad_w

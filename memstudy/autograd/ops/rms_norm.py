"""Root-mean-square normalisation over the last axis (Zhang & Sennrich 2019), as Llama uses it."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from ..precision import FLOAT32, compute_dtype, is_low
from .chunks import blocks, part, scratch
from .emulate import load, store, widened
from .linalg import small_ufunc_buffer


class RMSNorm(Function):
    """y = x · rstd · weight, rstd = 1/√(mean(x²) + eps) over the last axis (transformers' `LlamaRMSNorm`).

    Saves, for backward: x and rstd (one value per row, shaped (..., 1)) when x's or weight's gradient is needed,
    and weight when x's is. The normalised x̂ = x · rstd is recomputed in backward. (transformers' unfused module
    also keeps x̂, which its `weight * x̂` saves for the weight's gradient: one more full-size buffer per norm whose
    weight is trained; tests/test_llama_hf.py counts it.)

    Backward: grad_w = Σ_rows g·x̂; grad_x = rstd · (g·w − x̂ · mean(g·w·x̂)) over the last axis.
    Any layout: computed in blocks of rows that are views of x, the gradient and the new C-contiguous results
    (`chunks.blocks`), so a transposed, strided or broadcast input costs no hidden copy and the hidden scratch
    stays ≤ CHUNK_ELEMENTS elements. A 16-bit x: rstd is float32 (transformers' LlamaRMSNorm computes the statistic
    in float32 whatever the input), and each block is computed in float32 and rounded once. Shape-only predictor:
    the same ufuncs on one block of shape-only arrays give every buffer's shape.
    """

    name = "rms_norm"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
        if x.ndim < 1 or weight.shape != x.shape[-1:]:
            raise ValueError(f"rms_norm takes (..., width) and a (width,) weight, got {x.shape} and {weight.shape}")
        width = x.shape[-1]
        dtype = np.result_type(x.dtype, weight.dtype)
        out = np.empty(x.shape, dtype=dtype, like=x)
        rstd = np.empty(x.shape[:-1] + (1,), dtype=compute_dtype(dtype), like=x)
        indices = blocks(x, keep_last=True)
        low = is_low(dtype)
        saved_weight = weight
        if low:
            inputs, results = scratch(x, indices[0], FLOAT32), scratch(x, indices[0], FLOAT32)
            weight = widened(weight)
        with small_ufunc_buffer():  # weight broadcasts over the rows
            for index in indices:
                xb, ob, rb = x[index], out[index], rstd[index]
                if low:
                    xb, target, ob = load(inputs, xb), ob, part(results, ob)
                squares = np.multiply(xb, xb)  # one block of scratch
                np.add.reduce(squares, axis=-1, keepdims=True, out=rb)  # Σ x² per row, then 1/√(mean + eps)
                del squares
                rb /= max(width, 1)
                rb += eps
                np.sqrt(rb, out=rb)
                np.divide(1, rb, out=rb)
                np.multiply(xb, rb, out=ob)
                ob *= weight
                if low:
                    store(target, ob)
        need_x, need_w = ctx.needs_input_grad
        keep = need_x or need_w
        ctx.eps, ctx.weight_dtype = eps, saved_weight.dtype
        ctx.save(x=x if keep else None, rstd=rstd if keep else None, weight=saved_weight if need_x else None)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, rstd, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad
        width = grad.shape[-1]
        low = is_low(grad.dtype) or is_low(x.dtype)
        grad_w = np.zeros(width, dtype=FLOAT32 if low else grad.dtype, like=grad) if need_w else None
        grad_x = np.empty(grad.shape, dtype=grad.dtype, like=grad) if need_x else None
        indices = blocks(grad, keep_last=True)
        if low:
            grads, results = scratch(grad, indices[0], FLOAT32), scratch(grad, indices[0], FLOAT32)
            weight = None if weight is None else widened(weight)
        with small_ufunc_buffer():
            for index in indices:
                gb, rb = grad[index], rstd[index]
                if low:
                    gb = load(grads, gb)
                xhat = np.multiply(x[index], rb)  # the block's scratch: x̂, and one product
                if need_w:
                    product = np.multiply(gb, xhat)
                    grad_w += np.add.reduce(product, axis=tuple(range(product.ndim - 1)))  # Σ_rows grad · x̂
                if need_x:
                    out = part(results, gb) if low else grad_x[index]
                    np.multiply(gb, weight, out=out)  # g·w, in the result's block
                    product = np.multiply(out, xhat)
                    m = np.add.reduce(product, axis=-1, keepdims=True)
                    m /= max(width, 1)
                    xhat *= m
                    out -= xhat
                    out *= rb
                    if low:
                        store(grad_x[index], out)
                xhat = product = None
        if low and grad_w is not None:  # summed in float32, rounded once into the weight's dtype
            grad_w = grad_w.astype(ctx.weight_dtype)
        return grad_x, grad_w

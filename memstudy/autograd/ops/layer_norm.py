"""Layer normalisation over the last axis, saving its input, mean and 1/std (as PyTorch's CPU kernel does)."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from ..precision import FLOAT32, compute_dtype, is_low
from .chunks import blocks, part, scratch
from . import emulate
from .emulate import load, store, widened
from .linalg import small_ufunc_buffer


class LayerNorm(Function):
    """y = (x − mean) / √(var + eps) · weight (+ bias), statistics over the last axis (biased variance).

    Saves x, mean and rstd = 1/√(var + eps) (each statistic one value per row, shaped (..., 1)) when x's or
    weight's gradient is needed, and weight when x's is; the normalised x̂ is recomputed in backward, block by
    block of whole rows (`chunks.blocks`), so the hidden scratch stays ≤ CHUNK_ELEMENTS elements.
    Any layout: the output, the statistics and x's gradient are new C-ordered arrays, and each block indexes x, the
    incoming gradient and the results alike, whatever their strides (a transposed x, a gradient broadcast by a
    mean over the sequence): a non-contiguous x or gradient costs nothing more.
    A 16-bit x: the statistics are float32 (as PyTorch's CPU kernel keeps them for a 16-bit input), and each block is
    computed in float32 scratch and rounded once into the result (and x's gradient); the weight's and bias's
    gradients are summed in float32.
    Shape-only predictor: the same ufuncs on one block of shape-only arrays give every buffer's shape.
    """

    name = "layer_norm"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                eps: float = 1e-5) -> np.ndarray:
        width = x.shape[-1]
        ctx_weight = weight  # the parameter itself is saved (a float32 copy of a 16-bit one is the block loop's)
        out = np.empty(x.shape, dtype=x.dtype, like=x)
        work = compute_dtype(x.dtype)
        mean = np.empty(x.shape[:-1] + (1,), dtype=work, like=x)
        rstd = np.empty_like(mean)
        indices = blocks(x, keep_last=True)
        squares = scratch(x, indices[0], work)  # one block of scratch, reused by every block
        low = is_low(x.dtype)
        if low:
            inputs, results = scratch(x, indices[0], FLOAT32), scratch(x, indices[0], FLOAT32)
            weight, bias = widened(weight), None if bias is None else widened(bias)
        with small_ufunc_buffer():  # weight and bias broadcast over the rows
            for index in indices:
                xb, ob, mb, rb = x[index], out[index], mean[index], rstd[index]
                if low:
                    xb, target, ob = load(inputs, xb), ob, part(results, ob)
                sq = part(squares, xb)
                np.add.reduce(xb, axis=-1, keepdims=True, out=mb)
                mb /= width
                np.subtract(xb, mb, out=ob)
                np.multiply(ob, ob, out=sq)
                np.add.reduce(sq, axis=-1, keepdims=True, out=rb)  # Σ (x − mean)² per row, then 1/std
                rb /= width
                rb += eps
                np.sqrt(rb, out=rb)
                np.divide(1, rb, out=rb)
                ob *= rb
                ob *= weight
                if bias is not None:
                    ob += bias
                if low:
                    store(target, ob)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        keep = need_x or need_w
        ctx.eps, ctx.weight_dtype = eps, ctx_weight.dtype
        ctx.save(x=x if keep else None, mean=mean if keep else None, rstd=rstd if keep else None,
                 weight=ctx_weight if need_x else None)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, mean, rstd, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need_x, need_w, need_b = needs[0], needs[1], len(needs) > 2 and needs[2]
        width = grad.shape[-1]
        rows = tuple(range(grad.ndim - 1))  # every axis but the last: the sums over rows
        low = is_low(grad.dtype) or (x is not None and is_low(x.dtype))
        if need_b:
            grad_b = emulate.reduce_sum(grad, rows) if is_low(grad.dtype) else np.add.reduce(grad, axis=rows)
        else:
            grad_b = None
        if not (need_x or need_w):
            return None, None, grad_b
        work = FLOAT32 if low else grad.dtype
        grad_w = np.zeros(width, dtype=work, like=grad) if need_w else None
        grad_x = np.empty(grad.shape, dtype=grad.dtype, like=grad) if need_x else None
        indices = blocks(x, keep_last=True)
        # three blocks of scratch, allocated once: x̂, grad · weight, and a product
        xhats, gws, products = (scratch(x, indices[0], work) for _ in range(3))
        if low:
            grads, results = scratch(x, indices[0], FLOAT32), scratch(x, indices[0], FLOAT32)
            weight = None if weight is None else widened(weight)
        with small_ufunc_buffer():
            for index in indices:
                gb = grad[index]
                if low:
                    gb = load(grads, gb)
                xhat, gw, product = part(xhats, gb), part(gws, gb), part(products, gb)
                np.subtract(x[index], mean[index], out=xhat)
                xhat *= rstd[index]
                if need_w:
                    np.multiply(gb, xhat, out=product)
                    grad_w += np.add.reduce(product, axis=tuple(range(product.ndim - 1)))  # Σ over rows of grad·x̂
                if need_x:
                    # dx = rstd · (gŵ − mean(gŵ) − x̂ · mean(gŵ · x̂)), gŵ = grad · weight
                    np.multiply(gb, weight, out=gw)
                    m1 = np.add.reduce(gw, axis=-1, keepdims=True)
                    m1 /= width
                    np.multiply(gw, xhat, out=product)
                    m2 = np.add.reduce(product, axis=-1, keepdims=True)
                    m2 /= width
                    xhat *= m2
                    out = part(results, gb) if low else grad_x[index]
                    np.subtract(gw, xhat, out=out)
                    out -= m1
                    out *= rstd[index]
                    if low:
                        store(grad_x[index], out)
        if low and grad_w is not None:  # summed in float32, rounded once into the weight's dtype
            grad_w = grad_w.astype(ctx.weight_dtype)
        if len(needs) == 2:
            return grad_x, grad_w
        return grad_x, grad_w, grad_b

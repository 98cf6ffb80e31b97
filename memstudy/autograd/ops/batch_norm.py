"""Batch normalisation over the channel axis of NCHW arrays: training (batch statistics) and inference.

Training normalises each channel by the mean and (biased) variance of the batch over N, H and W, then scales
by γ and shifts by β. It saves what PyTorch's CPU kernel saves: the input x and the batch's per-channel mean
and inverse standard deviation (C values each); backward rebuilds x̂ = (x − μ)·σ⁻¹ inside the buffer that
becomes the input's gradient, so neither pass makes a hidden input-sized temporary (the per-channel sums of
products go through `np.einsum`, which makes no product array).

The running mean and variance (model state, not gradients or activations) are updated in place by the
training forward when given (PyTorch's rule: momentum 0.1, the variance unbiased); inference normalises by
them instead of the batch's statistics.
"""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from ..precision import FLOAT32, is_low
from .emulate import elementwise, widened
from .linalg import small_ufunc_buffer


def _per_channel(values: np.ndarray) -> np.ndarray:
    """A (C,) array as (1, C, 1, 1), to broadcast over an NCHW array."""
    return values.reshape(1, -1, 1, 1)


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """Σ over N, H, W of an NCHW array: over the contiguous H·W first, then over N (a (N, C) temporary only); an
    array of another layout (a gradient broadcast from a pooled one) over its three axes in place, never copied."""
    n, c, h, w = a.shape
    if not a.flags.c_contiguous:
        return np.add.reduce(a, axis=(0, 2, 3))
    return np.add.reduce(np.add.reduce(a.reshape(n, c, h * w), axis=2), axis=0)


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ over N, H, W of a·b per channel, without an a·b array (and without a copy of either, whatever its layout)."""
    if not (a.flags.c_contiguous and b.flags.c_contiguous):
        return np.einsum("nchw,nchw->c", a, b)
    n, c, h, w = a.shape
    return np.einsum("ncp,ncp->c", a.reshape(n, c, h * w), b.reshape(n, c, h * w))


def _check(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} takes (N, C, H, W) input, got shape {x.shape}")
    if weight.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
        raise ValueError(f"{name}: weight and bias must have shape ({x.shape[1]},), got {weight.shape} and "
                         f"{bias.shape}")


class BatchNorm2d(Function):
    """Training batch norm: y = γ·(x − μ_B)/√(σ²_B + ε) + β with the batch's statistics per channel.

    Saves x, μ_B and σ⁻¹ (and γ, a parameter, for the input's gradient); updates `running_mean` /
    `running_var` in place when given. Shape-only prediction: runs unchanged on shape-only arrays
    (reductions, `np.einsum`, in-place ufuncs; the running statistics' update is a no-op there).
    """

    name = "batch_norm"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, eps: float = 1e-5,
                momentum: float = 0.1, running_mean: np.ndarray | None = None,
                running_var: np.ndarray | None = None) -> np.ndarray:
        _check(x, weight, bias, "batch_norm")
        count = x.shape[0] * x.shape[2] * x.shape[3]  # elements per channel
        if count < 2 and running_var is not None:
            raise ValueError(f"batch_norm: one value per channel ({x.shape}) has no variance to track")
        low = is_low(x.dtype)
        with small_ufunc_buffer():  # per-channel broadcasts go through numpy's hidden buffer: keep it small
            if low:
                wide = ctx.workspace(x.astype(FLOAT32), "fp32_input")
                out, mean, var, invstd = BatchNorm2d._normalize(wide, widened(weight), widened(bias), eps, count)
                out = ctx.result(ctx.workspace(out, "fp32_out").astype(x.dtype))
                wide = None
            else:
                out, mean, var, invstd = BatchNorm2d._normalize(x, weight, bias, eps, count)
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1.0 - momentum
            running_var += (momentum * count / (count - 1)) * var
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        keep = need_x or need_w
        ctx.count = count
        ctx.save(x=x if keep else None, mean=mean if keep else None, invstd=invstd if keep else None,
                 weight=weight if need_x else None)
        return out

    @staticmethod
    def _normalize(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, count: int) -> tuple:
        """(γ·x̂ + β, μ, σ², σ⁻¹) of the batch: x̂ built in the output's buffer."""
        mean = _channel_sum(x)
        mean *= 1.0 / count
        out = np.subtract(x, _per_channel(mean))  # centred, in the output's buffer
        var = _channel_dot(out, out)
        var *= 1.0 / count
        invstd = np.add(var, eps)
        np.sqrt(invstd, out=invstd)
        np.reciprocal(invstd, out=invstd)
        out *= _per_channel(invstd * weight)
        out += _per_channel(bias)
        return out, mean, var, invstd

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, mean, invstd, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        if is_low(grad.dtype):  # in float32, each gradient rounded once to its input's dtype
            dtype = grad.dtype
            wide_grad = ctx.workspace(grad.astype(FLOAT32), "fp32_grad")
            wide_x = None if x is None else ctx.workspace(x.astype(FLOAT32), "fp32_input")
            grads = BatchNorm2d._backward_wide(ctx, wide_grad, wide_x, mean, invstd,
                                               None if weight is None else widened(weight))
            return tuple(None if g is None else g.astype(dtype) for g in grads)
        return BatchNorm2d._backward_wide(ctx, grad, x, mean, invstd, weight)

    @staticmethod
    def _backward_wide(ctx: Node, grad: np.ndarray, x: np.ndarray | None, mean: np.ndarray, invstd: np.ndarray,
                       weight: np.ndarray | None) -> tuple:
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_sum = _channel_sum(grad)  # = β's gradient
        if not (need_x or need_w):
            return None, None, grad_sum
        with small_ufunc_buffer():  # per-channel broadcasts go through numpy's hidden buffer: keep it small
            return BatchNorm2d._backward(ctx, grad, x, mean, invstd, weight, grad_sum)

    @staticmethod
    def _backward(ctx: Node, grad: np.ndarray, x: np.ndarray, mean: np.ndarray, invstd: np.ndarray,
                  weight: np.ndarray | None, grad_sum: np.ndarray) -> tuple:
        need_x, need_w, need_b = ctx.needs_input_grad
        # x̂ in the buffer that becomes the input's gradient (or a workspace when only γ needs a gradient)
        result = np.subtract(x, _per_channel(mean))
        if not need_x:
            ctx.workspace(result, "normalized")
        result *= _per_channel(invstd)
        grad_dot = ctx.result(_channel_dot(grad, result))  # Σ grad·x̂ = γ's gradient, made beside x̂
        grad_x = None
        if need_x:
            # dx = γσ⁻¹ · (grad − mean(grad) − x̂ · mean(grad·x̂)), built in place over x̂
            result *= _per_channel(grad_dot * (-1.0 / ctx.count))
            result += grad
            result -= _per_channel(grad_sum * (1.0 / ctx.count))
            result *= _per_channel(weight * invstd)
            grad_x = result
        result = None
        return grad_x, (grad_dot if need_w else None), (grad_sum if need_b else None)


class BatchNorm2dEval(Function):
    """Inference batch norm: y = γ·(x − μ_run)/√(σ²_run + ε) + β with the running statistics (a per-channel
    affine map). Saves x (for γ's gradient) and copies of μ_run and σ⁻¹ (C values each), γ for the input's
    gradient. Shape-only prediction: runs unchanged on shape-only arrays."""

    name = "batch_norm_eval"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, running_mean: np.ndarray,
                running_var: np.ndarray, eps: float = 1e-5) -> np.ndarray:
        _check(x, weight, bias, "batch_norm_eval")
        low = is_low(x.dtype)
        invstd = np.add(widened(running_var), eps)  # float32 for 16-bit statistics
        np.sqrt(invstd, out=invstd)
        np.reciprocal(invstd, out=invstd)
        scale = invstd * weight
        shift = bias - running_mean * scale
        with small_ufunc_buffer():  # per-channel broadcasts go through numpy's hidden buffer: keep it small
            if low:  # one affine map per channel, in float32 blocks, rounded once
                out = elementwise(_affine, x.dtype, x, _per_channel(scale), _per_channel(shift))
            else:
                out = np.multiply(x, _per_channel(scale))
                out += _per_channel(shift)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.weight_dtype = weight.dtype
        ctx.save(x=x if need_w else None, mean=running_mean.copy() if need_w else None,
                 invstd=invstd if need_x or need_w else None, weight=weight if need_x else None)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, mean, invstd, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        low = is_low(grad.dtype)
        wide_grad = ctx.workspace(grad.astype(FLOAT32), "fp32_grad") if low else grad
        grad_sum = _channel_sum(wide_grad)
        grad_w = None
        if need_w:  # Σ grad·(x − μ)·σ⁻¹ = σ⁻¹·(Σ grad·x − μ·Σ grad): no x̂ array
            wide_x = ctx.workspace(x.astype(FLOAT32), "fp32_input") if low else x
            grad_w = (_channel_dot(wide_grad, wide_x) - mean * grad_sum) * invstd
            wide_x = None
        wide_grad = None
        with small_ufunc_buffer():
            grad_x = None
            if need_x:
                factor = _per_channel(weight * invstd)
                grad_x = elementwise(np.multiply, grad.dtype, grad, factor) if low else np.multiply(grad, factor)
        if low:  # the parameters' gradients in their dtype
            grad_sum = grad_sum.astype(ctx.weight_dtype)
            grad_w = None if grad_w is None else grad_w.astype(ctx.weight_dtype)
        return grad_x, grad_w, (grad_sum if need_b else None)


def _affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    np.multiply(x, scale, out=out)
    out += shift

"""Losses: fused softmax cross-entropy and mean squared error."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node, _as_array
from ..precision import FLOAT32, is_low
from .chunks import sum_of_squares
from .emulate import elementwise, ufunc
from .shape import unbroadcast


class SoftmaxCrossEntropy(Function):
    """Mean over all positions of -log softmax(logits)[label], fused and stable (max subtracted first).

    Logits are (batch, classes) with (batch,) labels, or (..., classes) with (...) labels (a GPT's
    (b, s, vocab) with (b, s) next-token targets): the leading axes are positions, averaged over together.
    Saves the softmax probabilities (the logits' shape) and the labels (as given: a view of the caller's
    array is saved as that view): backward is (p - onehot) / positions.
    16-bit logits are read in float32 (one float32 copy of the logits becomes the saved probabilities): the softmax,
    the loss and the saved probabilities stay float32, as Megatron-LM's and transformers' losses upcast the logits
    (and PyTorch's autocast runs cross_entropy_loss in float32); the logits' gradient is made in their dtype.
    Shape-only prediction: by dispatch (same numpy calls); the row indices are `np.arange(..., like=logits)`,
    and `float(grad)` of a shape-only gradient is a neutral 1.0 (a value scales the result, never sizes it).
    """

    name = "softmax_cross_entropy"

    @staticmethod
    def forward(ctx: Node, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if logits.ndim < 2:
            raise ValueError(f"cross_entropy takes (..., classes) logits, got shape {logits.shape}")
        labels = np.asarray(labels, like=logits)  # an array (or a view of one) is used as given
        if labels.shape != logits.shape[:-1] or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers of shape {logits.shape[:-1]}, got {labels.dtype} "
                             f"{labels.shape}")
        ctx.logits_dtype = logits.dtype
        if is_low(logits.dtype):
            return SoftmaxCrossEntropy._forward_low(ctx, logits, labels)
        if logits.ndim > 2:
            return SoftmaxCrossEntropy._forward_positions(ctx, logits, labels)
        batch = logits.shape[0]
        probs = np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True))  # shifted: row maxima 0
        picked = probs[np.arange(batch, like=logits), labels]  # shifted logit of each example's label
        np.exp(probs, out=probs)
        total = np.add.reduce(probs, axis=1, keepdims=True)
        probs /= total
        # mean of log Σexp − picked, as two sums (np.mean's Python wrapper costs more than the arithmetic here)
        loss = (np.add.reduce(np.log(total), axis=None) - np.add.reduce(picked)) / batch
        ctx.save(probs=probs, labels=labels)
        return np.asarray(loss, dtype=logits.dtype, like=logits)

    @staticmethod
    def _forward_positions(ctx: Node, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(..., classes) logits: the same arithmetic over the last axis, labels picked by take_along_axis (no
        flattening, so labels that are a strided view are not copied)."""
        positions = labels.size
        probs = np.subtract(logits, np.max(logits, axis=-1, keepdims=True))
        picked = np.take_along_axis(probs, labels[..., None], axis=-1)
        np.exp(probs, out=probs)
        total = np.add.reduce(probs, axis=-1, keepdims=True)
        probs /= total
        loss = (np.add.reduce(np.log(total), axis=None) - np.add.reduce(picked, axis=None)) / positions
        ctx.save(probs=probs, labels=labels)
        return np.asarray(loss, dtype=logits.dtype, like=logits)

    @staticmethod
    def _forward_low(ctx: Node, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """16-bit logits: the float32 copy is shifted, exponentiated and normalised in place (no second buffer)."""
        probs = logits.astype(FLOAT32)
        probs -= np.max(probs, axis=-1, keepdims=True)
        picked = np.take_along_axis(probs, labels[..., None], axis=-1)
        np.exp(probs, out=probs)
        total = np.add.reduce(probs, axis=-1, keepdims=True)
        probs /= total
        loss = (np.add.reduce(np.log(total), axis=None) - np.add.reduce(picked, axis=None)) / labels.size
        ctx.save(probs=probs, labels=labels)
        return np.asarray(loss, dtype=FLOAT32, like=logits)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        probs, labels = ctx.saved_tensors
        if is_low(ctx.logits_dtype):
            return SoftmaxCrossEntropy._backward_low(ctx, grad, probs, labels)
        result = probs.copy()
        if probs.ndim == 2:
            result[np.arange(probs.shape[0], like=probs), labels] -= 1
            result *= float(grad) / probs.shape[0]
            return (result, None)
        index = labels[..., None]
        picked = np.take_along_axis(result, index, axis=-1)
        picked -= 1
        np.put_along_axis(result, index, picked, axis=-1)
        result *= float(grad) / labels.size
        return (result, None)


    @staticmethod
    def _backward_low(ctx: Node, grad: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> tuple:
        """(p − onehot)·g/positions into the 16-bit logits' dtype: p·factor in float32 blocks, rounded once; each
        label's entry (p − 1)·factor from the float32 probabilities (one value per position), then rounded."""
        factor = float(grad) / labels.size
        result = elementwise(lambda p, out: np.multiply(p, factor, out=out), ctx.logits_dtype, probs)
        index = labels[..., None]
        picked = np.take_along_axis(probs, index, axis=-1)
        picked -= 1
        picked *= factor
        np.put_along_axis(result, index, picked.astype(ctx.logits_dtype), axis=-1)
        return (result, None)


class MSE(Function):
    """Mean over all elements of (pred - target)²; saves the difference only.

    A 16-bit input: the difference is rounded once to its dtype, the sum of squares accumulated in float32.
    Shape-only prediction: by dispatch (same numpy calls; the 0-d result via `np.asarray(..., like=diff)`).
    """

    name = "mse"

    @staticmethod
    def forward(ctx: Node, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        diff = _as_array(ufunc(np.subtract, pred, target))  # an array even for 0-d operands: it is saved
        ctx.pred_shape, ctx.target_shape = pred.shape, np.shape(target)
        ctx.count = diff.size
        ctx.save(diff=diff)
        # block by block: diff follows the operands' layout, and flattening a non-C one would copy it
        return np.asarray(sum_of_squares(diff) / diff.size, dtype=diff.dtype, like=diff)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (diff,) = ctx.saved_tensors
        need_pred, need_target = ctx.needs_input_grad
        if is_low(diff.dtype):
            scaled = ufunc(np.multiply, diff, 2 * float(grad) / ctx.count)
        else:
            scaled = diff * (2 * grad / ctx.count)
        return (
            unbroadcast(scaled, ctx.pred_shape) if need_pred else None,
            -unbroadcast(scaled, ctx.target_shape) if need_target else None,
        )

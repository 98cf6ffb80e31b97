"""Losses: fused softmax cross-entropy and mean squared error."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from .shape import unbroadcast


class SoftmaxCrossEntropy(Function):
    """Mean over the batch of -log softmax(logits)[label], fused and stable (max subtracted first).

    Saves the softmax probabilities (batch × classes) and the labels: backward is (p - onehot) / batch.
    Shape-only prediction: by dispatch (same numpy calls); the row indices are `np.arange(..., like=logits)`,
    and `float(grad)` of a shape-only gradient is a neutral 1.0 (a value scales the result, never sizes it).
    """

    name = "softmax_cross_entropy"

    @staticmethod
    def forward(ctx: Node, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if logits.ndim != 2:
            raise ValueError(f"cross_entropy takes (batch, classes) logits, got shape {logits.shape}")
        labels = np.asarray(labels, like=logits)
        if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be {logits.shape[0]} integers, got {labels.dtype} {labels.shape}")
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
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        probs, labels = ctx.saved_tensors
        result = probs.copy()
        result[np.arange(probs.shape[0], like=probs), labels] -= 1
        result *= float(grad) / probs.shape[0]
        return (result, None)


class MSE(Function):
    """Mean over all elements of (pred - target)²; saves the difference only.

    Shape-only prediction: by dispatch (same numpy calls; the 0-d result via `np.asarray(..., like=diff)`).
    """

    name = "mse"

    @staticmethod
    def forward(ctx: Node, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        diff = np.subtract(pred, target)
        ctx.pred_shape, ctx.target_shape = pred.shape, np.shape(target)
        ctx.count = diff.size
        ctx.save(diff=diff)
        flat = diff.reshape(-1)
        return np.asarray(np.vdot(flat, flat) / diff.size, dtype=diff.dtype, like=diff)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (diff,) = ctx.saved_tensors
        need_pred, need_target = ctx.needs_input_grad
        scaled = diff * (2 * grad / ctx.count)
        return (
            unbroadcast(scaled, ctx.pred_shape) if need_pred else None,
            -unbroadcast(scaled, ctx.target_shape) if need_target else None,
        )

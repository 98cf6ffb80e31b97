"""Losses and the L2 penalty as functions of tensors."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..autograd import Tensor, apply
from ..autograd import ops


def linear(x: Any, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weightᵀ (+ bias), one fused op; weight has shape (out_features, in_features)."""
    if bias is None:
        return apply(ops.Linear, x, weight)
    return apply(ops.Linear, x, weight, bias)


def cross_entropy(logits: Tensor, labels: Any) -> Tensor:
    """Mean softmax cross-entropy over the batch; `labels` are integer class indices."""
    # like=: shape-only logits (the predictor) take shape-only labels as they are
    like = logits.data if isinstance(logits, Tensor) else logits
    labels = labels.data if isinstance(labels, Tensor) else np.asarray(labels, like=like)
    return apply(ops.SoftmaxCrossEntropy, logits, labels)


def mse(pred: Tensor, target: Any) -> Tensor:
    """Mean squared error over all elements."""
    return apply(ops.MSE, pred, target)


def l2_penalty(params: Iterable[Tensor], lam: float) -> Tensor:
    """(λ/2) Σ ‖W‖_F², the seed's regularisation term s."""
    total = None
    for p in params:
        term = apply(ops.SumSquares, p)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l2_penalty needs at least one parameter")
    return total * (lam / 2)

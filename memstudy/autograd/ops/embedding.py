"""Embedding lookup: rows of a weight table picked by integer indices; saves the indices."""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node


class Embedding(Function):
    """weight[indices]: (...) integer indices → (..., width) rows; saves the indices (not the rows).

    Backward scatter-adds the incoming gradient into a zero table of the weight's shape (np.add.at: a
    repeated index accumulates). Indices must lie in [0, rows): the model checks them before the lookup.
    Shape-only predictor: np.take, np.zeros_like and np.add.at on shape-only arrays give the shapes.
    """

    name = "embedding"

    @staticmethod
    def forward(ctx: Node, indices: np.ndarray, weight: np.ndarray) -> np.ndarray:
        if indices.dtype.kind not in "iu":
            raise ValueError(f"embedding indices must be integers, got {indices.dtype}")
        ctx.weight_shape = weight.shape
        ctx.save(indices=indices if ctx.needs_input_grad[1] else None)
        return np.take(weight, indices, axis=0)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (indices,) = ctx.saved_tensors
        result = np.zeros(ctx.weight_shape, dtype=grad.dtype, like=grad)
        np.add.at(result, indices, grad)
        return (None, result)

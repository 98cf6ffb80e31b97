"""How parameters and batches are drawn: straight in the target dtype (no float64 detour), or, inside
`autograd.meta.meta_mode()`, as shape-only arrays for the predictor (no numbers are drawn at all).

A 16-bit dtype (bfloat16, float16) is drawn in float32 and rounded: the same seed gives a 16-bit model the float32
model's values, rounded (numpy's generators draw float32 and float64 only).

Every family builds its parameters and its batch through these functions, so the same model code builds the
real model for a measured cell and the shape-only model for a prediction.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import meta
from ..autograd.precision import FLOAT32, dtype as as_dtype, is_low


def _shape(shape: Any) -> tuple[int, ...]:
    return (int(shape),) if np.isscalar(shape) else tuple(int(n) for n in shape)


def uniform(rng: np.random.Generator, low: float, high: float, shape: Any, dtype: Any) -> np.ndarray:
    """U(low, high) in `dtype`, drawn in that dtype (float32 draws never pass through a float64 array)."""
    shape, dtype = _shape(shape), as_dtype(dtype)
    if meta.is_active():
        return meta.empty(shape, dtype)
    if is_low(dtype):
        return uniform(rng, low, high, shape, FLOAT32).astype(dtype)
    out = rng.random(shape, dtype=dtype) if dtype.kind == "f" and dtype.itemsize >= 4 else \
        rng.random(shape).astype(dtype)
    out *= high - low
    out += low
    return out


def normal(rng: np.random.Generator, shape: Any, dtype: Any, std: float = 1.0, mean: float = 0.0) -> np.ndarray:
    """N(mean, std²) in `dtype`, drawn in that dtype."""
    shape, dtype = _shape(shape), as_dtype(dtype)
    if meta.is_active():
        return meta.empty(shape, dtype)
    if is_low(dtype):
        return normal(rng, shape, FLOAT32, std, mean).astype(dtype)
    out = rng.standard_normal(shape, dtype=dtype)
    if std != 1.0:
        out *= std
    if mean != 0.0:
        out += mean
    return out


def integers(rng: np.random.Generator, low: int, high: int, shape: Any) -> np.ndarray:
    """int64 in [low, high) (class labels, token ids)."""
    shape = _shape(shape)
    if meta.is_active():
        return meta.empty(shape, np.int64)
    return rng.integers(low, high, size=shape, dtype=np.int64)


def constant(value: float, shape: Any, dtype: Any) -> np.ndarray:
    """An array full of `value` (LayerNorm's weight of ones, a bias of zeros, running statistics)."""
    shape, dtype = _shape(shape), as_dtype(dtype)
    if meta.is_active():
        return meta.empty(shape, dtype)
    return np.full(shape, value, dtype=dtype)

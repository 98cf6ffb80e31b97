"""Floating-point types: the four a model may use, and which of them are 16-bit.

numpy knows float64, float32 and float16; bfloat16 comes from `ml_dtypes` (a numpy extension dtype, loaded on
first use so that `import memstudy` still loads numpy only). numpy files bfloat16 under kind "V" (a user dtype),
not "f": ask `is_float`, never `dtype.kind == "f"`.

numpy has no arithmetic of its own for 16-bit types worth using (ml_dtypes' bfloat16 loops convert every element
and its reductions accumulate in bfloat16, numpy's float16 loops likewise): the ops compute 16-bit arrays in
`compute_dtype` (float32) and round each result once to the 16-bit type, as 16-bit kernels with fp32 accumulation
do (`ops/emulate.py`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")  # what a model may be built in
LOW_PRECISION = ("bfloat16", "float16")  # the 16-bit ones: autocast targets, master weights' parameters
FLOAT32 = np.dtype(np.float32)

_LOW: dict[np.dtype, bool] = {}  # dtype -> whether it is a 16-bit float (dict lookups on the ops' paths)
_BF16: dict[np.dtype, bool] = {}  # dtype -> whether it is bfloat16


def dtype(value: Any) -> np.dtype:
    """`value` (a name such as "bfloat16", a numpy type or dtype) as a numpy dtype; "bfloat16" loads ml_dtypes."""
    if isinstance(value, np.dtype):
        return value
    try:
        return np.dtype(value)
    except TypeError:
        if value != "bfloat16":
            raise
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)

    return np.dtype(ml_dtypes.bfloat16)


def is_float(dt: np.dtype) -> bool:
    """A floating-point dtype: numpy's (kind "f") or bfloat16 (kind "V")."""
    return dt.kind == "f" or is_bf16(dt)


def is_bf16(dt: np.dtype) -> bool:
    """bfloat16. Cached per dtype: `dt.name` is a Python property of numpy's (~4 µs), on the ops' paths."""
    bf16 = _BF16.get(dt)
    if bf16 is None:
        bf16 = _BF16[dt] = dt.name == "bfloat16"
    return bf16


def is_low(dt: np.dtype) -> bool:
    """A 16-bit floating-point dtype (bfloat16, float16)."""
    low = _LOW.get(dt)
    if low is None:
        low = _LOW[dt] = dt.itemsize == 2 and is_float(dt)
    return low


def compute_dtype(dt: np.dtype) -> np.dtype:
    """The dtype an op computes `dt` in: float32 for the 16-bit types, `dt` itself otherwise."""
    return FLOAT32 if is_low(dt) else dt


def finfo(dt: np.dtype) -> Any:
    """numpy's finfo, or ml_dtypes' for bfloat16 (numpy's refuses it)."""
    if is_bf16(dt):
        import ml_dtypes

        return ml_dtypes.finfo(dt)
    return np.finfo(dt)


__all__ = ["FLOAT32", "FLOAT_DTYPES", "LOW_PRECISION", "compute_dtype", "dtype", "finfo", "is_bf16", "is_float",
           "is_low"]

"""Shape-only arrays (PyTorch's meta device): shape, dtype, strides and view relations, no data.

PLACEHOLDER API (the full type is being written): `meta_mode()` is the context in which `nn.init` draws
parameters and batches as `MetaArray`s; `is_active()` says whether it is on; `empty(shape, dtype)` makes one.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np


class _Mode:
    active = False


_MODE = _Mode()


@contextlib.contextmanager
def meta_mode() -> Iterator[None]:
    """Inside it, `nn.init` creates shape-only arrays instead of drawing numbers."""
    previous = _MODE.active
    _MODE.active = True
    try:
        yield
    finally:
        _MODE.active = previous


def is_active() -> bool:
    return _MODE.active


class MetaArray:
    """A shape-only array (to be completed)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def empty(shape: tuple[int, ...], dtype) -> MetaArray:
    return MetaArray(shape, dtype)

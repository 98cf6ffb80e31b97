"""Shape-only arrays (PyTorch's meta device): shape, dtype, strides and view relations, no data.

A `MetaArray` is what an ndarray would be without its numbers: shape, dtype, strides, a `.base` chain like
numpy's (a view's base is the array that owns the memory, and the view keeps it alive), a fake data address,
`nbytes`, `flags`. It takes part in numpy's dispatch (`__array_ufunc__`, `__array_function__`, the Python
operators, indexing), so the engine, the ops and the optimisers run on it unchanged, and the memory ledger
counts its buffers exactly as it counts real ones: the prediction is the engine itself, run on shape-only
arrays: the prediction cannot drift from the engine.

Rules:
- result shapes follow numpy's broadcasting and indexing rules, result dtypes come from `ufunc.resolve_dtypes`
  / `np.result_type` (numpy 2's NEP 50: a Python float joins a float32 array as float32); no arithmetic ever
  runs on stand-in data, so a MetaArray op costs the same whatever the array's size;
- a new buffer gets numpy's memory layout (the ufunc iterator's 'K' order, `empty_like`'s sorted strides,
  matmul's core axes in C order with its batch axes in the iterator's order, C order for copies), and a reshape
  is a view exactly when numpy's would be: the strides decide
  (a port of numpy's `_attempt_nocopy_reshape`), so later views and copies match numpy's too;
- where numpy returns a scalar (a full reduction, an integer index) a fresh 0-d MetaArray is returned;
- each numpy function answered has a rule that follows numpy's view/copy semantics (result shape, dtype, strides,
  whether it is a view and of which buffer, the writeable flag), tested call by call against numpy itself
  (tests/test_meta_functions.py);
- anything else raises `Unsupported` (a TypeError) naming the numpy function and the line that called it (the
  user's file and op), as does anything that depends on the values (a shape-only boolean mask, `bool(m)`,
  `.item()`, `np.asarray(m)`): nothing is ever computed on a converted array. A prediction that meets it is
  unavailable, and the step is measured anyway.

A shape rule of your own (README: When things go wrong), registered from the model's file:

    from memstudy.autograd import meta

    @meta.implements(np.interp)
    def interp(x, xp, fp, left=None, right=None, period=None):
        return meta.new_buffer(np.shape(x), np.float64)   # what numpy returns: a new C-contiguous float64 array

A rule gets the numpy function's own arguments and returns what numpy would: `new_buffer(shape, dtype, strides)`,
`view(array, shape, strides, offset_bytes)`, any numpy call the shape-only arrays answer (`np.empty_like`, slicing,
`.reshape`, `.T`), or the `out=` array. If it is wrong, the rows say so (`prediction_matches` is False).

`meta_mode()` is the context in which `nn.init` draws parameters and batches as MetaArrays; `is_active()`
says whether it is on; `empty(shape, dtype)` makes one.

Modules: `layout` (numpy's rules for strides, contiguity, broadcasting and reshape), `array` (the type, its
ufuncs and indexing), `errors` (`Unsupported`), `functions` (`implements`, and the `np.*` functions it answers
through `__array_function__`), `einsum` (np.einsum, its views and its optimize paths), `numeric` (cumulative sums,
clip, norms, means and variances, rounding), `shaping` (flips, rolls, tiles, repeats, pads, splits, differences,
triangles, stacks, tensordot).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from . import functions as _functions  # noqa: F401  (registers the np.* functions MetaArray answers)
from . import einsum as _einsum, numeric as _numeric, shaping as _shaping  # noqa: F401  (register theirs)
from .array import MetaArray
from .errors import Unsupported, UnsupportedAttribute
from .functions import implements, new_buffer, view


class _Mode:
    active = False
    drawn_bytes = 0  # bytes `empty` made since meta_mode began (what nn.init drew: parameters, batches)
    max_drawn_bytes: int | None = None
    copies = 1  # each array drawn stands for this many (a repeated block built once: nn.repeat)


_MODE = _Mode()


class DrawLimitExceeded(Exception):
    """`nn.init` drew more bytes in meta mode than `meta_mode(max_drawn_bytes=...)` allows.

    A budget check uses it to refuse a model whose parameters and batch alone pass the budget after drawing
    only what the budget holds: the refusal costs the same however large the model is."""

    def __init__(self, drawn_bytes: int, max_drawn_bytes: int):
        super().__init__(f"drew {drawn_bytes} bytes, over {max_drawn_bytes}")
        self.drawn_bytes = drawn_bytes
        self.max_drawn_bytes = max_drawn_bytes


@contextlib.contextmanager
def meta_mode(max_drawn_bytes: int | None = None) -> Iterator[None]:
    """Inside it, `nn.init` creates shape-only arrays instead of drawing numbers; with `max_drawn_bytes`, the
    draw that takes their total past it raises DrawLimitExceeded."""
    previous = (_MODE.active, _MODE.drawn_bytes, _MODE.max_drawn_bytes)
    _MODE.active, _MODE.drawn_bytes, _MODE.max_drawn_bytes = True, 0, max_drawn_bytes
    try:
        yield
    finally:
        _MODE.active, _MODE.drawn_bytes, _MODE.max_drawn_bytes = previous


def is_active() -> bool:
    return _MODE.active


@contextlib.contextmanager
def drawing_copies(copies: int) -> Iterator[None]:
    """Inside it, each array `empty` makes counts `copies` times against the draw limit (nn.repeat builds one block
    that stands for `copies` alike ones)."""
    previous = _MODE.copies
    _MODE.copies = previous * copies
    try:
        yield
    finally:
        _MODE.copies = previous


def empty(shape: tuple[int, ...], dtype: Any) -> MetaArray:
    """A new shape-only C-contiguous buffer (counted against meta_mode's `max_drawn_bytes`)."""
    array = MetaArray(shape, dtype)
    if _MODE.max_drawn_bytes is not None:
        _MODE.drawn_bytes += array.nbytes * _MODE.copies
        if _MODE.drawn_bytes > _MODE.max_drawn_bytes:
            raise DrawLimitExceeded(_MODE.drawn_bytes, _MODE.max_drawn_bytes)
    return array


__all__ = ["DrawLimitExceeded", "MetaArray", "Unsupported", "UnsupportedAttribute", "drawing_copies", "empty",
           "implements", "is_active", "meta_mode", "new_buffer", "view"]


def shape_only_copy(obj: Any) -> Any:
    """A deep copy of `obj` (a model built elsewhere, its batch) in which every ndarray is a MetaArray of the
    same shape and dtype: the predictor runs a notebook's model without touching (or allocating) its data.

    An array reached twice (a tied weight, a shared buffer) becomes one MetaArray, as `copy.deepcopy`'s memo
    keeps shared objects shared. Views of a model's arrays become separate C-contiguous buffers (models hold
    their parameters and buffers as whole arrays).
    """
    import copy

    import numpy as np

    dispatch = copy._deepcopy_dispatch  # type: ignore[attr-defined]
    previous = dispatch.get(np.ndarray)
    dispatch[np.ndarray] = lambda array, memo: MetaArray(array.shape, array.dtype)
    try:
        return copy.deepcopy(obj)
    finally:
        if previous is None:
            del dispatch[np.ndarray]
        else:
            dispatch[np.ndarray] = previous

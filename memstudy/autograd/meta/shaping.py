"""Flips, rolls, tiles, repeats, pads, splits, differences, triangles, diagonals, stacks, tensordot, inner and outer
products on shape-only arrays.

Most of these numpy writes in Python over a handful of primitives (slicing, reshape, concatenate, empty_like,
dot); their rules here are those functions ported line by line, so each intermediate view or copy is numpy's,
and where numpy's implementation needs nothing but the shape-only primitives (flip, split, array_split) it is
called itself. numpy's C functions (repeat, inner, diagonal) are numpy's output allocation.
"""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from .array import METHODS, MetaArray, fresh, reshape_of, transpose_of, view_of
from .errors import Unsupported
from .functions import _meta, _np_concatenate, _shape_of, implements, prepend_ones
from .layout import broadcast_shapes, f_strides, like_strides, normalize_axes


def _numpy_implementation(function: Any) -> Any:
    """numpy's own Python body of a dispatched function (called with shape-only arrays where it needs nothing
    else)."""
    return getattr(function, "_implementation", None) or function.__wrapped__


def _as_meta(x: Any, what: str) -> Any:
    """numpy's `asanyarray(x)` where x is a MetaArray: itself; a real array stays real."""
    if isinstance(x, (MetaArray, np.ndarray)):
        return x
    raise TypeError(f"MetaArray: {what} takes arrays here, got {type(x).__name__}")


# --- views ------------------------------------------------------------------------------------------------------
@implements(np.flip)
def _np_flip(m: Any, axis: Any = None) -> Any:
    return _numpy_implementation(np.flip)(m, axis)


@implements(np.fliplr)
def _np_fliplr(m: Any) -> Any:
    m = _as_meta(m, "fliplr")
    if m.ndim < 2:
        raise ValueError("Input must be >= 2-d.")
    return m[:, ::-1]


@implements(np.flipud)
def _np_flipud(m: Any) -> Any:
    m = _as_meta(m, "flipud")
    if m.ndim < 1:
        raise ValueError("Input must be >= 1-d.")
    return m[::-1, ...]


@implements(np.split)
def _np_split(ary: Any, indices_or_sections: Any, axis: int = 0) -> list:
    return _numpy_implementation(np.split)(ary, indices_or_sections, axis)


@implements(np.array_split)
def _np_array_split(ary: Any, indices_or_sections: Any, axis: int = 0) -> list:
    return _numpy_implementation(np.array_split)(ary, indices_or_sections, axis)


def diagonal_of(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> MetaArray:
    """numpy's `PyArray_Diagonal`: a read-only view, the two axes replaced by the diagonal at the end."""
    a = _meta(a, "diagonal")
    if a.ndim < 2:
        raise ValueError("diag requires an array of at least two dimensions")
    a1, a2 = normalize_axes(axis1, a.ndim)[0], normalize_axes(axis2, a.ndim)[0]
    if a1 == a2:
        raise ValueError("axis1 and axis2 cannot be the same")
    n1, n2, s1, s2 = a.shape[a1], a.shape[a2], a.strides[a1], a.strides[a2]
    offset_bytes = 0
    if offset >= 0:
        offset_bytes, n2 = offset * s2, n2 - offset
    else:
        offset_bytes, n1 = -offset * s1, n1 + offset
    length = max(0, min(n1, n2))
    if length == 0:
        offset_bytes = 0
    keep = [i for i in range(a.ndim) if i not in (a1, a2)]
    return view_of(a, tuple(a.shape[i] for i in keep) + (length,), tuple(a.strides[i] for i in keep) + (s1 + s2,),
                   offset_bytes, writeable=False)


@implements(np.diagonal)
def _np_diagonal(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> MetaArray:
    return diagonal_of(a, offset, axis1, axis2)


@implements(np.trace)
def _np_trace(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None, out: Any = None) -> Any:
    """numpy's `PyArray_Trace`: the diagonal view summed over its last axis."""
    return diagonal_of(a, offset, axis1, axis2).sum(-1, dtype=dtype, out=out)


def _atleast(arys: tuple, ndim: int) -> Any:
    res = []
    for ary in arys:
        ary = _as_meta(ary, f"atleast_{ndim}d")
        if ary.ndim == 0:
            result = reshape_of(ary, (1,) * ndim)
        elif ary.ndim < ndim:
            index = {(1, 2): (None, slice(None)), (1, 3): (None, slice(None), None),
                     (2, 3): (Ellipsis, None)}[(ary.ndim, ndim)]
            result = ary[index]
        else:
            result = ary
        res.append(result)
    return res[0] if len(res) == 1 else tuple(res)


@implements(np.atleast_1d)
def _np_atleast_1d(*arys: Any) -> Any:
    return _atleast(arys, 1)


@implements(np.atleast_2d)
def _np_atleast_2d(*arys: Any) -> Any:
    return _atleast(arys, 2)


@implements(np.atleast_3d)
def _np_atleast_3d(*arys: Any) -> Any:
    return _atleast(arys, 3)


@implements(np.broadcast_arrays)
def _np_broadcast_arrays(*args: Any, subok: bool = False) -> tuple:
    """Arrays already of the broadcast shape come back as they are; the others as writeable broadcast views."""
    shape = broadcast_shapes([_shape_of(x) for x in args])
    out = []
    for x in args:
        x = _as_meta(x, "broadcast_arrays")
        if x.shape == shape:
            out.append(x)
            continue
        lead = len(shape) - x.ndim
        strides = tuple(0 if i < lead or x.shape[i - lead] != shape[i] else x.strides[i - lead]
                        for i in range(len(shape)))
        out.append(view_of(x, shape, strides, 0))
    return tuple(out)


# --- stacking ---------------------------------------------------------------------------------------------------
@implements(np.stack)
def _np_stack(arrays: Any, axis: int = 0, out: Any = None, *, dtype: Any = None, casting: str = "same_kind") -> Any:
    """numpy's stack: each array viewed with a new axis, then concatenated along it."""
    arrays = [_as_meta(a, "stack") for a in arrays]
    if not arrays:
        raise ValueError("need at least one array to stack")
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("all input arrays must have the same shape")
    ax = normalize_axes(axis, arrays[0].ndim + 1)[0]
    index = (slice(None),) * ax + (None,)
    return _np_concatenate([a[index] for a in arrays], axis=ax, out=out, dtype=dtype, casting=casting)


@implements(np.hstack)
def _np_hstack(tup: Any, *, dtype: Any = None, casting: str = "same_kind") -> Any:
    arrs = _atleast(tuple(tup), 1)
    arrs = arrs if isinstance(arrs, tuple) else (arrs,)
    axis = 0 if arrs and arrs[0].ndim == 1 else 1
    return _np_concatenate(arrs, axis, dtype=dtype, casting=casting)


@implements(np.vstack)
def _np_vstack(tup: Any, *, dtype: Any = None, casting: str = "same_kind") -> Any:
    arrs = _atleast(tuple(tup), 2)
    arrs = arrs if isinstance(arrs, tuple) else (arrs,)
    return _np_concatenate(arrs, 0, dtype=dtype, casting=casting)


# --- copies: roll, tile, repeat, pad, diff ------------------------------------------------------------------------
@implements(np.roll)
def _np_roll(a: Any, shift: Any, axis: Any = None) -> MetaArray:
    """numpy's roll: flattened, a roll of the ravel reshaped back; else `empty_like` filled slice by slice."""
    a = _as_meta(a, "roll")
    if axis is None:
        return reshape_of(_np_roll(a.ravel(), shift, 0), a.shape)
    axes = normalize_axes(axis, a.ndim) if not isinstance(axis, (tuple, list)) else tuple(
        normalize_axes(x, a.ndim)[0] for x in axis)
    broadcasted = np.broadcast(shift, axes)
    if broadcasted.ndim > 1:
        raise ValueError("'shift' and 'axis' should be scalars or 1D sequences")
    return np.empty_like(a)  # written in place, slice by slice


def _repeat(a: MetaArray, repeats: Any, axis: Any) -> MetaArray:
    """numpy's `PyArray_Repeat`: a new C-contiguous buffer; the count along the axis from the (real) repeats."""
    if isinstance(repeats, MetaArray):
        raise Unsupported("numpy.repeat", "with shape-only repeats: the result's length is their values' sum")
    counts = np.asarray(repeats)
    if axis is None:
        source_shape, ax = (a.size,), 0
    else:
        source_shape, ax = a.shape, normalize_axes(axis, a.ndim)[0]
    n = source_shape[ax]
    if counts.ndim == 0 or counts.size == 1:
        count = int(counts.reshape(-1)[0])
        if count < 0:
            raise ValueError("repeats may not contain negative values.")
        length = n * count
    else:
        if counts.shape != (n,):
            raise ValueError(f"operands could not be broadcast together with shape ({n},) ({counts.size},)")
        if (counts < 0).any():
            raise ValueError("repeats may not contain negative values.")
        length = int(counts.sum())
    return fresh(source_shape[:ax] + (length,) + source_shape[ax + 1:], a.dtype, None)


@implements(np.repeat)
def _np_repeat(a: Any, repeats: Any, axis: Any = None) -> MetaArray:
    return _repeat(_meta(a, "repeat"), repeats, axis)


@implements(np.tile)
def _np_tile(A: Any, reps: Any) -> MetaArray:
    """numpy's tile, line by line (a MetaArray stands for the ndarray it predicts)."""
    A = _meta(A, "tile")
    try:
        tup = tuple(reps)
    except TypeError:
        tup = (reps,)
    d = len(tup)
    if all(x == 1 for x in tup):  # np.array(A, copy=True, ndmin=d)
        return prepend_ones(fresh(A.shape, A.dtype, like_strides(A, A.shape, A.itemsize, "K")), d)
    c = prepend_ones(A, d)
    if d < c.ndim:
        tup = (1,) * (c.ndim - d) + tup
    shape_out = tuple(s * t for s, t in zip(c.shape, tup))
    n = c.size
    if n > 0:
        for dim_in, nrep in zip(c.shape, tup):
            if nrep != 1:
                c = _repeat(reshape_of(c, (-1, n)), nrep, 0)
            n //= dim_in
    return reshape_of(c, shape_out)


_PAD_MODES = {"constant": ("constant_values",), "edge": (), "linear_ramp": ("end_values",),
              "maximum": ("stat_length",), "mean": ("stat_length",), "median": ("stat_length",),
              "minimum": ("stat_length",), "reflect": ("reflect_type",), "symmetric": ("reflect_type",),
              "wrap": (), "empty": ()}


def _pad_pairs(pad_width: Any, ndim: int) -> list[tuple[int, int]]:
    """numpy's `_as_pairs(pad_width, ndim, as_index=True)` (pad widths are small real numbers)."""
    x = np.round(np.array(pad_width)).astype(np.intp, copy=False)
    if x.ndim < 3:
        if x.size == 1:
            x = x.ravel()
            if x[0] < 0:
                raise ValueError("index can't contain negative values")
            return [(int(x[0]), int(x[0]))] * ndim
        if x.size == 2 and x.shape != (2, 1):
            x = x.ravel()
            if x[0] < 0 or x[1] < 0:
                raise ValueError("index can't contain negative values")
            return [(int(x[0]), int(x[1]))] * ndim
    if x.min() < 0:
        raise ValueError("index can't contain negative values")
    return [(int(lo), int(hi)) for lo, hi in np.broadcast_to(x, (ndim, 2)).tolist()]


@implements(np.pad)
def _np_pad(array: Any, pad_width: Any, mode: Any = "constant", **kwargs: Any) -> MetaArray:
    """numpy's `_pad_simple`: a new buffer (Fortran order when the array is Fortran-only, else C), then filled in
    place whatever the mode."""
    array = _meta(array, "pad")
    pairs = _pad_pairs(pad_width, array.ndim)
    if callable(mode):
        raise Unsupported("numpy.pad", "with a function as mode calls it on the values")
    if mode not in _PAD_MODES:
        raise ValueError(f"mode '{mode}' is not supported")
    unsupported = set(kwargs) - set(_PAD_MODES[mode])
    if unsupported:
        raise ValueError(f"unsupported keyword arguments for mode '{mode}': {unsupported}")
    if mode not in ("constant", "empty") and array.size == 0:
        for axis, (lo, hi) in enumerate(pairs):
            if array.shape[axis] == 0 and (lo > 0 or hi > 0):
                raise ValueError(f"can't extend empty axis {axis} using modes other than 'constant' or 'empty'")
    shape = tuple(lo + n + hi for n, (lo, hi) in zip(array.shape, pairs))
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    return fresh(shape, array.dtype, f_strides(shape, array.itemsize) if fortran else None)


@implements(np.diff)
def _np_diff(a: Any, n: int = 1, axis: int = -1, prepend: Any = np._NoValue, append: Any = np._NoValue) -> Any:
    """numpy's diff: the pieces concatenated (if prepend/append), then n subtractions of shifted views."""
    if n == 0:
        return a
    if n < 0:
        raise ValueError("order must be non-negative but got " + repr(n))
    a = _as_meta(a, "diff")
    nd = a.ndim
    if nd == 0:
        raise ValueError("diff requires input that is at least one dimensional")
    axis = normalize_axes(axis, nd)[0]
    combined = []
    for extra in (prepend,):
        if extra is not np._NoValue:
            combined.append(_edge(extra, a, axis))
    combined.append(a)
    if append is not np._NoValue:
        combined.append(_edge(append, a, axis))
    if len(combined) > 1:
        a = _np_concatenate(combined, axis)
    later = tuple(slice(1, None) if i == axis else slice(None) for i in range(nd))
    earlier = tuple(slice(None, -1) if i == axis else slice(None) for i in range(nd))
    op = np.not_equal if a.dtype == np.bool_ else np.subtract
    for _ in range(n):
        a = op(a[later], a[earlier])
    return a


def _edge(value: Any, a: MetaArray, axis: int) -> Any:
    """diff's prepend/append: an array, a scalar broadcast to one slice along the axis."""
    if isinstance(value, MetaArray):
        return value if value.ndim else np.broadcast_to(value, a.shape[:axis] + (1,) + a.shape[axis + 1:])
    value = np.asanyarray(value)
    if value.ndim == 0:
        return np.broadcast_to(fresh((), value.dtype, None), a.shape[:axis] + (1,) + a.shape[axis + 1:])
    raise TypeError("MetaArray: diff's prepend/append must be a scalar or a shape-only array")


# --- triangles ----------------------------------------------------------------------------------------------------
def _triangle(m: Any, k: int, lower: bool) -> MetaArray:
    """numpy's tril/triu: `where(tri(...), m, zeros(1, m.dtype))` (a 1-d m broadcasts to a square)."""
    m = _as_meta(m, "tril/triu")
    mask = np.tri(*m.shape[-2:], k=k if lower else k - 1, dtype=bool, like=m)
    zeros = np.zeros(1, m.dtype)
    return np.where(mask, m, zeros) if lower else np.where(mask, zeros, m)


@implements(np.tril)
def _np_tril(m: Any, k: int = 0) -> MetaArray:
    return _triangle(m, k, lower=True)


@implements(np.triu)
def _np_triu(m: Any, k: int = 0) -> MetaArray:
    return _triangle(m, k, lower=False)


# --- products -----------------------------------------------------------------------------------------------------
@implements(np.tensordot)
def _np_tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    """numpy's tensordot: both transposed and reshaped to matrices (copies when the reshape needs them), one dot,
    the result reshaped (a view of the dot's buffer)."""
    try:
        iter(axes)
    except Exception:
        axes_a, axes_b = list(range(-axes, 0)), list(range(axes))
    else:
        axes_a, axes_b = axes
    try:
        na, axes_a = len(axes_a), list(axes_a)
    except TypeError:
        axes_a, na = [axes_a], 1
    try:
        nb, axes_b = len(axes_b), list(axes_b)
    except TypeError:
        axes_b, nb = [axes_b], 1
    if len(set(axes_a)) != len(axes_a) or len(set(axes_b)) != len(axes_b):
        raise ValueError("duplicate axes are not allowed in tensordot")
    a, b = _as_meta(a, "tensordot"), _as_meta(b, "tensordot")
    as_, bs, nda, ndb = a.shape, b.shape, a.ndim, b.ndim
    equal = na == nb
    if equal:
        for k in range(na):
            if as_[axes_a[k]] != bs[axes_b[k]]:
                equal = False
                break
            axes_a[k] += nda if axes_a[k] < 0 else 0
            axes_b[k] += ndb if axes_b[k] < 0 else 0
    if not equal:
        raise ValueError("shape-mismatch for sum")
    notin_a = [k for k in range(nda) if k not in axes_a]
    notin_b = [k for k in range(ndb) if k not in axes_b]
    at = reshape_of(transpose_of(a, notin_a + axes_a), (math.prod(as_[k] for k in notin_a),
                                                        math.prod(as_[k] for k in axes_a)))
    bt = reshape_of(transpose_of(b, axes_b + notin_b), (math.prod(bs[k] for k in axes_b),
                                                        math.prod(bs[k] for k in notin_b)))
    return reshape_of(np.dot(at, bt), tuple(as_[k] for k in notin_a) + tuple(bs[k] for k in notin_b))


@implements(np.inner)
def _np_inner(a: Any, b: Any) -> MetaArray:
    """numpy's `PyArray_InnerProduct`: a new C-contiguous a.shape[:-1] + b.shape[:-1] (a scalar for vectors)."""
    sa, sb = _shape_of(a), _shape_of(b)
    if not sa or not sb:
        return np.multiply(a, b)
    if sa[-1] != sb[-1]:
        raise ValueError(f"shapes {sa} and {sb} not aligned: {sa[-1]} (dim {len(sa) - 1}) != {sb[-1]} "
                         f"(dim {len(sb) - 1})")
    dtype = np.result_type(*(x.dtype if isinstance(x, MetaArray) else x for x in (a, b)))
    return fresh(sa[:-1] + sb[:-1], dtype, None)


@implements(np.outer)
def _np_outer(a: Any, b: Any, out: Any = None) -> MetaArray:
    """numpy's outer: multiply(a.ravel()[:, newaxis], b.ravel()[newaxis, :], out)."""
    a_col = _flat(a)[:, None]
    b_row = _flat(b)[None, :]
    return np.multiply(a_col, b_row, out)


def _flat(x: Any) -> Any:
    if isinstance(x, MetaArray):
        return x.ravel()
    return np.ravel(np.asarray(x))


# --- ndarray methods ------------------------------------------------------------------------------------------------
def _sort_in_place(self: MetaArray, axis: Any = -1, kind: Any = None, order: Any = None, *,
                   stable: Any = None) -> None:
    from .array import check_writeable

    check_writeable(self)
    if axis is not None:
        normalize_axes(operator.index(axis), self.ndim)


METHODS["sort"] = _sort_in_place
METHODS["repeat"] = lambda self, repeats, axis=None: _repeat(self, repeats, axis)
METHODS["diagonal"] = lambda self, offset=0, axis1=0, axis2=1: diagonal_of(self, offset, axis1, axis2)
METHODS["trace"] = lambda self, *args, **kwargs: _np_trace(self, *args, **kwargs)
METHODS["take"] = lambda self, *args, **kwargs: np.take(self, *args, **kwargs)
METHODS["argsort"] = lambda self, *args, **kwargs: np.argsort(self, *args, **kwargs)

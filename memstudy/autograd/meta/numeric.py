"""Cumulative sums and products (`ufunc.accumulate`), `ufunc.outer`, clip, rounding, nan_to_num, means, variances
and norms on shape-only arrays.

Where numpy implements a function in Python (np.linalg.norm, np.nan_to_num, ndarray.clip, mean, var, std), the rule
is that implementation's sequence of calls, ported line by line, each answered by the shape-only arrays: so every
temporary, view and in-place write is numpy's. Where numpy is C (accumulate, round), the rule is numpy's output
allocation. A branch that needs the values (a matrix 2-norm's singular values) or a complex dtype is Unsupported.
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .array import (METHODS, UFUNC_METHODS, MetaArray, _resolve, check_out, fresh, mean_of, outputs, ravel_of,
                    reduction, reshape_of, view_of)
from .errors import Unsupported
from .functions import _meta, implements
from .layout import (f_strides, is_c_contiguous, is_f_contiguous, iterator_order, like_strides, normalize_axes,
                     strides_in_order)

_NO_VALUE = np._NoValue  # numpy's "not given" marker in its Python signatures
_CLIP = getattr(np, "_core", getattr(np, "core", None)).umath.clip  # the ufunc behind ndarray.clip


def _real_only(a: MetaArray, function: str) -> None:
    if a.dtype.kind == "c":
        raise Unsupported(function, "of a complex shape-only array has no shape rule (its real and imaginary "
                          "views)")


def _scalar_result(a: Any, out: Any) -> bool:
    """Where numpy's reduction returns a numpy scalar (a 0-d result and no `out`), not an array."""
    return out is None and a.ndim == 0


# --- accumulate, outer, cumsum, cumprod -------------------------------------------------------------------------
def _accumulate(ufunc: np.ufunc, array: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> MetaArray:
    """`ufunc.accumulate`: the input's shape, numpy's reduction dtype, laid out as numpy's iterator orders the
    input's axes (a stride-0 broadcast axis gives no opinion)."""
    array = _meta(array, f"{ufunc.__name__}.accumulate")
    if ufunc.nin != 2 or ufunc.nout != 1:
        raise ValueError("accumulate only supported for binary functions")
    if array.ndim == 0:
        raise TypeError("cannot accumulate on a scalar")
    normalize_axes(operator.index(axis), array.ndim)
    signature = None if dtype is None else (np.dtype(dtype), None, None)
    result_dtype = _resolve(ufunc, (None, array.dtype, None), signature, "unsafe", reduction=True)[2]
    if out is not None:
        (out,) = outputs(out, 1)
        check_out(ufunc.__name__, out, array.shape, result_dtype, "unsafe")
        return out
    if array.ndim == 1:
        return fresh(array.shape, result_dtype, None)
    inner_first = iterator_order(array.shape, [array])
    return fresh(array.shape, result_dtype, strides_in_order(array.shape, result_dtype.itemsize, inner_first))


def _ufunc_accumulate(ufunc: np.ufunc, array: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> MetaArray:
    return _accumulate(ufunc, array, axis, dtype, out)


def _ufunc_outer(ufunc: np.ufunc, a: Any, b: Any, **kwargs: Any) -> Any:
    """`ufunc.outer(a, b)`: numpy runs the ufunc on a reshaped to a.shape + (1,) * b.ndim, and b."""
    a_shape = a.shape if isinstance(a, (MetaArray, np.ndarray)) else ()
    if isinstance(a, MetaArray):
        a = reshape_of(a, a_shape + (1,) * np.ndim(b))
    else:
        a = np.reshape(a, a_shape + (1,) * (b.ndim if isinstance(b, (MetaArray, np.ndarray)) else 0))
    return ufunc(a, b, **kwargs)


UFUNC_METHODS["accumulate"] = _ufunc_accumulate
UFUNC_METHODS["outer"] = _ufunc_outer


def _cumulative(ufunc: np.ufunc, a: Any, axis: Any, dtype: Any, out: Any) -> MetaArray:
    a = _meta(a, "cumsum/cumprod")
    if axis is None:  # numpy accumulates over the array raveled in C order (a temporary copy if it must)
        return _accumulate(ufunc, ravel_of(a), 0, dtype, out)
    return _accumulate(ufunc, a, axis, dtype, out)


@implements(np.cumsum)
def _np_cumsum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> MetaArray:
    return _cumulative(np.add, a, axis, dtype, out)


@implements(np.cumprod)
def _np_cumprod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> MetaArray:
    return _cumulative(np.multiply, a, axis, dtype, out)


# --- clip, round, nan_to_num ------------------------------------------------------------------------------------
def _clip_method(a: MetaArray, min: Any = None, max: Any = None, out: Any = None, **kwargs: Any) -> Any:
    """ndarray.clip (numpy's `_methods._clip`): one ufunc call (positive, minimum, maximum or clip)."""
    if a.dtype.kind in "iu":  # a Python int beyond the dtype's range is no bound (NEP 50: no value promotion)
        if type(min) is int and min <= np.iinfo(a.dtype).min:
            min = None
        if type(max) is int and max >= np.iinfo(a.dtype).max:
            max = None
    if min is None and max is None:
        return np.positive(a, out=out, **kwargs)
    if min is None:
        return np.minimum(a, max, out=out, **kwargs)
    if max is None:
        return np.maximum(a, min, out=out, **kwargs)
    return _CLIP(a, min, max, out=out, **kwargs)


@implements(np.clip)
def _np_clip(a: Any, a_min: Any = _NO_VALUE, a_max: Any = _NO_VALUE, out: Any = None, *, min: Any = _NO_VALUE,
             max: Any = _NO_VALUE, **kwargs: Any) -> Any:
    if a_min is not _NO_VALUE and min is not _NO_VALUE or a_max is not _NO_VALUE and max is not _NO_VALUE:
        raise ValueError("Passing `min` or `max` keyword argument when `a_min` and `a_max` are provided is "
                         "forbidden.")
    low = a_min if a_min is not _NO_VALUE else (min if min is not _NO_VALUE else None)
    high = a_max if a_max is not _NO_VALUE else (max if max is not _NO_VALUE else None)
    if a_min is _NO_VALUE and min is _NO_VALUE and a_max is _NO_VALUE and max is _NO_VALUE:
        raise ValueError("One of max or min must be given")
    return _clip_method(_meta(a, "clip"), low, high, out, **kwargs)


@implements(np.round, np.around)
def _np_round(a: Any, decimals: int = 0, out: Any = None) -> Any:
    """numpy's `PyArray_Round`: integers with decimals >= 0 are copied ('K' order, or into out); decimals 0 is
    np.rint; otherwise a new C (F if the input is Fortran-only) buffer, or out, written in place."""
    a = _meta(a, "round")
    _real_only(a, "numpy.round")
    if out is not None:
        (out,) = outputs(out, 1)
    if decimals >= 0 and a.dtype.kind in "biu":
        if out is not None:
            np.copyto(out, a)
            return out
        return fresh(a.shape, a.dtype, like_strides(a, a.shape, a.itemsize, "K"))
    if decimals == 0:
        return np.rint(a) if out is None else np.rint(a, out)
    if out is None:
        fortran = is_f_contiguous(a.shape, a.strides, a.itemsize) and not is_c_contiguous(a.shape, a.strides,
                                                                                            a.itemsize)
        out = fresh(a.shape, a.dtype, f_strides(a.shape, a.itemsize) if fortran else None)
    else:
        check_out("round", out, a.shape, a.dtype, "unsafe")
    return out


@implements(np.nan_to_num)
def _np_nan_to_num(x: Any, copy: bool = True, nan: float = 0.0, posinf: Any = None, neginf: Any = None) -> Any:
    """np.array(x, copy=copy) (a 'K'-order copy), then masked writes in place."""
    x = _meta(x, "nan_to_num")
    _real_only(x, "numpy.nan_to_num")
    if copy:
        x = fresh(x.shape, x.dtype, like_strides(x, x.shape, x.itemsize, "K"))
    if x.ndim == 0:
        return fresh((), x.dtype, None)  # x[()]: a scalar
    return x


# --- mean, var, std ---------------------------------------------------------------------------------------------
def _sum(a: MetaArray, axis: Any, dtype: Any, out: Any, keepdims: bool, where: Any) -> MetaArray:
    return reduction(np.add, a, axis, dtype, out, keepdims, {} if where is True else {"where": where})


def _keepdims(value: Any) -> bool:
    return False if value is _NO_VALUE else bool(value)


def _where(value: Any) -> Any:
    return True if value is _NO_VALUE else value


def var_of(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, ddof: Any = 0, keepdims: Any = False,
           where: Any = True, mean: Any = _NO_VALUE, correction: Any = _NO_VALUE) -> MetaArray:
    """numpy's `_methods._var` (`_std` takes its square root in place): the mean kept with keepdims, a new buffer
    for the deviations (subtract, then square in place), their sum, divided in place."""
    _real_only(a, "numpy.var/std")
    keepdims, where = _keepdims(keepdims), _where(where)
    if dtype is None and a.dtype.kind in "biu":
        dtype = np.dtype(np.float64)
    if mean is not _NO_VALUE and mean is not None:
        arrmean = mean
    else:
        arrmean = _sum(a, axis, dtype, None, True, where)  # divided in place
    deviations = np.subtract(a, arrmean)
    if out is not None:
        (out,) = outputs(out, 1)
    ret = _sum(deviations, axis, dtype, out, keepdims, where)
    if _scalar_result(ret, out):
        return fresh((), ret.dtype, None)
    return ret


@implements(np.mean)
def _np_mean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: Any = _NO_VALUE, *,
             where: Any = _NO_VALUE) -> MetaArray:
    return mean_of(_meta(a, "mean"), axis, dtype, out, keepdims, _where(where))


@implements(np.var, np.std)
def _np_var(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: Any = 0, keepdims: Any = _NO_VALUE,
            *, where: Any = _NO_VALUE, mean: Any = _NO_VALUE, correction: Any = _NO_VALUE) -> MetaArray:
    return var_of(_meta(a, "var/std"), axis, dtype, out, ddof, keepdims, where, mean, correction)


# --- norms ------------------------------------------------------------------------------------------------------
def _ravel_keep_order(x: MetaArray) -> MetaArray:
    """x.ravel(order='K'): a view in memory order when the strides allow one, else a new 'K'-order copy."""
    if is_c_contiguous(x.shape, x.strides, x.itemsize):
        return reshape_of(x, (x.size,))
    if is_f_contiguous(x.shape, x.strides, x.itemsize):
        return view_of(x, (x.size,), (x.itemsize,), 0)
    order = sorted(range(x.ndim), key=lambda i: (-abs(x.strides[i]), i))
    expected, contiguous = x.itemsize, True
    for axis in reversed(order):
        if x.shape[axis] != 1:
            if x.strides[axis] != expected:
                contiguous = False
                break
            expected *= x.shape[axis]
    if contiguous and all(s >= 0 for s in x.strides):
        return view_of(x, (x.size,), (x.itemsize,), 0)
    return fresh((x.size,), x.dtype, None)


def _scalar_reshape(scalar: MetaArray, shape: tuple) -> MetaArray:
    """A numpy scalar's `.reshape(shape)`: a view of the 0-d array numpy makes of the scalar."""
    return reshape_of(fresh((), scalar.dtype, None), shape)


def _matrix_2_norm() -> Unsupported:
    return Unsupported("numpy.linalg.norm", "with ord=2, -2 or 'nuc' of a matrix needs its singular values: no "
                       "shape rule")


@implements(np.linalg.norm)
def _np_linalg_norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    """numpy's `linalg.norm`, call for call."""
    x = _meta(x, "linalg.norm")
    _real_only(x, "numpy.linalg.norm")
    if x.dtype.kind not in "fc":
        x = x.astype(float)
    if axis is None:
        ndim = x.ndim
        if ord is None or (ord in ("f", "fro") and ndim == 2) or (ord == 2 and ndim == 1):
            flat = _ravel_keep_order(x)
            ret = fresh((), x.dtype, None)  # sqrt(x.dot(x)): a scalar
            return _scalar_reshape(ret, (1,) * ndim) if keepdims else ret
    nd = x.ndim
    if axis is None:
        axis = tuple(range(nd))
    elif not isinstance(axis, tuple):
        try:
            axis = int(axis)
        except Exception as e:
            raise TypeError("'axis' must be None, an integer or a tuple of integers") from e
        axis = (axis,)
    if len(axis) == 1:
        if ord == np.inf:
            return abs(x).max(axis=axis, keepdims=keepdims, initial=0)
        if ord == -np.inf:
            return abs(x).min(axis=axis, keepdims=keepdims)
        if ord == 0:
            return (x != 0).astype(x.dtype).sum(axis=axis, keepdims=keepdims)
        if ord == 1:
            return np.add.reduce(abs(x), axis=axis, keepdims=keepdims)
        if ord is None or ord == 2:
            return np.sqrt(np.add.reduce(x * x, axis=axis, keepdims=keepdims))
        if isinstance(ord, str):
            raise ValueError(f"Invalid norm order '{ord}' for vectors")
        absx = abs(x)
        absx **= ord
        ret = np.add.reduce(absx, axis=axis, keepdims=keepdims)
        if ret.ndim == 0:
            return fresh((), ret.dtype, None)  # ret **= ...: a scalar
        return ret
    if len(axis) == 2:
        row_axis, col_axis = (normalize_axes(a, nd)[0] for a in axis)
        if row_axis == col_axis:
            raise ValueError("Duplicate axes given.")
        if ord in (2, -2, "nuc"):
            raise _matrix_2_norm()
        if ord == 1:
            if col_axis > row_axis:
                col_axis -= 1
            ret = np.add.reduce(abs(x), axis=row_axis).max(axis=col_axis, initial=0)
        elif ord == np.inf:
            if row_axis > col_axis:
                row_axis -= 1
            ret = np.add.reduce(abs(x), axis=col_axis).max(axis=row_axis, initial=0)
        elif ord == -1:
            if col_axis > row_axis:
                col_axis -= 1
            ret = np.add.reduce(abs(x), axis=row_axis).min(axis=col_axis)
        elif ord == -np.inf:
            if row_axis > col_axis:
                row_axis -= 1
            ret = np.add.reduce(abs(x), axis=col_axis).min(axis=row_axis)
        elif ord in (None, "fro", "f"):
            ret = np.sqrt(np.add.reduce(x * x, axis=axis))
        else:
            raise ValueError("Invalid norm order for matrices.")
        if keepdims:
            shape = list(x.shape)
            shape[axis[0]] = 1
            shape[axis[1]] = 1
            ret = reshape_of(ret, tuple(shape)) if ret.ndim else _scalar_reshape(ret, tuple(shape))
        return ret
    raise ValueError("Improper number of dimensions to norm.")


# --- ndarray methods that are numpy functions of the array ----------------------------------------------------------
def _method(function: Any) -> Any:
    def method(self: MetaArray, *args: Any, **kwargs: Any) -> Any:
        return function(self, *args, **kwargs)
    method.__name__ = function.__name__
    return method


for _name, _function in (("cumsum", np.cumsum), ("cumprod", np.cumprod), ("round", np.round),
                         ("nonzero", np.nonzero), ("dot", np.dot)):  # nonzero: refused, by numpy's name
    METHODS[_name] = _method(_function)
METHODS["clip"] = _clip_method
METHODS["std"] = lambda self, *args, **kwargs: _np_var(self, *args, **kwargs)
METHODS["var"] = lambda self, *args, **kwargs: _np_var(self, *args, **kwargs)

"""The `np.*` functions a MetaArray answers (`__array_function__`): each computes its result's shape and dtype
by numpy's rules. A function not listed here raises TypeError naming it."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .array import (FUNCTIONS, MetaArray, argreduce, check_out, check_writeable, fresh, outputs,
                    ravel_of, reduction, reshape_of, squeeze_of, swapaxes_of, transpose_of, view_of)
from .errors import Unsupported
from .layout import (broadcast_shapes, f_strides, is_c_contiguous, is_f_contiguous, iterator_order, like_strides,
                     multi_sorted_stride_perm, normalize_axes, normalize_shape, strides_in_order)


def implements(*funcs: Callable) -> Callable:
    """Register a shape rule for numpy functions: `@implements(np.cumsum) def rule(a, axis=None, ...)`.

    The rule is called with the function's own arguments whenever one of them is a MetaArray, and returns what
    numpy would: a new buffer (`new_buffer`, or any supported numpy call such as `np.empty_like`), a view of an
    input (`view`, slicing, `.reshape`, `.T`), or the `out=` array. A rule registered later replaces an earlier one
    for the same function (a user's file can refine a built-in rule)."""
    for f in funcs:
        if not callable(f):
            raise TypeError(f"implements() takes numpy functions, got {f!r}")

    def register(handler: Callable) -> Callable:
        for f in funcs:
            FUNCTIONS[f] = handler
        return handler
    return register


def new_buffer(shape: Any, dtype: Any, strides: tuple[int, ...] | None = None) -> MetaArray:
    """A new shape-only buffer (owns its memory): C-contiguous unless `strides` are given (bytes, as numpy's)."""
    return fresh(normalize_shape(shape), np.dtype(dtype), None if strides is None else tuple(strides))


def view(array: MetaArray, shape: Any, strides: tuple[int, ...], offset_bytes: int = 0,
         writeable: bool | None = None) -> MetaArray:
    """A view of `array`'s memory with the given shape and strides, `offset_bytes` into it (its base is the
    buffer's owner, as numpy's; writeable as `array` unless said)."""
    return view_of(_meta(array, "view"), normalize_shape(shape), tuple(strides), offset_bytes, writeable)


def _meta(x: Any, what: str) -> MetaArray:
    if not isinstance(x, MetaArray):
        raise TypeError(f"MetaArray: {what} needs a MetaArray here, got {type(x).__name__}")
    return x


def _shape_of(x: Any) -> tuple[int, ...]:
    if isinstance(x, (MetaArray, np.ndarray, np.generic)):
        return x.shape
    if isinstance(x, (bool, int, float, complex)):
        return ()
    raise TypeError(f"MetaArray: unsupported operand {type(x).__name__}")


def _dtype_or_value(x: Any) -> Any:
    """For np.result_type / np.can_cast: a MetaArray stands for its dtype."""
    return x.dtype if isinstance(x, MetaArray) else x


@implements(np.shape)
def _np_shape(a: Any) -> tuple[int, ...]:
    return a.shape


@implements(np.ndim)
def _np_ndim(a: Any) -> int:
    return a.ndim


@implements(np.size)
def _np_size(a: Any, axis: int | None = None) -> int:
    return a.size if axis is None else a.shape[axis]


@implements(np.result_type)
def _np_result_type(*arrays_and_dtypes: Any) -> np.dtype:
    return np.result_type(*(_dtype_or_value(x) for x in arrays_and_dtypes))


@implements(np.can_cast)
def _np_can_cast(from_: Any, to: Any, casting: str = "safe") -> bool:
    return np.can_cast(_dtype_or_value(from_), _dtype_or_value(to), casting)


@implements(np.reshape)
def _np_reshape(a: MetaArray, shape: Any = None, order: str = "C", *, newshape: Any = None,
                copy: bool | None = None) -> MetaArray:
    return reshape_of(_meta(a, "reshape"), newshape if shape is None else shape, order, copy)


@implements(np.transpose)
def _np_transpose(a: MetaArray, axes: Any = None) -> MetaArray:
    return transpose_of(_meta(a, "transpose"), axes)


@implements(np.swapaxes)
def _np_swapaxes(a: MetaArray, axis1: int, axis2: int) -> MetaArray:
    return swapaxes_of(_meta(a, "swapaxes"), axis1, axis2)


@implements(np.moveaxis)
def _np_moveaxis(a: MetaArray, source: Any, destination: Any) -> MetaArray:
    a = _meta(a, "moveaxis")
    src = normalize_axes(source, a.ndim)
    dst = normalize_axes(destination, a.ndim)
    if len(src) != len(dst):
        raise ValueError("`source` and `destination` arguments must have the same number of elements")
    order = [n for n in range(a.ndim) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose_of(a, order)


@implements(np.squeeze)
def _np_squeeze(a: MetaArray, axis: Any = None) -> MetaArray:
    return squeeze_of(_meta(a, "squeeze"), axis)


@implements(np.expand_dims)
def _np_expand_dims(a: MetaArray, axis: Any) -> MetaArray:
    a = _meta(a, "expand_dims")
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = a.ndim + len(axes)
    axes = normalize_axes(axes, ndim)
    it = iter(a.shape)
    return reshape_of(a, tuple(1 if i in axes else next(it) for i in range(ndim)))  # numpy: a.reshape(shape)


@implements(np.broadcast_to)
def _np_broadcast_to(array: MetaArray, shape: Any, subok: bool = False) -> MetaArray:
    """A read-only view with stride 0 along the broadcast axes (numpy's broadcast_to)."""
    a = _meta(array, "broadcast_to")
    shape = normalize_shape(shape)
    lead = len(shape) - a.ndim
    if lead < 0 or broadcast_shapes([a.shape, shape]) != shape:
        raise ValueError(f"operands could not be broadcast together with remapped shapes [original->remapped]: "
                         f"{a.shape} and requested shape {shape}")
    strides = tuple(0 if i < lead or a.shape[i - lead] != shape[i] else a.strides[i - lead]
                    for i in range(len(shape)))
    return view_of(a, shape, strides, 0, writeable=False)


@implements(np.ravel)
def _np_ravel(a: MetaArray, order: str = "C") -> MetaArray:
    return ravel_of(_meta(a, "ravel"), order)


@implements(np.copy)
def _np_copy(a: MetaArray, order: str = "K", subok: bool = False) -> MetaArray:
    a = _meta(a, "copy")
    return fresh(a.shape, a.dtype, like_strides(a, a.shape, a.dtype.itemsize, order))


def _like(prototype: Any, dtype: Any = None, order: str = "K", subok: bool = True, shape: Any = None, *,
          device: Any = None) -> MetaArray:
    proto = _meta(prototype, "*_like")
    dt = proto.dtype if dtype is None else np.dtype(dtype)
    shape = proto.shape if shape is None else normalize_shape(shape)
    return fresh(shape, dt, like_strides(proto, shape, dt.itemsize, order))


implements(np.empty_like, np.zeros_like, np.ones_like)(_like)


@implements(np.full_like)
def _np_full_like(a: Any, fill_value: Any, dtype: Any = None, order: str = "K", subok: bool = True,
                  shape: Any = None, *, device: Any = None) -> MetaArray:
    return _like(a, dtype, order, subok, shape)


def _created(shape: Any, dtype: Any, order: str) -> MetaArray:
    shape = normalize_shape(shape)
    dt = np.dtype(float if dtype is None else dtype)
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    return fresh(shape, dt, f_strides(shape, dt.itemsize) if order == "F" else None)


@implements(np.empty, np.zeros, np.ones)
def _np_empty(shape: Any, dtype: Any = float, order: str = "C", *, device: Any = None) -> MetaArray:
    return _created(shape, dtype, order)


@implements(np.full)
def _np_full(shape: Any, fill_value: Any, dtype: Any = None, order: str = "C", *, device: Any = None) -> MetaArray:
    if dtype is None:
        dtype = fill_value.dtype if isinstance(fill_value, (MetaArray, np.ndarray, np.generic)) else \
            np.result_type(fill_value)
    return _created(shape, dtype, order)


@implements(np.arange)
def _np_arange(start: Any, stop: Any = None, step: Any = None, dtype: Any = None, *,
               device: Any = None) -> MetaArray:
    """Its length from the (real) bounds, its dtype numpy's."""
    if stop is None:
        start, stop = 0, start
    step = 1 if step is None else step
    for v in (start, stop, step):
        if isinstance(v, MetaArray):
            raise TypeError("MetaArray: np.arange bounds must be numbers, not shape-only arrays")
    if step == 0:
        raise ZeroDivisionError("step must not be zero (arange)")
    given = [v for v in (start, stop, step) if v is not None]
    dt = np.dtype(dtype) if dtype is not None else np.result_type(*given)
    length = max(0, math.ceil((stop - start) / step))
    if all(isinstance(v, (int, np.integer)) for v in given):
        length = len(range(int(start), int(stop), int(step)))
    return fresh((length,), dt, None)


@implements(np.asarray, np.asanyarray)
def _np_asarray(a: Any, dtype: Any = None, order: Any = None, *, device: Any = None, copy: Any = None) -> MetaArray:
    """With `like=` a MetaArray: itself (or a cast copy); a Python or numpy scalar becomes a fresh 0-d."""
    if isinstance(a, MetaArray):
        if copy or (dtype is not None and np.dtype(dtype) != a.dtype):
            return a.astype(a.dtype if dtype is None else dtype)
        return a
    if isinstance(a, (bool, int, float, complex, np.generic)):
        dt = np.dtype(dtype) if dtype is not None else np.asarray(a).dtype
        return fresh((), dt, None)
    raise TypeError(f"MetaArray: np.asarray(..., like=MetaArray) takes a MetaArray or a scalar, got "
                    f"{type(a).__name__} (a real array is not turned into a shape-only one implicitly)")


@implements(np.array)
def _np_array(obj: Any, dtype: Any = None, *, copy: bool = True, order: str = "K", subok: bool = False,
              ndmin: int = 0, device: Any = None) -> MetaArray:
    if isinstance(obj, MetaArray):
        if copy is False or copy is None:
            result = _np_asarray(obj, dtype)
        else:
            dt = obj.dtype if dtype is None else np.dtype(dtype)
            result = fresh(obj.shape, dt, like_strides(obj, obj.shape, dt.itemsize, order))
    else:
        result = _np_asarray(obj, dtype)
    return prepend_ones(result, ndmin)


def prepend_ones(a: MetaArray, ndmin: int) -> MetaArray:
    """numpy's `_prepend_ones` (np.array's ndmin): a view with leading axes of length one, whose stride is the
    itemsize for a Fortran-only or 0-d array, else the first axis's extent."""
    num = ndmin - a.ndim
    if num <= 0:
        return a
    fortran = a.flags.f_contiguous and not a.flags.c_contiguous
    stride = a.itemsize if fortran or a.ndim == 0 else a.strides[0] * a.shape[0]
    return view_of(a, (1,) * num + a.shape, (stride,) * num + a.strides, 0)


def _contiguous(a: Any, dtype: Any, order: str) -> MetaArray:
    a = _meta(a, "ascontiguousarray/asfortranarray")
    dt = a.dtype if dtype is None else np.dtype(dtype)
    a = prepend_ones(a, 1)
    contiguous = (is_c_contiguous if order == "C" else is_f_contiguous)(a.shape, a.strides, a.itemsize)
    if contiguous and dt == a.dtype:
        return a
    return fresh(a.shape, dt, None if order == "C" else f_strides(a.shape, dt.itemsize))


@implements(np.ascontiguousarray)
def _np_ascontiguousarray(a: Any, dtype: Any = None, *, like: Any = None) -> MetaArray:
    """With like=: itself when already C-contiguous (as 1-d at least), else a new C-contiguous copy."""
    return _contiguous(a, dtype, "C")


@implements(np.asfortranarray)
def _np_asfortranarray(a: Any, dtype: Any = None, *, like: Any = None) -> MetaArray:
    return _contiguous(a, dtype, "F")


@implements(np.sum)
def _np_sum(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            **kwargs: Any) -> MetaArray:
    return reduction(np.add, _meta(a, "sum"), axis, dtype, out, keepdims, kwargs)


@implements(np.prod)
def _np_prod(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kwargs: Any) -> MetaArray:
    return reduction(np.multiply, _meta(a, "prod"), axis, dtype, out, keepdims, kwargs)


@implements(np.max, np.amax)
def _np_max(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return reduction(np.maximum, _meta(a, "max"), axis, None, out, keepdims, kwargs)


@implements(np.min, np.amin)
def _np_min(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return reduction(np.minimum, _meta(a, "min"), axis, None, out, keepdims, kwargs)


@implements(np.any)
def _np_any(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return reduction(np.logical_or, _meta(a, "any"), axis, np.dtype(bool), out, keepdims, kwargs)


@implements(np.all)
def _np_all(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return reduction(np.logical_and, _meta(a, "all"), axis, np.dtype(bool), out, keepdims, kwargs)


@implements(np.argmax, np.argmin)
def _np_argmax(a: MetaArray, axis: Any = None, out: Any = None, *, keepdims: bool = False) -> MetaArray:
    return argreduce(_meta(a, "argmax"), axis, out, keepdims)


@implements(np.vdot)
def _np_vdot(a: Any, b: Any) -> MetaArray:
    """A 0-d result of the operands' common dtype (numpy returns a scalar)."""
    if math.prod(_shape_of(a)) != math.prod(_shape_of(b)):
        raise ValueError("vectors have different lengths")
    return fresh((), np.result_type(_dtype_or_value(a), _dtype_or_value(b)), None)


@implements(np.dot)
def _np_dot(a: Any, b: Any, out: Any = None) -> MetaArray:
    sa, sb = _shape_of(a), _shape_of(b)
    if not sa or not sb:
        return np.multiply(a, b, out=out)
    if len(sa) <= 2 and len(sb) <= 2:
        return np.matmul(a, b, out=out)
    k = sb[-2] if len(sb) > 1 else sb[0]
    if sa[-1] != k:
        raise ValueError(f"shapes {sa} and {sb} not aligned: {sa[-1]} (dim {len(sa) - 1}) != {k}")
    shape = sa[:-1] + sb[:-2] + sb[-1:]
    dtype = np.result_type(_dtype_or_value(a), _dtype_or_value(b))
    if out is not None:
        (out,) = outputs(out, 1)
        check_out("dot", out, shape, dtype, "no")
        return out
    return fresh(shape, dtype, None)


@implements(np.concatenate)
def _np_concatenate(arrays: Any, axis: int | None = 0, out: Any = None, *, dtype: Any = None,
                    casting: str = "same_kind") -> MetaArray:
    arrays = list(arrays)
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    shapes = [_shape_of(x) for x in arrays]
    if axis is None:
        shape = (sum(math.prod(s) for s in shapes),)
    else:
        ndim = len(shapes[0])
        if ndim == 0:
            raise ValueError("zero-dimensional arrays cannot be concatenated")
        ax = normalize_axes(axis, ndim)[0]
        for s in shapes:
            if len(s) != ndim or any(s[i] != shapes[0][i] for i in range(ndim) if i != ax):
                raise ValueError("all the input array dimensions except for the concatenation axis must match "
                                 "exactly")
        shape = shapes[0][:ax] + (sum(s[ax] for s in shapes),) + shapes[0][ax + 1:]
    dt = np.dtype(dtype) if dtype is not None else np.result_type(*(_dtype_or_value(x) for x in arrays))
    if out is not None:
        (out,) = outputs(out, 1)
        check_out("concatenate", out, shape, dt, casting)
        return out
    if axis is None or len(shape) <= 1:
        return fresh(shape, dt, None)
    # numpy's PyArray_CreateMultiSortedStridePerm: the inputs' common memory order (C order where they disagree)
    views = [x for x in arrays if isinstance(x, (MetaArray, np.ndarray))]
    outer_first = multi_sorted_stride_perm([x.shape for x in views], [x.strides for x in views], len(shape))
    return fresh(shape, dt, strides_in_order(shape, dt.itemsize, outer_first[::-1]))


@implements(np.where)
def _np_where(condition: Any, x: Any = None, y: Any = None) -> MetaArray:
    """numpy's `PyArray_Where`: a new buffer laid out by its iterator over condition, x and y ('K' order)."""
    if x is None and y is None:
        raise Unsupported("numpy.where", "with one argument returns the positions of the True values: its shape "
                          "depends on the values")
    if x is None or y is None:
        raise ValueError("either both or neither of x and y should be given")
    operands = [v for v in (condition, x, y) if isinstance(v, (MetaArray, np.ndarray))]
    shape = broadcast_shapes([_shape_of(condition), _shape_of(x), _shape_of(y)])
    dtype = np.result_type(_dtype_or_value(x), _dtype_or_value(y))
    if len(shape) <= 1:
        return fresh(shape, dtype, None)
    return fresh(shape, dtype, strides_in_order(shape, dtype.itemsize, iterator_order(shape, operands)))


@implements(np.take)
def _np_take(a: MetaArray, indices: Any, axis: int | None = None, out: Any = None, mode: str = "raise") -> MetaArray:
    a = _meta(a, "take")
    ishape = _shape_of(indices)
    if axis is None:
        shape = ishape
    else:
        ax = normalize_axes(axis, a.ndim)[0]
        shape = a.shape[:ax] + ishape + a.shape[ax + 1:]
    if out is not None:
        (out,) = outputs(out, 1)
        check_out("take", out, shape, a.dtype, "no")
        return out
    return fresh(shape, a.dtype, None)


@implements(np.copyto)
def _np_copyto(dst: Any, src: Any, casting: str = "same_kind", where: Any = True) -> None:
    dst = _meta(dst, "copyto destination")
    check_writeable(dst)
    if broadcast_shapes([dst.shape, _shape_of(src)]) != dst.shape:
        raise ValueError(f"could not broadcast input array from shape {_shape_of(src)} into shape {dst.shape}")
    # a Python number is a weak scalar (NEP 50): it takes the destination's dtype when its kind allows
    source = np.result_type(dst.dtype, src) if isinstance(src, (bool, int, float, complex)) else _dtype_or_value(src)
    if not np.can_cast(source, dst.dtype, casting):
        raise TypeError(f"Cannot cast array data from {source!r} to {dst.dtype!r} according to "
                        f"the rule {casting!r}")


@implements(np.sort)
def _np_sort(a: MetaArray, axis: int | None = -1, kind: Any = None, order: Any = None, *,
             stable: Any = None) -> MetaArray:
    a = _meta(a, "sort")
    return fresh((a.size,), a.dtype, None) if axis is None else fresh(a.shape, a.dtype,
                                                                         like_strides(a, a.shape, a.itemsize))


@implements(np.argsort)
def _np_argsort(a: MetaArray, axis: int | None = -1, kind: Any = None, order: Any = None, *,
                stable: Any = None) -> MetaArray:
    a = _meta(a, "argsort")
    return fresh((a.size,) if axis is None else a.shape, np.dtype(np.intp), None)


@implements(np.tri)
def _np_tri(N: int, M: int | None = None, k: int = 0, dtype: Any = float) -> MetaArray:
    """(N, M) of `dtype` (the causal mask's triangle)."""
    return fresh((int(N), int(N if M is None else M)), np.dtype(dtype), None)


@implements(np.take_along_axis)
def _np_take_along_axis(arr: MetaArray, indices: Any, axis: int | None = -1) -> MetaArray:
    """numpy's rule: the indices' length along `axis`, the other axes broadcast with the array's."""
    arr = _meta(arr, "take_along_axis")
    ishape = _shape_of(indices)
    if axis is None or len(ishape) != arr.ndim:
        raise TypeError("MetaArray: take_along_axis needs indices with the array's number of axes and an axis")
    ax = normalize_axes(axis, arr.ndim)[0]
    shape = list(arr.shape)
    shape[ax] = ishape[ax]
    return fresh(broadcast_shapes([tuple(shape), ishape]), arr.dtype, None)


@implements(np.put_along_axis)
def _np_put_along_axis(arr: MetaArray, indices: Any, values: Any, axis: int | None) -> None:
    """In place: no new buffer."""
    check_writeable(_meta(arr, "put_along_axis"))

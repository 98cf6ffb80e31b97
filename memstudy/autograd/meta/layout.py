"""numpy's layout rules, on plain tuples: strides of new buffers, contiguity, broadcasting, reshape as a view.

Each function mirrors the numpy C routine it names, so a MetaArray's strides (and so its later views and
copies) are numpy's.
"""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np


def c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """numpy's `_array_fill_strides` for C order (a zero-length axis multiplies by 1)."""
    strides = [0] * len(shape)
    stride = itemsize
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = stride
        if shape[i]:
            stride *= shape[i]
    return tuple(strides)


def f_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """As `c_strides`, for Fortran order."""
    strides = [0] * len(shape)
    stride = itemsize
    for i, n in enumerate(shape):
        strides[i] = stride
        if n:
            stride *= n
    return tuple(strides)


def strides_in_order(shape: tuple[int, ...], itemsize: int, inner_first: list[int]) -> tuple[int, ...]:
    """Contiguous strides laying the axes out innermost first in the order given."""
    strides = [0] * len(shape)
    stride = itemsize
    for axis in inner_first:
        strides[axis] = stride
        stride *= shape[axis]
    return tuple(strides)


def is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    """numpy's relaxed rule: axes of length 1 do not matter, an empty array is contiguous."""
    if 0 in shape:
        return True
    expected = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1:
            if s != expected:
                return False
            expected *= n
    return True


def is_f_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    if 0 in shape:
        return True
    expected = itemsize
    for n, s in zip(shape, strides):
        if n != 1:
            if s != expected:
                return False
            expected *= n
    return True


def like_strides(proto: Any, shape: tuple[int, ...], itemsize: int, order: str = "K") -> tuple[int, ...]:
    """The strides of numpy's `PyArray_NewLikeArray` (empty_like, astype, copy with `order`)."""
    if order == "C" or shape != proto.shape:
        return c_strides(shape, itemsize)
    if order == "F":
        return f_strides(shape, itemsize)
    c = is_c_contiguous(shape, proto.strides, proto.itemsize)
    f = is_f_contiguous(shape, proto.strides, proto.itemsize)
    if order == "A":
        return f_strides(shape, itemsize) if f and not c else c_strides(shape, itemsize)
    if order != "K":
        raise ValueError(f"order must be one of 'C', 'F', 'A', 'K', got {order!r}")
    if c or len(shape) <= 1:
        return c_strides(shape, itemsize)
    if f:
        return f_strides(shape, itemsize)
    # sorted by |stride|, largest first, ties in axis order (numpy's PyArray_CreateSortedStridePerm)
    outer_first = sorted(range(len(shape)), key=lambda i: (-abs(proto.strides[i]), i))
    return strides_in_order(shape, itemsize, outer_first[::-1])


def iterator_order(shape: tuple[int, ...], operands: list) -> list[int]:
    """The axes innermost first as numpy's iterator orders them for 'K' allocation (ufunc outputs, reductions).

    A port of `npyiter_find_best_axis_ordering`: a stable insertion sort by |stride|, operand by operand,
    where an operand's stride is 0 on an axis it is broadcast along (or of length 1) and gives no opinion;
    when operands disagree, the one preferring C order wins.
    """
    ndim = len(shape)
    strides = []
    for x in operands:
        s = x.strides
        lead = ndim - len(s)
        xs = x.shape
        strides.append([0 if i < lead or xs[i - lead] == 1 else s[i - lead] for i in range(ndim)])
    return best_axis_order(ndim, strides)


def best_axis_order(ndim: int, strides: list[list[int]]) -> list[int]:
    """`iterator_order` given each operand's stride on each of the iterator's `ndim` axes (0: no opinion)."""
    perm = list(range(ndim - 1, -1, -1))  # the iterator's axis data run from the last axis to the first
    for i0 in range(1, ndim):
        ipos = i0
        a0 = perm[i0]
        for i1 in range(i0 - 1, -1, -1):
            a1 = perm[i1]
            ambiguous, swap = True, False
            for s in strides:
                s0, s1 = s[a0], s[a1]
                if s0 != 0 and s1 != 0:
                    if abs(s1) <= abs(s0):
                        swap = False
                    elif ambiguous:
                        swap = True
                    ambiguous = False
            if not ambiguous:
                if swap:
                    ipos = i1
                else:
                    break
        if ipos != i0:
            perm[ipos + 1:i0 + 1] = perm[ipos:i0]
            perm[ipos] = a0
    return perm


def multi_sorted_stride_perm(shapes: list, strides: list, ndim: int) -> list[int]:
    """The axes outermost first in the arrays' common memory order (numpy's `PyArray_CreateMultiSortedStridePerm`,
    the order np.concatenate allocates in): a stable insertion sort by |stride|, largest first, where an array
    with length one on either axis gives no opinion and C order wins where arrays disagree."""
    perm = list(range(ndim))
    for i0 in range(1, ndim):
        ipos = i0
        a0 = perm[i0]
        for i1 in range(i0 - 1, -1, -1):
            a1 = perm[i1]
            ambiguous, swap = True, False
            for shape, s in zip(shapes, strides):
                if shape[a0] != 1 and shape[a1] != 1:
                    if abs(s[a0]) <= abs(s[a1]):
                        swap = False
                    elif ambiguous:
                        swap = True
                    ambiguous = False
            if not ambiguous:
                if swap:
                    ipos = i1
                else:
                    break
        if ipos != i0:
            perm[ipos + 1:i0 + 1] = perm[ipos:i0]
            perm[ipos] = a0
    return perm


def broadcast_shapes(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """numpy's broadcasting of several shapes (ValueError as numpy words it)."""
    if not shapes:
        return ()
    first = shapes[0]
    for shape in shapes:
        if shape != first:
            break
    else:
        return first
    ndim = max(map(len, shapes), default=0)
    out = [1] * ndim
    for shape in shapes:
        lead = ndim - len(shape)
        for i, n in enumerate(shape):
            m = out[lead + i]
            if n != m:
                if m == 1:
                    out[lead + i] = n
                elif n != 1:
                    raise ValueError("operands could not be broadcast together with shapes "
                                     + " ".join(str(s).replace(" ", "") for s in shapes))
    return tuple(out)


def normalize_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (tuple, list)):
        return tuple(operator.index(n) for n in shape)
    return (operator.index(shape),)


def normalize_axes(axis: Any, ndim: int, allow_none: bool = True) -> tuple[int, ...]:
    """Axes as non-negative ints (None: all of them), numpy's AxisError when out of range."""
    if axis is None:
        if not allow_none:
            raise TypeError("an axis is required")
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        a %= ndim
        if a in out:
            raise ValueError("duplicate value in 'axis'")
        out.append(a)
    return tuple(out)


def fix_unknown(shape: tuple, size: int) -> tuple[int, ...]:
    """A reshape's target shape with its -1 resolved (numpy's `_fix_unknown_dimension`)."""
    shape = tuple(operator.index(n) for n in shape)
    unknown = [i for i, n in enumerate(shape) if n < 0]
    if len(unknown) > 1:
        raise ValueError("can only specify one unknown dimension")
    if unknown:
        known = math.prod(n for n in shape if n >= 0)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape array of size {size} into shape {shape}")
        shape = shape[:unknown[0]] + (size // known,) + shape[unknown[0] + 1:]
    elif math.prod(shape) != size:
        raise ValueError(f"cannot reshape array of size {size} into shape {shape}")
    return shape


def nocopy_strides(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int,
                   new: tuple[int, ...]) -> tuple[int, ...] | None:
    """The strides of a C-order reshape as a view, or None when numpy must copy (`_attempt_nocopy_reshape`)."""
    olddims = [n for n in shape if n != 1]
    oldstrides = [s for n, s in zip(shape, strides) if n != 1]
    oldnd, newnd = len(olddims), len(new)
    newstrides = [0] * newnd
    oi, oj, ni, nj = 0, 1, 0, 1
    while ni < newnd and oi < oldnd:
        np_, op = new[ni], olddims[oi]
        while np_ != op:
            if np_ < op:
                np_ *= new[nj]
                nj += 1
            else:
                op *= olddims[oj]
                oj += 1
        for ok in range(oi, oj - 1):
            if oldstrides[ok] != olddims[ok + 1] * oldstrides[ok + 1]:
                return None
        newstrides[nj - 1] = oldstrides[oj - 1]
        for nk in range(nj - 1, ni, -1):
            newstrides[nk - 1] = newstrides[nk] * new[nk]
        ni, nj = nj, nj + 1
        oi, oj = oj, oj + 1
    last = newstrides[ni - 1] if ni >= 1 else itemsize
    for nk in range(ni, newnd):
        newstrides[nk] = last
    return tuple(newstrides)

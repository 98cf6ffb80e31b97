"""The numpy functions the shape-only arrays answer, against numpy itself (issue 21, items 2 and 8).

Every call in the table runs on real arrays and on MetaArrays laid out the same way (C, Fortran, strided,
negative strides, offset views, swapped axes, read-only broadcast views: tests/meta_compare.py), and everything
observable must agree: shape, dtype, strides, contiguity, the writeable and owndata flags, and whether the result
is new, an input itself, a view of which input's buffer at which offset, or a view of a buffer the call hid.
Where numpy raises, MetaArray raises the same kind of error. A call the shape-only arrays cannot follow (its result
depends on values) is refused with a TypeError naming the numpy function and the line that called it.
A property test then drives random layouts through the functions that take any array.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memstudy.autograd import meta
from memstudy.autograd.meta import MetaArray
from meta_compare import describe, make, real, run

F2, F4, F8, I8, B = "float16", "float32", "float64", "int64", "bool"


def _meta_array(shape: tuple, dtype: str) -> MetaArray:
    return MetaArray(shape, dtype)


# name -> (call, input specs); a spec is (shape, dtype) or (shape, dtype, layout), layouts in meta_compare.LAYOUTS
CASES = {
    # --- einsum: a view where numpy gives one, numpy's iterator layout otherwise, the optimize paths, out= ---
    "einsum transpose is a view": (lambda a: np.einsum("ij->ji", a), [((3, 4), F4)]),
    "einsum implicit transpose is a view": (lambda a: np.einsum("ji", a), [((3, 4), F4)]),
    "einsum identity is a view": (lambda a: np.einsum("ij", a), [((3, 4), F4, "F")]),
    "einsum diagonal is a view": (lambda a: np.einsum("ii->i", a), [((4, 4), F8)]),
    "einsum diagonal of a strided view": (lambda a: np.einsum("iij->ji", a), [((3, 3, 2), F8, "step")]),
    "einsum view of a broadcast view is read-only": (lambda a: np.einsum("ij->ji", a), [((3, 4), F4, "bcast")]),
    "einsum view keeps the input dtype despite dtype=": (lambda a: np.einsum("ij->ji", a, dtype=F8),
                                                         [((3, 4), F4)]),
    "einsum view of an offset view": (lambda a: np.einsum("ij->ji", a), [((3, 4), F4, "offset")]),
    "einsum ellipsis view": (lambda a: np.einsum("...ij->...ji", a), [((2, 3, 4), F4)]),
    "einsum trace is a scalar": (lambda a: np.einsum("ii", a), [((4, 4), F8)]),
    "einsum full sum is a scalar": (lambda a: np.einsum("ij->", a), [((3, 4), F4)]),
    "einsum sum over rows": (lambda a: np.einsum("ij->j", a), [((3, 4), F4, "F")]),
    "einsum matmul": (lambda a, b: np.einsum("ij,jk->ik", a, b), [((3, 4), F4), ((4, 5), F4)]),
    "einsum matmul, output transposed": (lambda a, b: np.einsum("ij,jk->ki", a, b), [((3, 4), F4), ((4, 5), F4)]),
    "einsum matmul of transposed operands": (lambda a, b: np.einsum("ij,jk->ik", a, b),
                                             [((3, 4), F8, "F"), ((4, 5), F8, "F")]),
    "einsum implicit output": (lambda a, b: np.einsum("ij,jk", a, b), [((2, 3), F8), ((3, 4), F8)]),
    "einsum elementwise product transposed": (lambda a, b: np.einsum("bi,bi->ib", a, b), [((4, 5), F4), ((4, 5), F4)]),
    "einsum per-channel dot": (lambda a, b: np.einsum("ncp,ncp->c", a, b), [((2, 3, 4), F4), ((2, 3, 4), F4)]),
    "einsum outer": (lambda a, b: np.einsum("i,j->ij", a, b), [((3,), F4), ((4,), F4)]),
    "einsum inner is a scalar": (lambda a, b: np.einsum("i,i->", a, b), [((3,), F8), ((3,), F8)]),
    "einsum batched matmul with an ellipsis": (lambda a, b: np.einsum("...ij,...jk->...ik", a, b),
                                               [((2, 3, 4), F4), ((2, 4, 5), F4)]),
    "einsum broadcast ellipsis": (lambda a, b: np.einsum("...ij,jk->...ik", a, b), [((2, 3, 4), F4, "perm"),
                                                                                    ((4, 5), F4)]),
    "einsum mixed dtypes": (lambda a, b: np.einsum("ij,ij->j", a, b), [((2, 3), F4), ((2, 3), F8)]),
    "einsum dtype=": (lambda a, b: np.einsum("ij,jk->ik", a, b, dtype=F8), [((2, 3), F4), ((3, 4), F4)]),
    "einsum order C": (lambda a, b: np.einsum("ij,jk->ki", a, b, order="C"), [((3, 4), F4), ((4, 5), F4)]),
    "einsum order F": (lambda a, b: np.einsum("ij,jk->ik", a, b, order="F"), [((3, 4), F4), ((4, 5), F4)]),
    "einsum order A of F operands": (lambda a, b: np.einsum("ij,jk->ik", a, b, order="A"),
                                     [((3, 4), F4, "F"), ((4, 5), F4, "F")]),
    "einsum of a negative-stride operand": (lambda a, b: np.einsum("ij,jk->ik", a, b),
                                            [((3, 4), F8, "neg"), ((4, 5), F8)]),
    "einsum sublist form": (lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [2, 0]), [((3, 4), F4), ((4, 5), F4)]),
    "einsum sublist transpose is a view": (lambda a: np.einsum(a, [0, 1], [1, 0]), [((3, 4), F4)]),
    "einsum into out": (lambda a, b, o: np.einsum("ij,jk->ik", a, b, out=o), [((3, 4), F4), ((4, 5), F4),
                                                                            ((3, 5), F4)]),
    "einsum transpose into out is out": (lambda a, o: np.einsum("ij->ji", a, out=o), [((3, 4), F4), ((4, 3), F4)]),
    "einsum into a float64 out": (lambda a, b, o: np.einsum("ij,jk->ik", a, b, out=o),
                                  [((3, 4), F4), ((4, 5), F4), ((3, 5), F8)]),
    "einsum optimize matmul": (lambda a, b: np.einsum("ij,jk->ik", a, b, optimize=True),
                               [((3, 4), F4), ((4, 5), F4)]),
    "einsum optimize matmul, output transposed": (lambda a, b: np.einsum("ij,jk->ki", a, b, optimize=True),
                                                  [((3, 4), F4), ((4, 5), F4)]),
    "einsum optimize batched": (lambda a, b: np.einsum("bij,bjk->bik", a, b, optimize="greedy"),
                                [((2, 3, 4), F8), ((2, 4, 5), F8)]),
    "einsum optimize two contracted axes": (lambda a, b: np.einsum("abc,bcd->ad", a, b, optimize=True),
                                            [((2, 3, 4), F4), ((3, 4, 5), F4)]),
    "einsum optimize pure product": (lambda a, b: np.einsum("ij,jk->ijk", a, b, optimize=True),
                                     [((2, 3), F4), ((3, 4), F4)]),
    "einsum optimize with a diagonal": (lambda a, b: np.einsum("iij,jk->ik", a, b, optimize=True),
                                        [((3, 3, 4), F8), ((4, 5), F8)]),
    "einsum optimize three operands": (lambda a, b, c: np.einsum("ij,jk,kl->il", a, b, c, optimize="greedy"),
                                       [((2, 3), F4), ((3, 40), F4), ((40, 2), F4)]),
    "einsum optimal path": (lambda a, b, c: np.einsum("ij,jk,kl->li", a, b, c, optimize="optimal"),
                            [((2, 30), F8), ((30, 3), F8), ((3, 20), F8)]),
    "einsum optimize into out": (lambda a, b, o: np.einsum("ij,jk->ki", a, b, out=o, optimize=True),
                                 [((3, 4), F4), ((4, 5), F4), ((5, 3), F4)]),
    "einsum optimize one operand": (lambda a: np.einsum("ij->ji", a, optimize=True), [((3, 4), F4)]),
    "einsum optimize order F": (lambda a, b: np.einsum("ij,jk->ik", a, b, optimize=True, order="F"),
                                [((3, 4), F4), ((4, 5), F4)]),
    "einsum mismatched sizes raise": (lambda a, b: np.einsum("ij,ij->i", a, b), [((2, 3), F4), ((4, 3), F4)]),
    "einsum too few subscripts raise": (lambda a: np.einsum("i->i", a), [((2, 3), F4)]),
    "einsum output letter missing from inputs raises": (lambda a: np.einsum("ij->k", a), [((2, 3), F4)]),
    "einsum out of the wrong shape raises": (lambda a, o: np.einsum("ij->j", a, out=o), [((2, 3), F4), ((2,), F4)]),
    # --- reductions: keepdims, out, where, initial, dtype; their layout follows the input's ----------------------
    "sum keepdims of a transpose": (lambda a: np.sum(a, axis=1, keepdims=True), [((3, 4, 5), F8, "perm")]),
    "sum into out": (lambda a, o: np.sum(a, axis=0, out=o), [((3, 4), F4), ((4,), F4)]),
    "sum into a keepdims out": (lambda a, o: a.sum(axis=1, keepdims=True, out=o), [((3, 4), F4), ((3, 1), F4)]),
    "sum with where=": (lambda a, m: np.sum(a, axis=0, where=m), [((3, 4), F4), ((3, 4), B)]),
    "sum with initial": (lambda a: np.sum(a, axis=-1, initial=1.0), [((3, 4), F4, "F")]),
    "sum dtype=": (lambda a: a.sum(axis=0, dtype=F8), [((3, 4), F4)]),
    "max with initial over an empty axis": (lambda a: np.max(a, axis=0, initial=0.0), [((0, 3), F4)]),
    "max keepdims of a strided view": (lambda a: a.max(axis=-1, keepdims=True), [((4, 6), F4, "step")]),
    "min of a negative-stride view": (lambda a: np.min(a, axis=0), [((4, 3, 2), F8, "neg")]),
    "prod of int64 keepdims": (lambda a: np.prod(a, axis=(0, 1), keepdims=True), [((2, 3, 4), I8)]),
    "any keepdims": (lambda a: np.any(a, axis=1, keepdims=True), [((3, 4), B, "F")]),
    "all": (lambda a: np.all(a), [((3, 4), F4)]),
    "amax keepdims": (lambda a: np.amax(a, axis=0, keepdims=True), [((3, 4), F4, "F")]),
    "amin": (lambda a: np.amin(a, axis=-1), [((3, 4, 5), F8, "perm")]),
    "mean keepdims of a permutation": (lambda a: np.mean(a, axis=2, keepdims=True), [((3, 4, 5), F8, "perm")]),
    "mean into out": (lambda a, o: np.mean(a, axis=0, out=o), [((3, 4), F8), ((4,), F8)]),
    "mean of float16 keepdims": (lambda a: np.mean(a, axis=-1, keepdims=True), [((3, 4), F2, "F")]),
    "mean of float16 along an axis": (lambda a: a.mean(axis=0), [((3, 4, 2), F2, "perm")]),
    "mean with where=": (lambda a, m: np.mean(a, axis=1, where=m), [((3, 4), F4), ((3, 4), B)]),
    "var keepdims of a permutation": (lambda a: np.var(a, axis=-1, keepdims=True), [((3, 4, 5), F8, "perm")]),
    "std keepdims of a permutation": (lambda a: np.std(a, axis=-1, keepdims=True), [((3, 4, 5), F8, "perm")]),
    "var of a Fortran array": (lambda a: np.var(a, axis=1), [((3, 4, 5), F8, "F")]),
    "var of int64 is float64": (lambda a: np.var(a, axis=0, ddof=1), [((3, 4), I8)]),
    "std of float16": (lambda a: a.std(axis=0), [((3, 4), F2)]),
    "var is a scalar": (lambda a: np.var(a), [((3, 4), F4)]),
    "var method keepdims": (lambda a: a.var(axis=0, keepdims=True), [((3, 4), F4, "F")]),
    "argmax keepdims": (lambda a: np.argmax(a, axis=1, keepdims=True), [((3, 4), F4, "F")]),
    "argmin into out": (lambda a, o: np.argmin(a, axis=0, out=o), [((3, 4), F4), ((4,), I8)]),
    "add.reduce with where= and initial": (lambda a, m: np.add.reduce(a, axis=0, where=m, initial=0.0),
                                           [((3, 4), F4), ((3, 4), B)]),
    # --- cumulative and element-wise functions ------------------------------------------------------------------
    "cumsum": (lambda a: np.cumsum(a), [((3, 4), F4)]),
    "cumsum axis of a transpose": (lambda a: np.cumsum(a, axis=0), [((3, 4), F4, "F")]),
    "cumsum axis of a permutation": (lambda a: np.cumsum(a, axis=-1), [((3, 4, 5), F8, "perm")]),
    "cumsum of a negative-stride view": (lambda a: np.cumsum(a, axis=1), [((3, 4), F8, "neg")]),
    "cumsum of a broadcast view": (lambda a: np.cumsum(a, axis=0), [((3, 4), F4, "bcast")]),
    "cumsum of bool is int64": (lambda a: np.cumsum(a, axis=0), [((3, 4), B)]),
    "cumsum dtype=": (lambda a: a.cumsum(axis=1, dtype=F8), [((3, 4), F4)]),
    "cumsum into out": (lambda a, o: np.cumsum(a, axis=0, out=o), [((3, 4), F4), ((3, 4), F8)]),
    "cumprod": (lambda a: np.cumprod(a, axis=1), [((3, 4), F4, "step")]),
    "cumprod flattened": (lambda a: a.cumprod(), [((3, 4), I8, "F")]),
    "add.accumulate": (lambda a: np.add.accumulate(a, axis=1), [((3, 4), F4, "F")]),
    "multiply.accumulate dtype=": (lambda a: np.multiply.accumulate(a, dtype=F8), [((3, 4), F4)]),
    "multiply.outer": (lambda a, b: np.multiply.outer(a, b), [((3,), F4, "step"), ((2, 2), F8, "F")]),
    "subtract.outer of a transpose": (lambda a, b: np.subtract.outer(a, b), [((3, 4), F4, "F"), ((2,), F4)]),
    "clip": (lambda a: np.clip(a, 0, 1), [((3, 4), F4)]),
    "clip of a transpose": (lambda a: np.clip(a, -1.0, 1.0), [((3, 4, 5), F8, "perm")]),
    "clip with None": (lambda a: np.clip(a, None, 0.5), [((3, 4), F4, "F")]),
    "clip by arrays": (lambda a, lo, hi: np.clip(a, lo, hi), [((3, 4), F4), ((4,), F4), ((3, 1), F8)]),
    "clip int64 by a float": (lambda a: np.clip(a, 0, 2.5), [((3,), I8)]),
    "clip into out": (lambda a, o: np.clip(a, 0, 1, out=o), [((3, 4), F4), ((3, 4), F4)]),
    "clip in place": (lambda a: a.clip(0, 1, out=a), [((3, 4), F4)]),
    "clip method": (lambda a: a.clip(min=0), [((3, 4), F8, "neg")]),
    "maximum is a ufunc": (lambda a, b: np.maximum(a, b), [((3, 4), F4, "F"), ((4,), F4)]),
    "minimum with a python float": (lambda a: np.minimum(a, 0.5), [((3, 4), F2)]),
    "abs of a permutation": (lambda a: np.abs(a), [((3, 4, 5), F4, "perm")]),
    "round": (lambda a: np.round(a), [((3, 4), F4, "F")]),
    "round decimals": (lambda a: np.round(a, 2), [((3, 4), F8)]),
    "round method": (lambda a: a.round(1), [((3, 4, 5), F4, "perm")]),
    "round decimals of a Fortran array": (lambda a: np.round(a, 1), [((3, 4), F8, "F")]),
    "round an integer array copies it": (lambda a: np.round(a), [((3, 4, 5), I8, "perm")]),
    "around into out": (lambda a, o: np.around(a, 1, out=o), [((3, 4), F4), ((3, 4), F4)]),
    "nan_to_num": (lambda a: np.nan_to_num(a), [((3, 4), F4, "F")]),
    "nan_to_num of int64": (lambda a: np.nan_to_num(a), [((3, 4), I8)]),
    # --- where, concatenate, stack, take: their layouts --------------------------------------------------------
    "where with a python float": (lambda c, a: np.where(c, a, 0.0), [((3, 1), B), ((4,), F4)]),
    "where of transposes": (lambda c, a, b: np.where(c, a, b), [((3, 4), B, "F"), ((3, 4), F4, "F"),
                                                              ((3, 4), F4, "F")]),
    "where of a permutation": (lambda a: np.where(a > 0, a, 0.0), [((3, 4, 5), F8, "perm")]),
    "where of two scalars": (lambda c: np.where(c, 1.0, 0.0), [((3, 4), B, "F")]),
    "where mixed dtypes": (lambda c, a, b: np.where(c, a, b), [((3, 4), B), ((3, 4), F4), ((4,), F8)]),
    "concatenate": (lambda a, b: np.concatenate([a, b], axis=1), [((3, 4), F4), ((3, 2), F8)]),
    "concatenate transposes": (lambda a, b: np.concatenate([a, b]), [((3, 4), F4, "F"), ((2, 4), F4, "F")]),
    "concatenate permutations on the last axis": (lambda a, b: np.concatenate([a, b], axis=-1),
                                                  [((3, 4, 5), F8, "perm"), ((3, 4, 2), F8, "perm")]),
    "concatenate axis None": (lambda a, b: np.concatenate([a, b], axis=None), [((3, 4), F4, "F"), ((2,), F4)]),
    "concatenate into out": (lambda a, b, o: np.concatenate([a, b], out=o), [((3, 4), F4), ((1, 4), F4),
                                                                           ((4, 4), F4)]),
    "concatenate dtype=": (lambda a, b: np.concatenate((a, b), dtype=F8), [((3,), F4), ((2,), F4)]),
    "concatenate mismatched shapes raise": (lambda a, b: np.concatenate([a, b]), [((3, 4), F4), ((3, 5), F4)]),
    "stack": (lambda a, b: np.stack([a, b], axis=-1), [((3, 4), F4), ((3, 4), F4)]),
    "stack transposes": (lambda a, b: np.stack([a, b]), [((3, 4), F4, "F"), ((3, 4), F4, "F")]),
    "stack transposes on the last axis": (lambda a, b: np.stack([a, b], axis=-1),
                                          [((3, 4), F4, "F"), ((3, 4), F4, "F")]),
    "stack into out": (lambda a, b, o: np.stack([a, b], out=o), [((3,), F4), ((3,), F4), ((2, 3), F4)]),
    "hstack": (lambda a, b: np.hstack([a, b]), [((3, 4), F4), ((3, 2), F4)]),
    "vstack of 1-d arrays": (lambda a, b: np.vstack([a, b]), [((3,), F4), ((3,), F4)]),
    "take along an axis": (lambda a, i: np.take(a, i, axis=1), [((3, 4, 5), F8, "F"), ((2,), I8)]),
    "take flattened": (lambda a, i: np.take(a, i), [((3, 4), F4, "F"), ((2, 2), I8)]),
    "take into out": (lambda a, i, o: np.take(a, i, axis=0, out=o), [((3, 4), F4), ((2,), I8), ((2, 4), F4)]),
    "take method": (lambda a, i: a.take(i, axis=-1), [((3, 4), F4), ((5,), I8)]),
    "take_along_axis": (lambda a, i: np.take_along_axis(a, i, axis=1), [((3, 4), F4, "F"), ((3, 2), I8)]),
    # --- views: moveaxis, broadcast_to, flip, split, diagonal, ... ---------------------------------------------
    "moveaxis of a permutation": (lambda a: np.moveaxis(a, 0, -1), [((3, 4, 5), F4, "perm")]),
    "moveaxis several": (lambda a: np.moveaxis(a, [0, 1], [-1, -2]), [((3, 4, 5), F4)]),
    "broadcast_to of a strided view": (lambda a: np.broadcast_to(a, (2, 3, 4)), [((3, 4), F4, "step")]),
    "broadcast_arrays": (lambda a, b: np.broadcast_arrays(a, b), [((3, 1), F4), ((4,), F8)]),
    "atleast_1d of a 0-d array": (lambda a: np.atleast_1d(a), [((), F4)]),
    "atleast_2d": (lambda a: np.atleast_2d(a), [((3,), F4)]),
    "atleast_3d of several": (lambda a, b: np.atleast_3d(a, b), [((3,), F4), ((3, 4), F8, "F")]),
    "flip all axes is a view": (lambda a: np.flip(a), [((3, 4), F4, "F")]),
    "flip one axis": (lambda a: np.flip(a, 1), [((3, 4, 2), F8, "offset")]),
    "fliplr": (lambda a: np.fliplr(a), [((3, 4), F4)]),
    "flipud of a broadcast view": (lambda a: np.flipud(a), [((3, 4), F4, "bcast")]),
    "split": (lambda a: np.split(a, 2, axis=1), [((3, 4), F4, "F")]),
    "split at indices": (lambda a: np.split(a, [1, 3]), [((5, 2), F8, "step")]),
    "array_split unevenly": (lambda a: np.array_split(a, 3, axis=-1), [((2, 7), F4)]),
    "split unevenly raises": (lambda a: np.split(a, 3), [((4,), F4)]),
    "diagonal is a read-only view": (lambda a: np.diagonal(a), [((4, 4), F8)]),
    "diagonal of a batch": (lambda a: a.diagonal(axis1=1, axis2=2), [((2, 3, 3), F4, "perm")]),
    "trace": (lambda a: np.trace(a), [((4, 4), F8)]),
    "trace method of a batch": (lambda a: a.trace(axis1=1, axis2=2), [((3, 4, 4), F4, "perm")]),
    "squeeze": (lambda a: np.squeeze(a, axis=1), [((3, 1, 4), F4, "F")]),
    "ravel of a transpose is new": (lambda a: np.ravel(a), [((3, 4), F4, "F")]),
    "reshape of a negative-stride view copies": (lambda a: np.reshape(a, (-1,)), [((3, 4), F4, "neg")]),
    # --- copies: their layouts ---------------------------------------------------------------------------------
    "copy keeps a permutation's layout": (lambda a: np.copy(a), [((3, 4, 5), F4, "perm")]),
    "copy order C": (lambda a: np.copy(a, order="C"), [((3, 4), F4, "F")]),
    "copy method order A": (lambda a: a.copy(order="A"), [((3, 4), F4, "F")]),
    "copy of a negative-stride view": (lambda a: a.copy(order="K"), [((3, 4), F8, "neg")]),
    "ascontiguousarray like=": (lambda a: np.ascontiguousarray(a, like=a), [((3, 4), F4, "F")]),
    "ascontiguousarray of a C array is itself": (lambda a: np.ascontiguousarray(a, like=a), [((3, 4), F4)]),
    "asfortranarray like=": (lambda a: np.asfortranarray(a, like=a), [((3, 4), F4)]),
    "asfortranarray of an F array is itself": (lambda a: np.asfortranarray(a, like=a), [((3, 4), F4, "F")]),
    "astype copy=False same dtype is itself": (lambda a: a.astype(F4, copy=False), [((3, 4), F4, "F")]),
    "astype copy=False order C of F copies": (lambda a: a.astype(F4, order="C", copy=False), [((3, 4), F4, "F")]),
    "astype copy=False other dtype copies": (lambda a: a.astype(F8, copy=False), [((3, 4, 5), F4, "perm")]),
    "astype of a strided view": (lambda a: a.astype(F2), [((3, 4), F4, "step")]),
    "array copy=True keeps the layout": (lambda a: np.array(a, copy=True, like=a), [((3, 4), F4, "F")]),
    "array order C": (lambda a: np.array(a, order="C", like=a), [((3, 4), F4, "F")]),
    "array ndmin prepends a view": (lambda a: np.array(a, ndmin=3, like=a), [((3, 4), F4, "F")]),
    "asanyarray of itself like=": (lambda a: np.asanyarray(a, like=a), [((3, 4), F4, "step")]),
    # --- facts: shape, ndim, size, dtypes ------------------------------------------------------------------------
    "ndim": (lambda a: np.ndim(a), [((3, 4), F4)]),
    "size along an axis": (lambda a: np.size(a, 1), [((3, 4), F4)]),
    "shape": (lambda a: np.shape(a), [((3, 4), F4, "F")]),
    "result_type": (lambda a, b: np.result_type(a, b, 1.5), [((3,), F2), ((2,), I8)]),
    "can_cast": (lambda a: np.can_cast(a, np.float16), [((3,), F4)]),
    # --- indexing: fancy and real boolean masks ---------------------------------------------------------------
    "fancy index of a Fortran array keeps the subspace layout": (lambda a, i: a[i], [((3, 4, 5), F8, "F"), ((2,), I8)]),
    "fancy index of a permutation": (lambda a, i: a[i], [((3, 4, 5), F8, "perm"), ((2,), I8)]),
    "fancy index on the last axis of a transpose": (lambda a, i: a[:, i], [((3, 4), F4, "F"), ((2,), I8)]),
    "fancy index of a negative-stride view": (lambda a, i: a[i], [((3, 4), F4, "neg"), ((5,), I8)]),
    "fancy index 2-d index array": (lambda a, i: a[i], [((3, 4), F4), ((2, 3), I8)]),
    "fancy index pair": (lambda a, i, j: a[i, j], [((3, 4), F4, "F"), ((2,), I8), ((2,), I8)]),
    "fancy index with an integer": (lambda a, i: a[1, i], [((3, 4, 5), F8, "F"), ((2,), I8)]),
    "real boolean mask on the first axis": (lambda a: a[np.array([True, False, True])], [((3, 4), F4, "F")]),
    "real boolean mask of every element": (lambda a: a[np.ones((3, 4), bool)], [((3, 4), F4, "F")]),
    # --- sorting, triangles, tiling, padding, differences -------------------------------------------------------
    "sort keeps the layout": (lambda a: np.sort(a, axis=0), [((3, 4, 5), F8, "perm")]),
    "sort flattened": (lambda a: np.sort(a, axis=None), [((3, 4), F4, "F")]),
    "sort of a broadcast view": (lambda a: np.sort(a), [((3, 4), F4, "bcast")]),
    "sort in place": (lambda a: a.sort(axis=0), [((3, 4), F4)]),
    "argsort": (lambda a: np.argsort(a, axis=0), [((3, 4, 5), F8, "F")]),
    "argsort flattened": (lambda a: np.argsort(a, axis=None), [((3, 4), F4)]),
    "argsort method": (lambda a: a.argsort(), [((3, 4), F4, "neg")]),
    "tril": (lambda a: np.tril(a), [((4, 4), F4)]),
    "triu k of a transpose": (lambda a: np.triu(a, 1), [((4, 5), F8, "F")]),
    "triu of a batch": (lambda a: np.triu(a), [((2, 3, 3), F4, "perm")]),
    "tril of a 1-d array": (lambda a: np.tril(a), [((3,), F4)]),
    "tile": (lambda a: np.tile(a, 2), [((3, 4), F4)]),
    "tile of a transpose": (lambda a: np.tile(a, (2, 1)), [((3, 4), F4, "F")]),
    "tile more axes": (lambda a: np.tile(a, (2, 1, 3)), [((3, 4), F8)]),
    "tile once copies": (lambda a: np.tile(a, 1), [((3, 4), F4, "F")]),
    "repeat along an axis": (lambda a: np.repeat(a, 2, axis=0), [((3, 4), F4, "F")]),
    "repeat flattened": (lambda a: np.repeat(a, 3), [((3, 4), F4)]),
    "repeat by a real array": (lambda a: np.repeat(a, np.array([1, 0, 2]), axis=0), [((3, 4), F8)]),
    "repeat method": (lambda a: a.repeat(2, axis=-1), [((3, 4), F4)]),
    "pad": (lambda a: np.pad(a, 1), [((3, 4), F4)]),
    "pad a transpose": (lambda a: np.pad(a, ((1, 0), (0, 2))), [((3, 4), F4, "F")]),
    "pad a permutation": (lambda a: np.pad(a, 1), [((3, 4, 5), F8, "perm")]),
    "pad edge": (lambda a: np.pad(a, (2, 1), mode="edge"), [((3, 4), F4)]),
    "pad reflect": (lambda a: np.pad(a, 1, mode="reflect"), [((3, 4), F4)]),
    "pad constant value": (lambda a: np.pad(a, [(0, 0), (1, 1)], constant_values=-1), [((3, 4), I8)]),
    "diff": (lambda a: np.diff(a), [((3, 4), F4)]),
    "diff of a transpose along axis 0": (lambda a: np.diff(a, axis=0), [((3, 4), F4, "F")]),
    "diff n=2 of a permutation": (lambda a: np.diff(a, n=2), [((3, 4, 5), F8, "perm")]),
    "diff with prepend": (lambda a: np.diff(a, prepend=0.0), [((3, 4), F4)]),
    "diff of bool": (lambda a: np.diff(a), [((3, 4), B)]),
    "roll flattened": (lambda a: np.roll(a, 1), [((3, 4), F4, "F")]),
    "roll along an axis": (lambda a: np.roll(a, -1, axis=0), [((3, 4), F4, "F")]),
    "roll along two axes": (lambda a: np.roll(a, (1, 2), axis=(0, 1)), [((3, 4), F8)]),
    # --- products ------------------------------------------------------------------------------------------------
    "outer": (lambda a, b: np.outer(a, b), [((3, 4), F4, "F"), ((5,), F8)]),
    "tensordot": (lambda a, b: np.tensordot(a, b, axes=([0], [0])), [((3, 4), F4), ((3, 4), F4)]),
    "tensordot of permutations": (lambda a, b: np.tensordot(a, b, axes=([0], [0])), [((3, 4, 5), F8, "perm"),
                                                                                    ((4, 2), F8)]),
    "tensordot axes=2": (lambda a, b: np.tensordot(a, b), [((2, 3, 4), F4), ((3, 4, 5), F4)]),
    "tensordot axes=0": (lambda a, b: np.tensordot(a, b, axes=0), [((2, 3), F4), ((4,), F4)]),
    "dot of n-d arrays": (lambda a, b: np.dot(a, b), [((2, 3, 4), F4), ((4, 5), F4)]),
    "dot of transposes": (lambda a, b: np.dot(a, b), [((3, 4), F8, "F"), ((4, 5), F8, "F")]),
    "dot method": (lambda a, b: a.dot(b), [((3, 4), F4), ((4,), F4)]),
    "inner": (lambda a, b: np.inner(a, b), [((3, 4), F4), ((5, 4), F4)]),
    "matmul into out": (lambda a, b, o: np.matmul(a, b, out=o), [((3, 4), F4), ((4, 5), F4), ((3, 5), F4)]),
    # --- norms -------------------------------------------------------------------------------------------------
    "norm of everything is a scalar": (lambda a: np.linalg.norm(a), [((3, 4), F4, "F")]),
    "norm of a vector along an axis": (lambda a: np.linalg.norm(a, axis=-1), [((3, 4, 5), F8, "perm")]),
    "norm keepdims": (lambda a: np.linalg.norm(a, axis=1, keepdims=True), [((3, 4), F4, "F")]),
    "norm ord=1": (lambda a: np.linalg.norm(a, ord=1, axis=0), [((3, 4), F4)]),
    "norm ord=inf": (lambda a: np.linalg.norm(a, ord=np.inf, axis=-1), [((3, 4), F8)]),
    "norm ord=3": (lambda a: np.linalg.norm(a, ord=3, axis=0), [((3, 4), F4)]),
    "norm ord=0": (lambda a: np.linalg.norm(a, ord=0, axis=0), [((3, 4), F4)]),
    "norm frobenius over two axes": (lambda a: np.linalg.norm(a, axis=(1, 2)), [((2, 3, 4), F8, "perm")]),
    "norm frobenius keepdims": (lambda a: np.linalg.norm(a, "fro", axis=(0, 1), keepdims=True), [((3, 4), F4)]),
    "norm of a matrix, ord=1": (lambda a: np.linalg.norm(a, 1), [((3, 4), F8)]),
    "norm of int64 is float64": (lambda a: np.linalg.norm(a, axis=0), [((3, 4), I8)]),
    "norm of float16": (lambda a: np.linalg.norm(a, axis=0), [((3, 4), F2)]),
    # --- in place ----------------------------------------------------------------------------------------------
    "copyto a transpose": (lambda a, b: np.copyto(a, b), [((3, 4), F4, "F"), ((4,), F4)]),
    "put_along_axis": (lambda a, i: np.put_along_axis(a, i, 0.0, axis=1), [((3, 4), F4), ((3, 1), I8)]),
}

# Calls whose result depends on the values: refused with a TypeError naming the numpy function
REFUSED = {
    "numpy.nonzero": lambda a: np.nonzero(a),
    "numpy.unique": lambda a: np.unique(a),
    "numpy.argwhere": lambda a: np.argwhere(a),
    "numpy.count_nonzero": lambda a: np.count_nonzero(a),
    "numpy.where": lambda a: np.where(a > 0),  # one argument: the positions of the True values
    "numpy.interp": lambda a: np.interp(a, [0.0, 1.0], [1.0, 2.0]),  # no shape rule (tests/families/numpy_ops.py)
    "numpy.linalg.svd": lambda a: np.linalg.svd(a),
    "numpy.linalg.norm": lambda a: np.linalg.norm(a, ord=2),  # a matrix's 2-norm is its largest singular value
    "a boolean mask": lambda a: a[a > 0],
    "nonzero": lambda a: a.nonzero(),
    "ascontiguousarray": lambda a: np.ascontiguousarray(a),  # no like=: numpy converts it, with no dispatch
    "tolist": lambda a: a.tolist(),
    "truth value": lambda a: bool(a.sum() > 0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_meta_matches_numpy(name):
    call, specs = CASES[name]
    try:
        expected, real_inputs = run(call, specs, real)
    except Exception as numpy_error:  # numpy refuses: MetaArray must refuse with the same kind of error
        with pytest.raises(Exception) as raised:
            run(call, specs, _meta_array)
        assert isinstance(raised.value, type(numpy_error)), (numpy_error, raised.value)
        return
    got, meta_inputs = run(call, specs, _meta_array)
    assert describe(got, meta_inputs) == describe(expected, real_inputs)


@pytest.mark.parametrize("function", list(REFUSED))
def test_value_dependent_calls_are_refused_naming_the_function_and_the_line(function):
    a = MetaArray((3, 4), F4)
    with pytest.raises(TypeError) as raised:
        REFUSED[function](a)
    message = str(raised.value)
    assert function in message and "test_meta_functions.py:" in message, message
    assert isinstance(raised.value, meta.Unsupported)


def test_every_shape_rule_is_in_the_table(monkeypatch):
    """Each numpy function, ndarray method and ufunc method a built-in rule answers is driven by at least one call
    of the tables above."""
    from memstudy.autograd.meta.array import FUNCTIONS, METHODS, UFUNC_METHODS

    used = set()
    for registry in (FUNCTIONS, METHODS, UFUNC_METHODS):
        for key, rule in list(registry.items()):
            def recording(*args, _key=key, _rule=rule, **kwargs):
                used.add(_key)
                return _rule(*args, **kwargs)
            monkeypatch.setitem(registry, key, recording)
    for call, specs in CASES.values():
        try:
            run(call, specs, _meta_array)
        except Exception:
            pass
    for call in REFUSED.values():
        try:
            call(MetaArray((3, 4), F4))
        except TypeError:
            pass
    import test_meta  # the older table (ufuncs, indexing, creation) covers the rest

    for call, specs in test_meta.CASES.values():
        try:
            test_meta.run(call, specs, MetaArray)
        except Exception:
            pass
    missing = sorted(getattr(f, "__name__", str(f)) for registry in (FUNCTIONS, METHODS, UFUNC_METHODS)
                     for f in registry if f not in used)
    assert not missing, f"shape rules no table drives: {missing}"


# --- the property test: random layouts through the functions that take any array -------------------------------
ANY_ARRAY = {
    "copy": lambda a, axis: np.copy(a),
    "copy C": lambda a, axis: a.copy(),
    "astype float64": lambda a, axis: a.astype(F8),
    "astype copy=False": lambda a, axis: a.astype(a.dtype, copy=False),
    "exp": lambda a, axis: np.exp(a),
    "add itself": lambda a, axis: a + a,
    "sum": lambda a, axis: a.sum(axis=axis),
    "sum keepdims": lambda a, axis: np.sum(a, axis=axis, keepdims=True),
    "mean": lambda a, axis: np.mean(a, axis=axis),
    "max keepdims": lambda a, axis: np.max(a, axis=axis, keepdims=True, initial=-np.inf),
    "var keepdims": lambda a, axis: np.var(a, axis=axis, keepdims=True),
    "cumsum": lambda a, axis: np.cumsum(a, axis=axis),
    "clip": lambda a, axis: np.clip(a, 0.0, 1.0),
    "where": lambda a, axis: np.where(a > 0, a, 0.0),
    "flip": lambda a, axis: np.flip(a, axis),
    "roll": lambda a, axis: np.roll(a, 1, axis=axis),
    "sort": lambda a, axis: np.sort(a, axis=axis),
    "argsort": lambda a, axis: np.argsort(a, axis=axis),
    "diff": lambda a, axis: np.diff(a, axis=-1 if axis is None else axis),
    "pad": lambda a, axis: np.pad(a, 1),
    "tile": lambda a, axis: np.tile(a, 2),
    "repeat": lambda a, axis: np.repeat(a, 2, axis=axis),
    "concatenate with itself": lambda a, axis: np.concatenate([a, a], axis=axis),
    "stack with itself": lambda a, axis: np.stack([a, a], axis=-1),
    "einsum transpose": lambda a, axis: np.einsum("...i->i...", a),
    "einsum sum of squares": lambda a, axis: np.einsum("...i,...i->i", a, a),
    "einsum optimize": lambda a, axis: np.einsum("...i,...i->i...", a, a, optimize=True),
    "reshape": lambda a, axis: a.reshape(-1),
    "ravel": lambda a, axis: a.ravel(),
    "norm": lambda a, axis: np.linalg.norm(a, axis=axis),
    "moveaxis": lambda a, axis: np.moveaxis(a, 0, -1),
    "fancy index": lambda a, axis: a[np.array([0, 0, 0])],
}


@st.composite
def laid_out(draw):
    """A shape, and a chain of views that reaches it from a fresh buffer (the same chain for both kinds)."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    steps = []
    for axis in range(ndim):
        step = draw(st.sampled_from((1, 1, 2, -1, -2)))
        start = draw(st.integers(0, 1))
        steps.append((start, step))
    perm = tuple(draw(st.permutations(range(ndim))))
    dtype = draw(st.sampled_from((F4, F8)))
    return shape, steps, perm, dtype


def _chain(buffer, steps, perm):
    index = tuple(slice(start, None, step) if step > 0 else slice(None if start == 0 else -1 - start, None, step)
                  for start, step in steps)
    return buffer[index].transpose(perm)


@settings(max_examples=150, deadline=None)
@given(laid_out(), st.sampled_from(sorted(ANY_ARRAY)), st.data())
def test_random_layouts_match_numpy(layout, name, data):
    shape, steps, perm, dtype = layout
    a = _chain(np.ones(shape, dtype), steps, perm)
    m = _chain(MetaArray(shape, dtype), steps, perm)
    assert (m.shape, m.strides) == (a.shape, a.strides)
    axis = data.draw(st.one_of(st.none(), st.integers(-a.ndim, a.ndim - 1)))
    call = ANY_ARRAY[name]
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():  # empty means and variances: values only
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = call(a, axis)
    except Exception as numpy_error:
        with pytest.raises(type(numpy_error)):
            call(m, axis)
        return
    assert describe(call(m, axis), [m]) == describe(expected, [a])


def test_a_refusal_names_the_users_file_and_op():
    """The frame named is the first one outside numpy and the shape-only arrays: the user's op."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "families" / "numpy_ops.py"
    spec = importlib.util.spec_from_file_location("numpy_ops_for_refusal", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from memstudy.autograd import Node

    with pytest.raises(meta.Unsupported) as raised:
        module.Interp.forward(Node(module.Interp, None, (False,), None), MetaArray((3, 4), F4))
    message = str(raised.value)
    assert "numpy.interp" in message and "numpy_ops.py:" in message and "Interp.forward" in message, message
    assert raised.value.function == "numpy.interp" and raised.value.where.endswith("in Interp.forward")


def test_a_user_rule_registered_with_implements_is_used(monkeypatch):
    from memstudy.autograd.meta.array import FUNCTIONS

    monkeypatch.setitem(FUNCTIONS, np.interp, FUNCTIONS.get(np.interp))  # restored after the test
    calls = []

    @meta.implements(np.interp)
    def rule(x, xp, fp, left=None, right=None, period=None):
        calls.append(x.shape)
        return meta.new_buffer(np.shape(x), np.float64)

    got = np.interp(MetaArray((3, 4), F4, (4, 12)), [0.0, 1.0], [1.0, 2.0])
    expected = np.interp(np.ones((4, 3), F4).T, [0.0, 1.0], [1.0, 2.0])
    assert describe(got, []) == describe(expected, []) and calls == [(3, 4)]
    view = meta.view(got, (4, 3), (8, 32))
    assert view.base is got and describe(view, [got]) == describe(expected.T, [expected])


def test_meta_make_layouts_agree():
    """The layouts themselves are the same on both sides (what every case above starts from)."""
    for layout in ("C", "F", "step", "neg", "offset", "perm", "bcast"):
        a, m = make(((3, 4, 5), F4, layout), real), make(((3, 4, 5), F4, layout), _meta_array)
        assert describe(m, []) == describe(a, [])

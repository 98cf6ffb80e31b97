"""np.einsum on shape-only arrays, as numpy runs it: a view where numpy returns one, numpy's iterator layout for a
new result, and the `optimize` paths' own sequence of calls.

- `optimize=False` (the default) is numpy's C `c_einsum` (`PyArray_EinsteinSum`, ported here step by step): with
  one operand, no summed axis and no `out`, the result is a *view* of the operand (a transpose, a diagonal, the
  operand itself), in the operand's dtype whatever `dtype=` says; otherwise repeated labels become diagonal views,
  the iterator's axes are the output's labels then the summed ones (in character order), and the result is
  allocated in the order numpy's iterator chooses from the operands' strides (`order='K'`), or C / F / A.
- `optimize=True | 'greedy' | 'optimal' | path` runs numpy's own `einsum_path` (on zero-byte stand-ins of the
  operands: it reads shapes only) and then numpy's contraction loop: pairwise contractions through numpy's
  `_parse_eq_to_batch_matmul` (pure shapes) and `bmm_einsum`'s calls (c_einsum, reshape, matmul or multiply,
  reshape, transpose), each on shape-only arrays. A numpy without that function (before 2.4 the loop used
  tensordot) is refused rather than guessed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .array import MetaArray, check_writeable, fresh, outputs, reshape_of, transpose_of, view_of
from .errors import Unsupported
from .functions import implements
from .layout import best_axis_order, c_strides, f_strides, is_c_contiguous, is_f_contiguous, strides_in_order

try:  # numpy >= 2.4: pairwise contractions by batched matmul (pure shape logic, cached by numpy)
    from numpy._core.einsumfunc import _parse_eq_to_batch_matmul, _parse_output_order
except ImportError:  # pragma: no cover - older numpy
    _parse_eq_to_batch_matmul = _parse_output_order = None


def _operand(x: Any) -> Any:
    """What c_einsum makes of an operand: arrays as they are, a Python or numpy scalar as a 0-d array."""
    if isinstance(x, (MetaArray, np.ndarray)):
        return x
    if isinstance(x, (bool, int, float, complex, np.generic)):
        return fresh((), np.asarray(x).dtype, None)
    raise TypeError(f"einsum: unsupported operand {type(x).__name__}")


def _sublist_subscripts(args: tuple) -> tuple[str, list]:
    """numpy's C `einsum_list_to_subscripts`: op0, sublist0, op1, sublist1, ..., [output sublist]; integer labels
    0..25 are 'A'..'Z' and 26..51 'a'..'z' (the C mapping: it fixes the implicit output's order)."""
    def letters(sub: Any) -> str:
        out = []
        for s in sub:
            if s is Ellipsis:
                out.append("...")
                continue
            s = int(s)
            if not 0 <= s < 52:
                raise ValueError("subscript is not within the valid range [0, 52)")
            out.append(chr(ord("A") + s) if s < 26 else chr(ord("a") + s - 26))
        return "".join(out)

    operands, terms = list(args[0::2]), [letters(sub) for sub in args[1::2]]
    if len(args) % 2:  # an output sublist
        operands.pop()
        output = letters(args[-1])
        return ",".join(terms[:len(operands)]) + "->" + output, operands
    return ",".join(terms), operands


def _operand_labels(term: str, ndim: int, index: int, counts: dict[int, int]) -> list[int]:
    """`parse_operand_subscripts`: a label code per axis, 0 for a broadcast axis, the (negative) offset to the
    first occurrence for a repeated label."""
    labels: list[int] = []
    ellipsis = -1
    i = 0
    while i < len(term):
        c = term[i]
        if c.isalpha() and c.isascii():
            if len(labels) >= ndim:
                raise ValueError(f"einstein sum subscripts string contains too many subscripts for operand {index}")
            labels.append(ord(c))
            counts[ord(c)] = counts.get(ord(c), 0) + 1
        elif c == ".":
            if ellipsis != -1 or term[i:i + 3] != "...":
                raise ValueError(f"einstein sum subscripts string contains a '.' that is not part of an ellipsis "
                                 f"('...') in operand {index}")
            ellipsis = len(labels)
            i += 2
        elif c != " ":
            raise ValueError(f"invalid subscript '{c}' in einstein sum subscripts string, subscripts must be letters")
        i += 1
    if ellipsis == -1:
        if len(labels) != ndim:
            raise ValueError("operand has more dimensions than subscripts given in einstein sum, but no '...' "
                             "ellipsis provided to broadcast the extra dimensions.")
    elif len(labels) < ndim:
        labels = labels[:ellipsis] + [0] * (ndim - len(labels)) + labels[ellipsis:]
    for i in range(ndim):  # later repeats point back to the first occurrence
        if labels[i] > 0:
            for j in range(i + 1, ndim):
                if labels[j] == labels[i]:
                    labels[j] = i - j
    return labels


def _output_labels(term: str, ndim_broadcast: int, counts: dict[int, int]) -> list[int]:
    labels: list[int] = []
    ellipsis = False
    i = 0
    while i < len(term):
        c = term[i]
        if c.isalpha() and c.isascii():
            if c in term[i + 1:]:
                raise ValueError(f"einstein sum subscripts string includes output subscript '{c}' multiple times")
            if not counts.get(ord(c)):
                raise ValueError(f"einstein sum subscripts string included output subscript '{c}' which never "
                                 "appeared in an input")
            labels.append(ord(c))
        elif c == ".":
            if ellipsis or term[i:i + 3] != "...":
                raise ValueError("einstein sum subscripts string contains a '.' that is not part of an ellipsis "
                                 "('...') in the output")
            ellipsis = True
            labels += [0] * ndim_broadcast
            i += 2
        elif c != " ":
            raise ValueError(f"invalid subscript '{c}' in einstein sum subscripts string, subscripts must be letters")
        i += 1
    if not ellipsis and ndim_broadcast > 0:
        raise ValueError("output has more dimensions than subscripts given in einstein sum, but no '...' ellipsis "
                         "provided to broadcast the extra dimensions.")
    return labels


def _single_op_view(op: Any, labels: list[int], output: list[int]) -> MetaArray | None:
    """`get_single_op_view`: the view numpy returns for one operand with no summed axis, else None."""
    dims = [0] * len(output)
    strides = [0] * len(output)
    broadcast = 0
    for axis, label in enumerate(labels):
        if label < 0:
            label = labels[axis + label]
        if label == 0:
            while broadcast < len(output) and output[broadcast] != 0:
                broadcast += 1
            if broadcast == len(output):
                raise ValueError("output had too few broadcast dimensions")
            dims[broadcast], strides[broadcast] = op.shape[axis], op.strides[axis]
            broadcast += 1
            continue
        if label not in output:
            return None  # a summed axis: no view
        i = output.index(label)
        if dims[i] != 0 and dims[i] != op.shape[axis]:
            raise ValueError(f"dimensions in single operand for collapsing index '{chr(label)}' don't match "
                             f"({dims[i]} != {op.shape[axis]})")
        dims[i] = op.shape[axis]
        strides[i] += op.strides[axis]
    if not isinstance(op, MetaArray):
        raise TypeError("einsum: a view of a real array cannot be shape-only")
    return view_of(op, tuple(dims), tuple(strides), 0)


def _combined(op: Any, index: int, labels: list[int]) -> tuple[tuple, tuple, list[int]]:
    """`get_combined_dims_view`: repeated labels merged into their diagonal: (shape, strides, labels)."""
    shape, strides, new_labels, where = [], [], [], []
    for axis, label in enumerate(labels):
        n, s = op.shape[axis], op.strides[axis]
        if label >= 0:
            where.append(len(shape))
            shape.append(n)
            strides.append(s)
            new_labels.append(label)
        else:
            i = where[axis + label]
            where.append(-1)
            if shape[i] != n:
                raise ValueError(f"dimensions in operand {index} for collapsing index '{chr(labels[axis + label])}' "
                                 f"don't match ({shape[i]} != {n})")
            strides[i] += s
    return tuple(shape), tuple(strides), new_labels


def _op_axes(labels: list[int], ndim: int, iter_labels: list[int]) -> list[int]:
    """`prepare_op_axes`: for each iterator axis, the operand's axis (-1: the operand lacks it)."""
    axes = [-1] * len(iter_labels)
    broadcast = ndim - 1
    for i in range(len(iter_labels) - 1, -1, -1):
        label = iter_labels[i]
        if label == 0:
            while broadcast >= 0 and labels[broadcast] != 0:
                broadcast -= 1
            if broadcast >= 0:
                axes[i] = broadcast
                broadcast -= 1
        elif label in labels:
            axes[i] = labels.index(label)
    return axes


def c_einsum(subscripts: Any, *operands: Any, out: Any = None, dtype: Any = None, order: str = "K",
             casting: str = "safe") -> Any:
    """numpy's `c_einsum` on shape-only operands (see the module docstring)."""
    if not isinstance(subscripts, str):
        subscripts, operands = _sublist_subscripts((subscripts,) + operands)
    ops = [_operand(x) for x in operands]
    if not ops:
        raise ValueError("not enough operands provided to einstein sum function")
    inputs, arrow, output_term = subscripts.partition("->")
    if "-" in inputs or ">" in inputs:
        raise ValueError("einstein sum subscript string does not contain proper '->' output specified")
    terms = inputs.split(",")
    if len(terms) < len(ops):
        raise ValueError("more operands provided to einstein sum function than specified in the subscripts string")
    if len(terms) > len(ops):
        raise ValueError("fewer operands provided to einstein sum function than specified in the subscripts string")
    counts: dict[int, int] = {}
    op_labels = [_operand_labels(term, op.ndim, i, counts) for i, (term, op) in enumerate(zip(terms, ops))]
    ndim_broadcast = max(sum(1 for label in labels if label == 0) for labels in op_labels)
    if arrow:
        output = _output_labels(output_term, ndim_broadcast, counts)
    else:
        output = [0] * ndim_broadcast + sorted(label for label, n in counts.items() if n == 1)
    if out is not None:
        (out,) = outputs(out, 1)
        if out.ndim != len(output):
            raise ValueError(f"out parameter does not have the correct number of dimensions, has {out.ndim} but "
                             f"should have {len(output)}")
    if len(ops) == 1 and out is None:
        view = _single_op_view(ops[0], op_labels[0], output)
        if view is not None:
            return view if view.ndim else fresh((), view.dtype, None)  # numpy returns a 0-d result as a scalar
    combined = [_combined(op, i, labels) for i, (op, labels) in enumerate(zip(ops, op_labels))]
    iter_labels = output + sorted(label for label in counts if label not in output)
    ndim_iter = len(iter_labels)
    op_axes = [_op_axes(labels, len(shape), iter_labels) for shape, _, labels in combined]
    # the iterator's shape: each axis broadcast over the operands that have it
    shape = [1] * ndim_iter
    for (op_shape, _, _), axes in zip(combined, op_axes):
        for i, a in enumerate(axes):
            if a >= 0 and op_shape[a] != 1:
                if shape[i] != 1 and shape[i] != op_shape[a]:
                    raise ValueError("operands could not be broadcast together with remapped shapes [original->"
                                     "remapped]: " + " ".join(f"{s}" for s, _, _ in combined))
                shape[i] = op_shape[a]
    out_shape = tuple(shape[:len(output)])
    if dtype is None:
        result_dtype = np.result_type(*(op.dtype for op in ops))
    else:
        result_dtype = np.dtype(dtype)
        for i, op in enumerate(ops):
            if not np.can_cast(op.dtype, result_dtype, casting):
                raise TypeError(f"Iterator operand {i} dtype could not be cast from {op.dtype!r} to "
                                f"{result_dtype!r} according to the rule {casting!r}")
    if out is not None:
        check_writeable(out)
        if out.shape != out_shape:
            raise ValueError(f"non-broadcastable output operand with shape {out.shape} doesn't match the broadcast "
                             f"shape {out_shape}")
        if not np.can_cast(result_dtype, out.dtype, casting):
            raise TypeError(f"Iterator requested dtype could not be cast from {result_dtype!r} to {out.dtype!r}, "
                            f"the operand {len(ops)} dtype, according to the rule {casting!r}")
        return out
    itemsize = result_dtype.itemsize
    if len(out_shape) <= 1 or order == "C":
        strides = c_strides(out_shape, itemsize)
    elif order == "F" or (order == "A" and all(is_f_contiguous(op.shape, op.strides, op.itemsize) for op in ops)):
        strides = f_strides(out_shape, itemsize)
    elif order == "A":
        strides = c_strides(out_shape, itemsize)
    elif order == "K":
        # npyiter_find_best_axis_ordering over the operands' strides on the iterator's axes (an axis an operand
        # lacks or has of length 1 gives no opinion), then the output laid out innermost-first in that order
        vectors = [[op_strides[a] if a >= 0 and op_shape[a] != 1 else 0 for a in axes]
                   for (op_shape, op_strides, _), axes in zip(combined, op_axes)]
        perm = [axis for axis in best_axis_order(ndim_iter, vectors) if axis < len(out_shape)]
        strides = strides_in_order(out_shape, itemsize, perm)
    else:
        raise ValueError(f"order must be one of 'C', 'F', 'A', or 'K' (got {order!r})")
    return fresh(out_shape, result_dtype, strides)


def _bmm_einsum(eq: str, a: Any, b: Any, out: Any = None, **kwargs: Any) -> Any:
    """numpy 2.4's `bmm_einsum`, call for call, on shape-only arrays."""
    eq_a, eq_b, new_shape_a, new_shape_b, new_shape_ab, perm_ab, pure = _parse_eq_to_batch_matmul(eq, a.shape,
                                                                                                b.shape)
    output_order = _parse_output_order(kwargs.pop("order", "K"), a.flags.f_contiguous, b.flags.f_contiguous)
    if eq_a is not None:
        a = c_einsum(eq_a, a)
    if new_shape_a is not None:
        a = reshape_of(a, new_shape_a)
    if eq_b is not None:
        b = c_einsum(eq_b, b)
    if new_shape_b is not None:
        b = reshape_of(b, new_shape_b)
    if pure:
        if output_order is not None:
            kwargs["order"] = output_order
        return np.multiply(a, b, out=out, **kwargs)
    out_compatible = new_shape_ab is None and perm_ab is None
    if out_compatible:
        kwargs["out"] = out
    ab = np.matmul(a, b, **kwargs)
    if new_shape_ab is not None:
        ab = reshape_of(ab, new_shape_ab)
    if perm_ab is not None:
        ab = transpose_of(ab, perm_ab)
    if out is not None and not out_compatible:
        out[...] = ab
        return out
    if output_order == "C" and not is_c_contiguous(ab.shape, ab.strides, ab.itemsize) or \
            output_order == "F" and not is_f_contiguous(ab.shape, ab.strides, ab.itemsize):
        ab = fresh(ab.shape, ab.dtype, (c_strides if output_order == "C" else f_strides)(ab.shape, ab.itemsize))
    return ab


def _stand_in(x: Any) -> Any:
    """A real array of x's shape and dtype that holds one element (strides 0): what einsum_path reads."""
    if isinstance(x, MetaArray):
        return np.broadcast_to(np.zeros((), x.dtype), x.shape)
    return x


@implements(np.einsum)
def _np_einsum(*operands: Any, out: Any = None, optimize: Any = False, **kwargs: Any) -> Any:
    if optimize is False:
        return c_einsum(*operands, out=out, **kwargs)
    unknown = [k for k in kwargs if k not in ("dtype", "order", "casting")]
    if unknown:
        raise TypeError(f"Did not understand the following kwargs: {unknown}")
    if _parse_eq_to_batch_matmul is None:  # pragma: no cover - older numpy
        raise Unsupported("numpy.einsum", f"with optimize= on numpy {np.__version__} (its contraction path before "
                          "2.4) has no shape rule; use optimize=False")
    if isinstance(operands[0], str):
        arrays = [_operand(x) for x in operands[1:]]
        stand_ins = (operands[0],) + tuple(_stand_in(x) for x in arrays)
    else:
        arrays = [_operand(x) for x in operands[0::2]]
        stand_ins = tuple(_stand_in(x) if i % 2 == 0 else x for i, x in enumerate(operands))
        if len(operands) % 2:
            arrays.pop()
            stand_ins = stand_ins[:-1] + (operands[-1],)
    _, contractions = np.einsum_path(*stand_ins, optimize=optimize, einsum_call=True)
    for num, (inds, einsum_str, _) in enumerate(contractions):
        taken = [arrays.pop(x) for x in inds]
        if out is not None and num + 1 == len(contractions):
            kwargs["out"] = out
        if len(taken) == 2:
            result = _bmm_einsum(einsum_str, *taken, **kwargs)
        else:
            result = c_einsum(einsum_str, *taken, **kwargs)
        arrays.append(result)
    return out if out is not None else arrays[0]


__all__ = ["c_einsum"]

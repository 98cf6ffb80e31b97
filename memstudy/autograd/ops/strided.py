"""Reshapes inside an op, on inputs and gradients in any layout: a view when numpy can make one, and when it cannot
(a transposed, strided or broadcast array), a copy the ledger is told about.

An op may fold axes together to read an array as a matrix (Linear's weight gradient over all leading axes, a
convolution's weight as a matrix). numpy's `reshape` then copies a non-contiguous array silently: correct values,
but a buffer as large as the array that the ledger never sees. `reshaped` makes that copy explicit: it is reported
as the op's workspace (`ctx.workspace`, counted while it lives), so a non-contiguous input's cost is measured and
predicted, not hidden. An op never writes into what `reshaped` returns (DESIGN.md principle 19): its results are
allocated in the layout it chooses.
"""
from __future__ import annotations

import math
from typing import Any

from ..engine import Node, _base


def shares_buffer(a: Any, b: Any) -> bool:
    """Whether `a` and `b` are views of one buffer (the ledger's unit: it counts base buffers)."""
    return _base(a) is _base(b)


def reshaped(ctx: Node, array: Any, shape: tuple[int, ...], role: str) -> Any:
    """`array.reshape(shape)` for reading; a copy numpy has to make is reported as the workspace `role`."""
    result = array.reshape(shape)
    if not shares_buffer(result, array):
        ctx.workspace(result, role)
    return result


def rows(ctx: Node, array: Any, role: str) -> Any:
    """`array` as a matrix of rows (all leading axes folded, the last kept): `reshaped`, sizes spelled out (numpy
    cannot resolve -1 when an axis is 0)."""
    return reshaped(ctx, array, (math.prod(array.shape[:-1]), array.shape[-1]), role)

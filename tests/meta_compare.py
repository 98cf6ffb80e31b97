"""Run one call on real numpy arrays and on MetaArrays of the same shapes, dtypes and memory layouts, and describe
every observable fact of each result so the two can be compared: shape, dtype, strides, contiguity, the writeable
and owndata flags, and what memory it is: a new buffer, one of the inputs itself, a view of which input's buffer
at which byte offset, or a view of a buffer the call made and hid (its shape, strides and dtype)."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from memstudy.autograd.meta import MetaArray

# How an input is laid out: a transform of a fresh buffer, applied the same way to a real and a shape-only one.
# Each takes the wanted shape and returns (the buffer's shape, the view to take of it).
LAYOUTS: dict[str, Callable[[tuple], tuple[tuple, Callable[[Any], Any]]]] = {
    "C": lambda s: (s, lambda b: b),
    "F": lambda s: (s[::-1], lambda b: b.T),  # a transpose of a C buffer: Fortran order
    "step": lambda s: ((2 * s[0],) + s[1:], lambda b: b[::2]),  # every other row
    "neg": lambda s: (s, lambda b: b[::-1]),  # a negative stride on axis 0
    "offset": lambda s: ((s[0] + 1,) + s[1:], lambda b: b[1:]),  # a view that does not start at its buffer
    "perm": lambda s: ((s[1], s[0]) + s[2:], lambda b: b.swapaxes(0, 1)),  # axes 0 and 1 swapped
    "bcast": lambda s: ((1,) + s[1:], lambda b: np.broadcast_to(b, s)),  # read-only, stride 0 on axis 0
}


def make(spec: tuple, factory: Callable[[tuple, str], Any]) -> Any:
    shape, dtype, layout = (tuple(spec) + ("C",))[:3] if len(spec) == 2 else spec
    buffer_shape, view = LAYOUTS[layout](tuple(shape))
    return view(factory(buffer_shape, dtype))


def real(shape: tuple, dtype: str) -> np.ndarray:
    # ones: valid indices (1 < every axis used as an index here), no warnings from division, log or sqrt
    return np.ones(shape, dtype)


def _address(a: Any) -> int:
    return a.address if isinstance(a, MetaArray) else a.__array_interface__["data"][0]


def _owner(a: Any) -> Any:
    while isinstance(a.base, (np.ndarray, MetaArray)):
        a = a.base
    return a


def describe(result: Any, inputs: list) -> Any:
    """What a call returned, comparable between numpy and MetaArray (a numpy scalar as a fresh 0-d array)."""
    if isinstance(result, (tuple, list)):
        return {type(result).__name__: [describe(r, inputs) for r in result]}
    if isinstance(result, np.generic):  # before the Python types: np.float64 is a float
        return dict(shape=(), dtype=result.dtype, strides=(), c=True, f=True, writeable=True, owndata=True,
                    memory="new")
    if result is None or isinstance(result, (bool, int, float, str, np.dtype)):
        return {"value": result}
    memory = "new"
    for i, x in enumerate(inputs):
        if result is x:
            memory = f"input {i} itself"
            break
    else:
        if result.base is not None:
            owner = _owner(result)
            offset = _address(result) - _address(owner)
            holders = [i for i, x in enumerate(inputs) if isinstance(x, (np.ndarray, MetaArray)) and _owner(x) is owner]
            if holders:
                memory = f"view of input {holders[0]}'s buffer at byte {offset}"
            else:
                memory = (f"view of a hidden buffer {owner.shape} {owner.dtype} strides {owner.strides} at byte "
                          f"{offset}")
    with warnings.catch_warnings():  # numpy warns on reading broadcast_arrays' writeable flag (still True)
        warnings.simplefilter("ignore", FutureWarning)
        writeable = result.flags.writeable
    return dict(shape=result.shape, dtype=result.dtype, strides=result.strides, c=result.flags.c_contiguous,
                f=result.flags.f_contiguous, writeable=writeable, owndata=result.flags.owndata, memory=memory)


def run(call: Callable, specs: list, factory: Callable) -> tuple[Any, list]:
    inputs = [make(spec, factory) for spec in specs]
    return call(*inputs), inputs

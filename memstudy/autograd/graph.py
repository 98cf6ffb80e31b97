"""Inspect a recorded graph: which buffers it holds for backward, each counted once by its base buffer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .engine import Node, walk
from .meta import MetaArray
from .tensor import Tensor


def base_buffer(array: np.ndarray) -> np.ndarray:
    """The array that owns the memory behind `array` (itself if it owns it); MetaArrays keep numpy's chain."""
    while isinstance(array.base, (np.ndarray, MetaArray)):
        array = array.base
    return array


@dataclass(frozen=True)
class SavedBuffer:
    op: str  # the first op (in forward order) that saved the buffer
    role: str  # the name it was saved under, e.g. "x", "out", "probs"
    layer: int | None
    kind: str  # "parameter" (a leaf that requires grad), "input" (one of `inputs`), or "activation"
    shape: tuple[int, ...]  # of the base buffer
    dtype: str
    nbytes: int  # of the base buffer
    saved_by: tuple[str, ...]  # every op that saved it or a view of it


def saved_buffers(output: Any, inputs: Iterable[Any] = ()) -> list[SavedBuffer]:
    """Every distinct buffer the graph behind `output` holds for backward, in forward order.

    A buffer saved by two ops (ReLU's output is also the next Linear's input) or through a view is
    listed once. `inputs` (tensors or arrays) are labelled `input` rather than `activation`.
    """
    # a Tensor's array, or the array itself (ndarrays have a `.data` too: a memoryview, not what we want)
    inputs = [x.data if isinstance(x, Tensor) else x for x in inputs]
    input_ids = {id(base_buffer(x if isinstance(x, MetaArray) else np.asarray(x))) for x in inputs}
    nodes = list(walk(output))
    leaf_ids = {
        id(base_buffer(parent.data))
        for node in nodes
        for parent in node.parents
        if parent is not None and type(parent) is not Node
    }
    found: dict[int, dict] = {}
    for node in reversed(nodes):  # forward order
        for role, array in zip(node.saved_roles, node.saved):
            if array is None:
                continue
            base = base_buffer(array)
            key = id(base)
            if key in found:
                found[key]["saved_by"].append(node.fn.name)
                continue
            kind = "parameter" if key in leaf_ids else "input" if key in input_ids else "activation"
            found[key] = dict(
                op=node.fn.name, role=role, layer=node.layer, kind=kind, shape=base.shape,
                dtype=str(base.dtype), nbytes=base.nbytes, saved_by=[node.fn.name],
            )
    return [SavedBuffer(**{**info, "saved_by": tuple(info["saved_by"])}) for info in found.values()]


def saved_bytes(output: Any, inputs: Iterable[Any] = (), kind: str = "activation") -> int:
    """Total bytes of distinct saved buffers of one kind (default: activations held for backward)."""
    return sum(b.nbytes for b in saved_buffers(output, inputs) if b.kind == kind)

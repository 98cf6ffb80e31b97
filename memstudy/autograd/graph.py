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
    kind: str  # "parameter" (model state: a leaf tensor, trainable or frozen), "input" (one of `inputs`), "activation"
    shape: tuple[int, ...]  # of the base buffer
    dtype: str
    nbytes: int  # of the base buffer
    saved_by: tuple[str, ...]  # every op that saved it or a view of it


def saved_buffers(output: Any, inputs: Iterable[Any] = ()) -> list[SavedBuffer]:
    """Every distinct buffer the graph behind `output` holds for backward, in forward order.

    A buffer saved by two ops (ReLU's output is also the next Linear's input) or through a view is
    listed once. A buffer that is the data of a leaf tensor (one no op made) belongs to the caller, never to
    the graph: `parameter` when the tensor requires grad, `input` when it is one of `inputs` (tensors or
    arrays), else `parameter` too (a frozen weight: a parameter that needs no gradient; so pass the batch as
    `inputs`). Everything else the graph holds is an `activation`: op outputs, including those of ops that
    recorded no graph (a frozen layer's output that the next trainable layer saves), and plain arrays
    that are not among `inputs`.
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
        caller_owned = node.caller_owned  # this node's leaf inputs that need no grad (ids valid for what it saved)
        for role, array in zip(node.saved_roles, node.saved):
            if array is None:
                continue
            base = base_buffer(array)
            key = id(base)
            if key in found:
                found[key]["saved_by"].append(node.fn.name)
                continue
            if key in leaf_ids:
                kind = "parameter"
            elif key in input_ids:
                kind = "input"
            elif key in caller_owned:
                kind = "parameter"
            else:
                kind = "activation"
            found[key] = dict(
                op=node.fn.name, role=role, layer=node.layer, kind=kind, shape=base.shape,
                dtype=str(base.dtype), nbytes=base.nbytes, saved_by=[node.fn.name],
            )
    return [SavedBuffer(**{**info, "saved_by": tuple(info["saved_by"])}) for info in found.values()]


def saved_bytes(output: Any, inputs: Iterable[Any] = (), kind: str = "activation") -> int:
    """Total bytes of distinct saved buffers of one kind (default: activations held for backward)."""
    return sum(b.nbytes for b in saved_buffers(output, inputs) if b.kind == kind)

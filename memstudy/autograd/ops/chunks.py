"""Blocks for element-wise ops whose arithmetic needs scratch space (GELU, layer norm, RMSNorm, SiLU, rotary, dropout's draw), on any layout.

numpy cannot fuse a chain of ufuncs, so an op like GELU written on whole arrays would allocate hidden
temporaries the size of its input, invisible to the ledger. Such ops instead compute block by block: each
block's scratch holds at most `CHUNK_ELEMENTS` elements (64 KiB of float32), and only the op's
result and what it saves are full-size buffers.

A block is an index of basic slicing (integers and one slice), not a range of a flattened array: the same index
picks the same elements from every array of the shape, a view whatever its strides (an input transposed,
reversed, strided or broadcast; the result the op allocates in C order). Flattening instead (`x.reshape(-1)`)
copies a non-contiguous x, and a result written into such a copy is lost (DESIGN.md principle 19).

Shape-only arrays (the predictor's) are not real buffers and have no scratch: they get one block.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

CHUNK_ELEMENTS = 1 << 14
WHOLE = (Ellipsis,)  # the one block of a small or shape-only array


def blocks(array: Any, keep_last: bool = False) -> list[tuple]:
    """Indices splitting an array of `array`'s shape into boxes of ≤ CHUNK_ELEMENTS elements (`box_blocks`);
    [WHOLE] for a shape-only array or one of at most CHUNK_ELEMENTS elements."""
    if not isinstance(array, np.ndarray) or math.prod(array.shape) <= CHUNK_ELEMENTS:
        return [WHOLE]
    return box_blocks(array.shape, CHUNK_ELEMENTS, keep_last)


def box_blocks(shape: tuple[int, ...], limit: int, keep_last: bool = False, first: int | None = None) -> list[tuple]:
    """Indices splitting `shape` into boxes of ≤ `limit` elements, in C order of its axes: the outer axes one index
    at a time, one axis in slices, the inner axes whole. With `keep_last` the last axis is never split (a row whose
    statistics need all of it: a box then holds at least one row). `first`: only the first so many boxes (the
    largest ones: a shape-only loop's representative, made without listing the rest)."""
    ndim = len(shape)
    last = ndim - 2 if keep_last else ndim - 1  # the innermost axis that may be sliced
    if math.prod(shape) <= limit or last < 0:  # one box (or one row)
        return [WHOLE]
    split, inner = last, math.prod(shape[last + 1:])
    while split > 0 and inner * shape[split] <= limit:  # the outermost axis whose inner boxes fit
        inner *= shape[split]
        split -= 1
    step = max(1, limit // inner)
    outer = itertools.product(*(range(n) for n in shape[:split]))
    boxes = (index + (slice(start, start + step),) for index in outer for start in range(0, shape[split], step))
    return list(itertools.islice(boxes, first))


def scratch(array: Any, index: tuple, dtype: Any = None) -> Any:
    """A new array shaped as block `index` of `array` (the largest block: the first), for reuse by every block."""
    return np.empty(array[index].shape, dtype=array.dtype if dtype is None else dtype, like=array)


def part(buffer: Any, block: Any) -> Any:
    """The leading piece of a scratch `buffer` that matches `block` (the last block along the sliced axis may be
    shorter)."""
    return buffer if buffer.shape == block.shape else buffer[: block.shape[0]]


def sum_of_squares(array: Any) -> Any:
    """Σ array² in array's dtype (a 16-bit array's in float32), block by block (np.vdot of a non-contiguous block
    copies it: ≤ CHUNK_ELEMENTS hidden elements, never a copy of the whole array). A 0-d array for a shape-only one."""
    total = None
    low = array.dtype.itemsize == 2 and array.dtype.kind in "fV"  # 16-bit: each block in float32 (exact squares)
    for index in blocks(array):
        piece = array[index]
        if low:
            piece = piece.astype(np.float32)
        term = np.vdot(piece, piece)
        total = term if total is None else total + term
    return total


def row_blocks(array: Any, row_elements: int) -> list[slice]:
    """Slices over the first axis of `array` (a 2-d view: rows of `row_elements`), each ≤ CHUNK_ELEMENTS
    elements (at least one row); one slice covering everything for a shape-only array or a small one.

    For a 2-d view of a C-contiguous array only: the rows of a reshaped non-contiguous array are a copy (use
    `blocks`, which indexes the array itself)."""
    rows = array.shape[0]
    if not isinstance(array, np.ndarray) or rows * row_elements <= CHUNK_ELEMENTS:
        return [slice(None)]
    step = max(1, CHUNK_ELEMENTS // max(row_elements, 1))
    return [slice(start, start + step) for start in range(0, rows, step)]

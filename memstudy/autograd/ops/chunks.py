"""Row blocks for element-wise ops whose arithmetic needs scratch space (GELU, layer norm, dropout's draw; RMSNorm,
SiLU and the rotary embedding take `index_blocks`, views of any layout).

numpy cannot fuse a chain of ufuncs, so an op like GELU written on whole arrays would allocate hidden
temporaries the size of its input, invisible to the ledger. Such ops instead compute block by block: each
block's scratch holds at most `CHUNK_ELEMENTS` elements (64 KiB of float32), and only the op's
result and what it saves are full-size buffers.

Shape-only arrays (the predictor's) are not real buffers and have no scratch: they get one block.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CHUNK_ELEMENTS = 1 << 14


def row_blocks(array: Any, row_elements: int) -> list[slice]:
    """Slices over the first axis of `array` (a 2-d view: rows of `row_elements`), each ≤ CHUNK_ELEMENTS
    elements (at least one row); one slice covering everything for a shape-only array or a small one."""
    rows = array.shape[0]
    if not isinstance(array, np.ndarray) or rows * row_elements <= CHUNK_ELEMENTS:
        return [slice(None)]
    step = max(1, CHUNK_ELEMENTS // max(row_elements, 1))
    return [slice(start, start + step) for start in range(0, rows, step)]



def index_blocks(shape: tuple[int, ...], real: bool) -> list[tuple]:
    """Basic indices that cover an array of `shape` in blocks of whole last-axis rows, each ≤ CHUNK_ELEMENTS
    elements (at least one row), taken along the leading axes as they are: a block of any layout (transposed,
    strided, broadcast) is a view, never a copy, unlike the rows of a `reshape(-1, width)`. One block, `(...,)`,
    for a shape-only array (`real` False) or a small one."""
    total = 1
    for n in shape:
        total *= n
    if not real or total <= CHUNK_ELEMENTS or len(shape) < 2:
        return [(Ellipsis,)]
    lead = shape[:-1]
    below = [1] * len(lead)  # below[k]: elements of one index of axis k (the axes after it, the row included)
    size = shape[-1]
    for k in range(len(lead) - 1, -1, -1):
        below[k] = size
        size *= lead[k]
    k = 0  # the axis to block along: the first whose one index fits a chunk (else the last leading axis)
    while k < len(lead) - 1 and below[k] > CHUNK_ELEMENTS:
        k += 1
    step = max(1, CHUNK_ELEMENTS // max(below[k], 1))
    outer = [()]
    for n in lead[:k]:
        outer = [index + (i,) for index in outer for i in range(n)]
    return [index + (slice(start, start + step),) for index in outer for start in range(0, lead[k], step)]

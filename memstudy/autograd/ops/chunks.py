"""Row blocks for element-wise ops whose arithmetic needs scratch space (GELU, layer norm, dropout's draw).

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


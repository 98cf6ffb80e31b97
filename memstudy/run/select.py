"""Which value a figure, a table or the timeline shows when a grid sweeps many: one rule, one place."""
from __future__ import annotations

from typing import Any, Iterable

SHOWN_BATCH = 256  # the batch size the reports and the timeline prefer: a typical training batch


def nearest_batch(values: Iterable[Any], target: int = SHOWN_BATCH) -> Any:
    """The value nearest `target` (ties: the smaller); values are batch sizes (ints, or strings of ints)."""
    return min(values, key=lambda v: (abs(int(v) - target), int(v)))

"""Each buffer of a timeline.csv as a band: where it sits in the stacked live-bytes chart at every event.

The chart stacks live bytes by category (in `CATEGORIES` order, as the PNG does); inside a category the live
buffers are stacked in birth order, and when one dies the ones above it move down (PyTorch's memory_viz draws
its active-memory timeline the same way). The band of a buffer is then a polygon over the events it lives
through, and the bands of one category fill exactly that category's stacked area: the category totals are the
ledger's, not redrawn. Reads the rows as csv.DictReader gives them (strings); no pandas.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..run.results.fields import CATEGORIES

BUFFER_COLUMNS = ("key", "buffer_op", "role", "shape", "dtype", "nbytes", "born", "died")


class TimelineError(ValueError):
    """A timeline.csv that cannot be drawn; one-line message."""


@dataclass
class Band:
    key: int
    op: str  # the op that made the buffer
    role: str
    layer: str  # "" when the buffer belongs to no layer (the loss, the batch)
    phase: str  # the phase of its birth
    category: str
    shape: str
    dtype: str
    nbytes: int
    born: int
    died: int | None  # None: alive when the step ended
    # the polygon: runs of events over which the band's bottom stays put, as (first event, end event, bottom)
    runs: list[tuple[int, int, int]] = field(default_factory=list)


LATER_CATEGORIES = ("kv_cache", "communication")  # categories a timeline.csv written before them lacks (it held none of them)


def read_timeline(path: str | Path) -> list[dict[str, str]]:
    """The rows of a timeline.csv (TimelineError when unreadable or without per-category columns; a category added
    since the file was written may be absent, `file_categories`)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TimelineError(f"{path}: unreadable ({exc})") from None
    if not rows or not all(f"{c}_bytes" in rows[0] for c in CATEGORIES if c not in LATER_CATEGORIES):
        raise TimelineError(f"{path}: no per-category columns")
    return rows


def file_categories(rows: list[dict[str, Any]]) -> list[str]:
    """The categories whose column the timeline's rows have, in CATEGORIES order."""
    return [c for c in CATEGORIES if rows and f"{c}_bytes" in rows[0]]


def has_buffers(rows: list[dict[str, str]]) -> bool:
    """Whether the rows carry each event's buffer (timeline.csv files written before they did do not)."""
    return bool(rows) and all(column in rows[0] for column in BUFFER_COLUMNS)


def _int(text: str) -> int | None:
    return None if text in ("", None) else int(float(text))


def bands(rows: list[dict[str, str]]) -> list[Band]:
    """Every buffer's band, in birth order; TimelineError if a row's buffer disagrees with the events."""
    if not has_buffers(rows):
        raise TimelineError("the timeline has no buffer columns (written before the ledger recorded them)")
    by_key: dict[int, Band] = {}
    for row in rows:
        key = int(row["key"])
        if key not in by_key:
            by_key[key] = Band(key=key, op=row["buffer_op"], role=row["role"], layer=row["layer"], phase=row["phase"],
                               category=row["category"], shape=row["shape"], dtype=row["dtype"],
                               nbytes=int(row["nbytes"]), born=int(row["born"]), died=_int(row["died"]))
    end = len(rows)
    live: dict[str, list[Band]] = {c: [] for c in CATEGORIES}  # per category, in birth order
    for index, row in enumerate(rows):
        band = by_key[int(row["key"])]
        delta = int(row["delta_bytes"])
        if delta >= 0:
            if band.born != index:
                raise TimelineError(f"event {index}: buffer {band.key} is born at event {band.born}")
            live[band.category].append(band)
        else:
            if band.died != index:
                raise TimelineError(f"event {index}: buffer {band.key} dies at event {band.died}")
            live[band.category].remove(band)
        bottom = 0
        for category in CATEGORIES:
            for member in live[category]:
                last = member.runs[-1] if member.runs else None
                if last is not None and last[1] == index and last[2] == bottom:
                    member.runs[-1] = (last[0], index + 1, bottom)  # same bottom: extend the run
                else:
                    member.runs.append((index, index + 1, bottom))
                bottom += member.nbytes
    for band in by_key.values():
        if band.died is None and band.runs and band.runs[-1][1] != end:
            raise TimelineError(f"buffer {band.key} has no death event but is not alive at the end")
    return sorted(by_key.values(), key=lambda b: b.key)


def polygon(band: Band) -> tuple[list[float], list[float]]:
    """The band's outline as x (events) and y (bytes) lists: the bottom edge left to right, the top back."""
    xs: list[float] = []
    ys: list[float] = []
    for start, stop, bottom in band.runs:
        xs += [start, stop]
        ys += [bottom, bottom]
    for start, stop, bottom in reversed(band.runs):
        xs += [stop, start]
        ys += [bottom + band.nbytes, bottom + band.nbytes]
    return xs + xs[:1], ys + ys[:1]


def live_by_category(all_bands: Iterable[Band], event: int) -> dict[str, int]:
    """Bytes the bands cover at `event` per category: what the chart shows there."""
    totals = dict.fromkeys(CATEGORIES, 0)
    for band in all_bands:
        if any(start <= event < stop for start, stop, _ in band.runs):
            totals[band.category] += band.nbytes
    return totals


def phase_spans(rows: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """Consecutive events of one phase as (phase, first event, end event)."""
    spans: list[tuple[str, int, int]] = []
    for index, row in enumerate(rows):
        phase = str(row.get("phase", ""))
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], index + 1)
        else:
            spans.append((phase, index, index + 1))
    return spans

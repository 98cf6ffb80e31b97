"""What every report section uses: Markdown tables kept as data, number formats, slices and fits of the rows.

`report.py` (the generic sections and `write_report`) and the study sections (remedies, the families' own)
import from here, never from each other.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..units import format_bytes
from .fields import GRID_FIELDS
from .select import nearest_batch


class Table(str):
    """A table's Markdown text that keeps its header and rows as data: report.html shows the same table."""

    header: list[str]
    rows: list[list[str]]


def _md_table(header: list[str], rows: Iterable[list[Any]]) -> Table:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    rows = [list(row) for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    table = Table("\n".join(lines))
    table.header, table.rows = [str(h) for h in header], [[str(v) for v in row] for row in rows]
    return table


def _bytes(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format_bytes(value)


def _coef(value: float) -> str:
    """A fitted coefficient in bytes: exact-looking below 1 KiB, human units above."""
    if value is None or not math.isfinite(value):
        return "—"
    value = round(value, 2) + 0.0  # no "-0.00 B", no "1024.00 KiB" for a slope of 1 MiB - 1e-6
    return f"{value:,.2f} B" if abs(value) < 1024 else format_bytes(value)


def _pct(value: float, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


def _ratio(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _itemsize(dtype: Any) -> int:
    return np.dtype(str(dtype)).itemsize


def _values(frame: pd.DataFrame, column: str) -> list:
    return sorted(frame[column].dropna().unique().tolist()) if column in frame.columns else []


def _describe_fixed(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_size', '')} {v}" for k, v in fixed.items())


def _figure(figures: dict[str, Path], key: str, alt: str) -> list[str]:
    return [f"![{alt}]({figures[key].name})", ""] if key in figures else []



def varying_fields(frame: pd.DataFrame) -> list[str]:
    return [f for f in GRID_FIELDS if frame[f].nunique(dropna=True) > 1]


def representative(frame: pd.DataFrame, column: str) -> Any:
    """The value of `column` with the most rows (ties: nearest to 256 for sizes, else the first)."""
    counts = frame[column].value_counts()
    best = counts[counts == counts.max()].index.tolist()
    if column in ("width", "in_features", "batch_size"):
        return nearest_batch(best)
    if column == "depth":
        ordered = sorted(best)
        return ordered[len(ordered) // 2]
    return sorted(best, key=str)[0]


def fix_others(frame: pd.DataFrame, keep: Iterable[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows where every varying field outside `keep` (and `mode`) is at its representative value."""
    fixed: dict[str, Any] = {}
    for column in varying_fields(frame):
        if column in keep or column == "mode":
            continue
        value = representative(frame, column)
        fixed[column] = value
        frame = frame[frame[column] == value]
    return frame, fixed


def least_squares(y: np.ndarray, terms: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fit y ≈ Σ coef·term; a term that adds no rank (constant, collinear) is dropped and named."""
    kept: list[str] = []
    dropped: list[str] = []
    columns: list[np.ndarray] = []
    for name, values in terms.items():
        trial = np.column_stack(columns + [values.astype(float)])
        if np.linalg.matrix_rank(trial) > len(columns):
            columns.append(values.astype(float))
            kept.append(name)
        else:
            dropped.append(name)
    if not columns or len(y) < len(columns):
        return {"coef": {}, "r2": float("nan"), "n": int(len(y)), "dropped": dropped + kept}
    design = np.column_stack(columns)
    coef, *_ = np.linalg.lstsq(design, y.astype(float), rcond=None)
    fitted = design @ coef
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:  # y is constant: a perfect fit or nothing to say
        r2 = 1.0 if ss_res <= 1e-9 * max(1.0, float(np.abs(y).max())) else float("nan")
    return {"coef": dict(zip(kept, map(float, coef))), "r2": r2, "n": int(len(y)), "dropped": dropped}

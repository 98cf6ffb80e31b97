"""Slices and fits of the per-cell rows: which fields vary, which value a slice holds a field at, least squares.

Every section (the generic ones and the findings) reads its numbers through these, so a slice or a fit is made
one way everywhere.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..nn.models.registry import ConfigError, get_family
from ..run.results.fields import GRID_FIELDS
from ..run.select import nearest_batch


def varying_fields(frame: pd.DataFrame) -> list[str]:
    """The config fields that take more than one value in `frame`, in the row's column order."""
    return [f for f in GRID_FIELDS if f in frame.columns and frame[f].nunique(dropna=True) > 1]


def values(frame: pd.DataFrame, column: str) -> list:
    return sorted(frame[column].dropna().unique().tolist()) if column in frame.columns else []


def field_declarations(frame: pd.DataFrame, column: str) -> list[Any]:
    """How the families of `frame`'s rows declare `column` (a family that cannot be loaded declares nothing)."""
    found = []
    models = frame["model"].dropna().unique().tolist() if "model" in frame.columns else ["mlp"]
    for model in models:
        try:
            fields = {f.name: f for f in get_family(model).all_fields()}
        except ConfigError:
            continue
        if column in fields:
            found.append(fields[column])
    return found


def representative(frame: pd.DataFrame, column: str) -> Any:
    """The value a slice holds `column` at: among the values with the most rows, the middle depth; for another
    size (an integer field), the one nearest 256 (`select.nearest_batch`); for any other field (a strategy, a
    dtype, a seed) the families' default when it was run, which is the unmodified configuration, else the first."""
    counts = frame[column].value_counts()
    best = counts[counts == counts.max()].index.tolist()
    if column == "depth":
        ordered = sorted(best)
        return ordered[len(ordered) // 2]
    declared = field_declarations(frame, column)
    if column != "seed" and declared and all(f.type is int for f in declared):
        return nearest_batch(best)
    defaults = {f.default for f in declared}
    if len(defaults) == 1 and next(iter(defaults)) in best:
        return next(iter(defaults))
    return sorted(best, key=str)[0]


def fix_others(frame: pd.DataFrame, keep: Iterable[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows where every varying field outside `keep` (and `mode`) is at its representative value, or empty: a field
    that does not apply to a row's mode (generation's outside mode generate) leaves that row in."""
    fixed: dict[str, Any] = {}
    keep = tuple(keep)
    for column in varying_fields(frame):
        if column in keep or column == "mode":
            continue
        value = representative(frame, column)
        fixed[column] = value
        frame = frame[(frame[column] == value) | frame[column].isna()]
    return frame, fixed


def describe_fixed(fixed: dict[str, Any]) -> str:
    """`depth 8, batch 256`: the fields a slice holds, as captions name them."""
    return ", ".join(f"{k.replace('_size', '')} {_plain(v)}" for k, v in fixed.items())


def _plain(value: Any) -> Any:
    """An integral float as an int (a column with empty cells, another mode's, is read as floats)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def itemsize(dtype: Any) -> int:
    from ..autograd.precision import dtype as as_dtype  # bfloat16 through ml_dtypes

    return as_dtype(str(dtype)).itemsize


def least_squares(y: np.ndarray, terms: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fit y ≈ Σ coef·term; a term that adds no rank (constant, collinear) is dropped and named."""
    kept: list[str] = []
    dropped: list[str] = []
    columns: list[np.ndarray] = []
    for name, column in terms.items():
        trial = np.column_stack(columns + [column.astype(float)])
        if np.linalg.matrix_rank(trial) > len(columns):
            columns.append(column.astype(float))
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


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """The least-squares line's slope of y over x (NaN with fewer than two distinct x)."""
    if len(np.unique(x)) < 2:
        return float("nan")
    return float(np.polyfit(x.astype(float), y.astype(float), 1)[0])


def relative_errors(rows: pd.DataFrame, quantity: str, reference: str) -> np.ndarray:
    """(quantity − reference) ÷ reference per row; a row where both are 0 agrees (0), one with reference 0 and a
    non-zero quantity, or either missing, is left out."""
    part = rows[[quantity, reference]].dropna()
    both_zero = int(((part[quantity] == 0) & (part[reference] == 0)).sum())
    part = part[part[reference] > 0]
    rel = ((part[quantity] - part[reference]) / part[reference]).to_numpy(dtype=float)
    return np.concatenate([rel, np.zeros(both_zero)])


def size_fields(frame: pd.DataFrame) -> list[str]:
    """The varying config fields that are sizes (declared as integers by the rows' families, every value positive:
    a size law is fitted on logarithms), seed aside; an integer field that takes 0 (LoRA's rank 0 = off) is a switch."""
    out = []
    for column in varying_fields(frame):
        declared = field_declarations(frame, column)
        if column != "seed" and declared and all(f.type is int for f in declared) \
                and (pd.to_numeric(frame[column], errors="coerce").dropna() > 0).all():
            out.append(column)
    return out

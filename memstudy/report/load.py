"""What a report reads: runs.csv (one row per measured step), summarised per cell, and layers.csv.

`load_runs` keeps every usable row (runs.read_runs leaves out a torn last line, a malformed line, a row without
a status and a repeated (cell, repeat), each said in `frame.attrs["problems"]`) and fills every row column an
older file lacks. `summarize` gives summary.csv: one row per cell, medians over its ok repeats. Column types
come from the registry's declarations of the config fields, never from a list of names here.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..measure.agreement import COMPARED, prediction_matches
from ..nn.models.registry import LATE_SHARED_FIELDS, SHARED_NAMES, builtin_names, get_family
from ..run.results.fields import (BASELINE_FIELDS, GENERATION_FIELDS, GRID_FIELDS, LEDGER_FIELDS, LEGACY_CONFIG_FIELDS, MODEL_FIELDS,
                                  PRECISION_ROW_FIELDS, PREDICTED_FIELDS, PROBE_FIELDS, ROW_FIELDS, STATE_ROW_FIELDS)
from ..run.results.runs import RunsFileError, read_runs

_MEASURED = BASELINE_FIELDS + LEDGER_FIELDS + PREDICTED_FIELDS + PROBE_FIELDS
# numeric per-repeat measurements (medians in summary.csv) and the textual ones (most common value)
COUNTS = ("saved_tensors", "recomputed_ops")  # integer measurements that are not bytes
MEASURES: tuple[str, ...] = tuple(f for f in _MEASURED if f.endswith("_bytes") or f in COUNTS) + (
    "grad_rel_error", "step_seconds", *PRECISION_ROW_FIELDS, *STATE_ROW_FIELDS)
# medians too, their summary columns after the others' (conv_algo_ran, text, is read from runs.csv's rows)
LATER_MEASURES: tuple[str, ...] = GENERATION_FIELDS + ("conv_workspace_bytes",)

TEXT_MEASURES: tuple[str, ...] = tuple(f for f in _MEASURED if f not in MEASURES)  # e.g. rss_method
# every runs.csv has these filled (the shared fields a cell is made of)
REQUIRED_CONFIG = tuple(f for f in ("depth", "width", "batch_size", "dtype", "mode") if f in SHARED_NAMES)
# summary.csv: the first studies' config columns in place, every newer model column after the measurements
SUMMARY_CONFIG = tuple(f for f in LEGACY_CONFIG_FIELDS if f != "repeat")
LAYERS_FILE = "layers.csv"  # written by the sweep: bytes each op saved, per cell, repeat and layer


class ReportError(RuntimeError):
    """The directory holds no readable runs.csv; one-line message."""


def declared_fields() -> dict[str, Any]:
    """Every config field a built-in family declares, by name (the first declaration of a shared name)."""
    found: dict[str, Any] = {}
    for name in builtin_names():
        for f in get_family(name).all_fields():
            found.setdefault(f.name, f)
    return found


def _legacy_columns(kind: type) -> tuple[str, ...]:
    """The first studies' config columns whose declared type is `kind` (their dtype in summary.csv is fixed)."""
    fields = declared_fields()
    return tuple(f for f in LEGACY_CONFIG_FIELDS if f in fields and fields[f].type is kind)


INTEGER_CONFIG = _legacy_columns(int) + ("repeat",)
BOOL_CONFIG = _legacy_columns(bool)


_COMPARED_FIELDS = tuple(f for _, measured, predicted in COMPARED for f in (measured, predicted))


def load_runs(results_dir: Path) -> pd.DataFrame:
    """runs.csv's usable rows, every row column present (see the module's docstring)."""
    path = results_dir / "runs.csv"
    if not path.is_file():
        raise ReportError(f"{results_dir}: no runs.csv here (run `memstudy sweep SPEC.toml --out {results_dir}` first)")
    try:
        runs_file = read_runs(path)
        frame = pd.read_csv(io.StringIO(runs_file.text()))
    except RunsFileError as exc:
        raise ReportError(str(exc)) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ReportError(f"{path}: unreadable ({exc})") from None
    missing = [c for c in ("cell", "status", *REQUIRED_CONFIG, "repeat") if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: not a memstudy runs.csv (missing column {missing[0]!r})")
    absent = [column for column in ROW_FIELDS if column not in frame.columns]
    if absent:  # added in one piece: a column at a time fragments the frame (pandas' PerformanceWarning)
        frame = pd.concat([frame, pd.DataFrame(np.nan, index=frame.index, columns=absent)], axis=1)
    if "experiment" not in frame.columns:
        frame["experiment"] = results_dir.name
    # files from before the model registry have no `model` column: they are MLP studies
    frame["model"] = [("mlp" if pd.isna(v) or v == "" else str(v)) for v in frame["model"]]
    fields = declared_fields()  # rows from before the precision fields: their defaults (float32 alone, no autocast)
    for name in LATE_SHARED_FIELDS:
        frame[name] = [fields[name].default if pd.isna(v) or v == "" else v for v in frame[name]]
        if fields[name].type is bool and frame[name].dtype != bool:
            frame[name] = frame[name].astype(str).str.lower().map({"true": True, "false": False})
    for column in MEASURES + LATER_MEASURES:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in INTEGER_CONFIG:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in BOOL_CONFIG:
        if frame[column].dtype != bool:
            frame[column] = frame[column].astype(str).str.lower().map({"true": True, "false": False})
    for column in ("status", "error", "host", "worker", "prediction_unavailable", *TEXT_MEASURES):  # empty: NaN
        frame[column] = [("" if pd.isna(v) else str(v)) for v in frame[column]]
    # as the cell said it; a row from before the column, from its figures (the same check: measure/agreement.py)
    frame["prediction_matches"] = [
        {"true": True, "false": False}.get(str(said).strip().lower()) if pd.notna(said) and str(said).strip() else
        prediction_matches(figures)
        for said, figures in zip(frame["prediction_matches"], frame[list(_COMPARED_FIELDS)].to_dict("records"))]
    frame["foreign_cores"] = pd.to_numeric(frame["foreign_cores"], errors="coerce")
    frame.attrs["problems"] = [f"runs.csv: {p}" for p in runs_file.problems]
    return frame


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: config, status, repeats, medians over ok repeats, and the train/inference peak ratio."""
    groups = runs.groupby("cell", sort=False)
    config = groups[["experiment", *GRID_FIELDS]].first()
    status = groups["status"].agg(lambda s: s.iloc[0] if s.nunique() == 1 else "mixed").rename("status")
    counts = groups["status"].agg(repeats="size", ok_repeats=lambda s: int((s == "ok").sum()))
    medians = runs[runs["status"] == "ok"].groupby("cell", sort=False)[list(MEASURES + LATER_MEASURES)].median()
    ok = runs[runs["status"] == "ok"]
    texts = ok.groupby("cell", sort=False)[list(TEXT_MEASURES)].agg(
        lambda s: s.mode().iloc[0] if len(s.mode()) else "") if TEXT_MEASURES else None
    summary = config.join(status).join(counts).join(medians)
    if texts is not None:
        summary = summary.join(texts)
    predicted = groups[list(PREDICTED_FIELDS)].median()  # skipped cells carry their prediction too
    for column in PREDICTED_FIELDS:
        summary[column] = summary[column].fillna(predicted[column])
    for column in MEASURES + LATER_MEASURES:
        if column.endswith("_bytes") or column in COUNTS:  # whole bytes: commit-friendly, exact enough
            summary[column] = summary[column].round().astype("Int64")
    summary = summary.reset_index()

    others = [f for f in GRID_FIELDS if f != "mode"]
    train = summary[summary["mode"] == "train"][others + ["peak_bytes"]].rename(columns={"peak_bytes": "_train"})
    infer = summary[summary["mode"] == "inference"][others + ["peak_bytes"]].rename(columns={"peak_bytes": "_inf"})
    pairs = train.merge(infer, on=others, how="inner")
    pairs["train_inference_peak_ratio"] = (pairs["_train"].astype(float) / pairs["_inf"].astype(float)).round(4)
    summary = summary.merge(pairs[others + ["train_inference_peak_ratio"]], on=others, how="left")
    summary = summary.sort_values(list(GRID_FIELDS), kind="stable").reset_index(drop=True)
    for column in TEXT_MEASURES:
        summary[column] = summary[column].fillna("")
    load = ok.groupby("cell", sort=False)["foreign_cores"].median().rename("foreign_cores")
    summary = summary.merge(load, left_on="cell", right_index=True, how="left")
    return summary[["experiment", "cell", *SUMMARY_CONFIG, "status", "repeats", "ok_repeats", *MEASURES,
                    *TEXT_MEASURES, "train_inference_peak_ratio", *MODEL_FIELDS, "foreign_cores", *LATER_MEASURES]]


def load_layers(out: Path) -> pd.DataFrame | None:
    """layers.csv as a frame (numeric bytes, the last entry of a repeated key kept), or None when absent."""
    path = out / LAYERS_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"layer": str, "op": str, "cell": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    if frame.empty or not {"cell", "repeat", "layer", "op", "activation_bytes", "input_bytes"} <= set(frame.columns):
        return None
    frame = frame.drop_duplicates(["cell", "repeat", "layer", "op"], keep="last")
    for column in ("activation_bytes", "input_bytes"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(0)
    return frame


def timeline_cell(env: dict[str, Any] | None) -> str | None:
    """The cell whose training step timeline.csv holds (env.json says), or None."""
    if not env:
        return None
    candidates = [env.get("sweep", {}).get("timeline_cell")] + [s.get("timeline_cell") for s in env.get("sessions", [])]
    return next((c for c in candidates if c), None)

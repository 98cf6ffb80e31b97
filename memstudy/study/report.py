"""`memstudy report DIR`: summary.csv, report.md, report.html and PNG figures from a sweep's runs.csv (and env.json,
timeline.csv).

The report adapts to what the grid varies: the depth × batch law needs two depths; a grid that varies
width fits activation bytes against depth·batch·width; fields that vary but are not in a law (dtype,
activation, optimiser, ...) split the fits into groups. Figures fix every other varying field at one
value (named in their captions).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..memory.agreement import COMPARED, prediction_matches
from ..units import format_bytes
from .fields import (BASELINE_FIELDS, CATEGORIES, GRID_FIELDS, LEDGER_FIELDS, LEGACY_CONFIG_FIELDS, MODEL_FIELDS,
                     PREDICTED_FIELDS, PROBE_FIELDS, ROW_FIELDS)
from .folder import FolderLock, replace_atomically, results_folder, write_text_atomically
from .provenance import read_env
from .reportkit import (Table, _bytes, _coef, _describe_fixed, _figure, _itemsize, _md_table, _pct, _ratio,  # noqa: F401
                        _values, fix_others, least_squares, representative, varying_fields)
from .runs import RunsFileError, read_runs
from .select import nearest_batch


_MEASURED = BASELINE_FIELDS + LEDGER_FIELDS + PREDICTED_FIELDS + PROBE_FIELDS
# numeric per-repeat measurements (medians in summary.csv) and the textual ones (most common value)
COUNTS = ("saved_tensors", "recomputed_ops")  # integer measurements that are not bytes
MEASURES: tuple[str, ...] = tuple(f for f in _MEASURED if f.endswith("_bytes") or f in COUNTS) + (
    "grad_rel_error", "step_seconds",)
TEXT_MEASURES: tuple[str, ...] = tuple(f for f in _MEASURED if f not in MEASURES)  # e.g. rss_method
INTEGER_CONFIG = ("depth", "width", "in_features", "out_features", "batch_size", "seed", "repeat")
REQUIRED_CONFIG = ("depth", "width", "batch_size", "dtype", "mode")  # every family has these columns filled
# summary.csv: the first studies' config columns in place, every newer model column after the measurements
_SUMMARY_CONFIG = tuple(f for f in LEGACY_CONFIG_FIELDS if f != "repeat")
# (quantity, reference, label): each probe and prediction against the ledger
AGREEMENT = (
    ("tracemalloc_step_peak_bytes", "step_peak_bytes", "tracemalloc step peak vs ledger step peak"),
    ("rss_step_peak_bytes", "step_peak_bytes", "RSS step peak vs ledger step peak"),
    ("mprof_step_peak_bytes", "step_peak_bytes", "memory_profiler step peak vs ledger step peak"),
    ("predicted_step_peak_bytes", "step_peak_bytes", "predicted step peak vs ledger step peak"),
    ("predicted_activation_bytes", "activation_bytes", "predicted activation bytes vs ledger activation bytes"),
    ("predicted_peak_bytes", "peak_bytes", "predicted total peak vs ledger total peak"),
)
SCATTER_PROBES = (
    ("ledger", "step_peak_bytes"), ("tracemalloc", "tracemalloc_step_peak_bytes"),
    ("RSS", "rss_step_peak_bytes"), ("memory_profiler", "mprof_step_peak_bytes"),
)
SAMPLING_NOTE = (
    "The ledger counts every buffer the engine allocates, exactly, and tracemalloc sees every numpy buffer "
    "(including the small scratch arrays inside ops that the ledger does not track), so those two should agree "
    "closely. The sampled probes can disagree for reasons of their own: memory_profiler polls the process's "
    "memory at intervals and misses spikes shorter than its sampling period; RSS is the operating system's view, "
    "page-granular, and the allocator may keep freed memory (RSS stays high) or reuse it (a new buffer adds "
    "nothing), so RSS can read above or below the live bytes. They are reported, never tuned."
)
SMALL_STEP_NOTE = (
    "Steps under 1 MiB are reported separately because every probe but the ledger has a floor of its own there: "
    "tracemalloc also counts the graph's Python objects and the ops' internal scratch arrays (a few kB to tens of "
    "kB); buffers under glibc's mmap threshold (64 KiB in the cells) come from the heap, where a freed chunk is "
    "reused without touching RSS; and Linux sums RSS from per-CPU counters that it folds in batches, so VmHWM "
    "can read a few hundred KiB low whatever the step's size."
)
FIGURES = ("peak_vs_depth.png", "peak_vs_batch.png", "peak_vs_width.png", "activation_law.png", "breakdown.png",
           "timeline.png", "predicted_vs_measured.png")


class _NoPlots:
    """Stands in for the plots module when figures are off: every figure is 'not drawn'."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class ReportError(RuntimeError):
    """The directory holds no readable runs.csv; one-line message."""


# --- loading ----------------------------------------------------------------------------------------

_COMPARED_FIELDS = tuple(f for _, measured, predicted in COMPARED for f in (measured, predicted))


def load_runs(results_dir: Path) -> pd.DataFrame:
    """runs.csv's usable rows (runs.read_runs: a torn last line, a malformed line, a row without a status and
    a repeated (cell, repeat) are left out, each said in `frame.attrs["problems"]`), every row column present."""
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
    for column in ROW_FIELDS:
        if column not in frame.columns:
            frame[column] = np.nan
    if "experiment" not in frame.columns:
        frame["experiment"] = results_dir.name
    # files from before the model registry have no `model` column: they are MLP studies
    frame["model"] = [("mlp" if pd.isna(v) or v == "" else str(v)) for v in frame["model"]]
    for column in MEASURES:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in INTEGER_CONFIG:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    if frame["bias"].dtype != bool:
        frame["bias"] = frame["bias"].astype(str).str.lower().map({"true": True, "false": False})
    for column in ("status", "error", "host", "worker", "prediction_unavailable", *TEXT_MEASURES):  # empty: NaN
        frame[column] = [("" if pd.isna(v) else str(v)) for v in frame[column]]
    # from the figures themselves, so that a file from before the column says it too (memory/agreement.py)
    frame["prediction_matches"] = [prediction_matches(r) for r in frame[list(_COMPARED_FIELDS)].to_dict("records")]
    frame["foreign_cores"] = pd.to_numeric(frame["foreign_cores"], errors="coerce")
    frame.attrs["problems"] = [f"runs.csv: {p}" for p in runs_file.problems]
    return frame


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: config, status, repeats, medians over ok repeats, and the train/inference peak ratio."""
    groups = runs.groupby("cell", sort=False)
    config = groups[["experiment", *GRID_FIELDS]].first()
    status = groups["status"].agg(lambda s: s.iloc[0] if s.nunique() == 1 else "mixed").rename("status")
    counts = groups["status"].agg(repeats="size", ok_repeats=lambda s: int((s == "ok").sum()))
    medians = runs[runs["status"] == "ok"].groupby("cell", sort=False)[list(MEASURES)].median()
    ok = runs[runs["status"] == "ok"]
    texts = ok.groupby("cell", sort=False)[list(TEXT_MEASURES)].agg(
        lambda s: s.mode().iloc[0] if len(s.mode()) else "") if TEXT_MEASURES else None
    summary = config.join(status).join(counts).join(medians)
    if texts is not None:
        summary = summary.join(texts)
    predicted = groups[list(PREDICTED_FIELDS)].median()  # skipped cells carry their prediction too
    for column in PREDICTED_FIELDS:
        summary[column] = summary[column].fillna(predicted[column])
    for column in MEASURES:
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
    return summary[["experiment", "cell", *_SUMMARY_CONFIG, "status", "repeats", "ok_repeats", *MEASURES,
                    *TEXT_MEASURES, "train_inference_peak_ratio", *MODEL_FIELDS, "foreign_cores"]]


# --- slices and fits --------------------------------------------------------------------------------

LAW_FIELDS = ("depth", "batch_size", "width", "in_features", "mode")


def law_groups(frame: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Split by the varying fields that no law models (dtype, activation, optimiser, ...)."""
    split = [f for f in varying_fields(frame) if f not in LAW_FIELDS]
    if not split:
        return [({}, frame)]
    return [(dict(zip(split, key if isinstance(key, tuple) else (key,))), part)
            for key, part in frame.groupby(split, sort=True)]


def training_law(train: pd.DataFrame) -> list[dict[str, Any]]:
    """activation ≈ a·depth·batch (·width when width varies) + b·batch (+ d·batch·in_features) + c, per group."""
    results = []
    for group, part in law_groups(train.dropna(subset=["activation_bytes"])):
        if part.empty:
            continue
        depth = part["depth"].astype(float).to_numpy()
        batch = part["batch_size"].astype(float).to_numpy()
        width = part["width"].astype(float).to_numpy()
        inputs = part["in_features"].astype(float).to_numpy()
        itemsize = _itemsize(part["dtype"].iloc[0])
        width_varies = part["width"].nunique() > 1
        depth_varies = part["depth"].nunique() > 1
        terms: dict[str, np.ndarray] = {}
        if width_varies:
            main, main_label = depth * batch * width, "depth·batch·width"
            expected, expected_label = float(itemsize), f"itemsize = {itemsize} B"
        else:
            main, main_label = depth * batch, "depth·batch"
            w = int(width[0])
            expected, expected_label = float(w * itemsize), f"width × itemsize = {w} × {itemsize} B"
        if depth_varies:
            terms["main"] = main
        terms["batch"] = batch
        if part["in_features"].nunique() > 1:
            terms["batch·in_features"] = batch * inputs
        terms["const"] = np.ones_like(batch)
        fit = least_squares(part["activation_bytes"].astype(float).to_numpy(), terms)
        a = fit["coef"].get("main", float("nan"))
        results.append({
            "group": group, "cells": int(len(part)), "main_label": main_label, "main": main if depth_varies else None,
            "a": a, "expected": expected, "expected_label": expected_label, "ratio": a / expected if expected else
            float("nan"), "b": fit["coef"].get("batch", float("nan")), "c": fit["coef"].get("const", float("nan")),
            "d": fit["coef"].get("batch·in_features"), "r2": fit["r2"], "dropped": fit["dropped"],
            "depth_varies": depth_varies, "width_varies": width_varies, "itemsize": itemsize,
            "depths": sorted(part["depth"].unique().tolist()), "coef": fit["coef"],
        })
    return results


def input_law(cells: pd.DataFrame) -> dict[str, Any] | None:
    """input_bytes ≈ e·batch·in_features + f·batch (labels in training), when in_features varies."""
    data = cells.dropna(subset=["input_bytes"])
    if data.empty or data["in_features"].nunique() < 2:
        return None
    batch = data["batch_size"].astype(float).to_numpy()
    fit = least_squares(data["input_bytes"].astype(float).to_numpy(),
                        {"batch·in_features": batch * data["in_features"].astype(float).to_numpy(), "batch": batch})
    return {"e": fit["coef"].get("batch·in_features", float("nan")), "f": fit["coef"].get("batch", float("nan")),
            "r2": fit["r2"], "n": fit["n"], "itemsize": _itemsize(data["dtype"].iloc[0])}


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(np.unique(x)) < 2:
        return float("nan")
    return float(np.polyfit(x.astype(float), y.astype(float), 1)[0])


def depth_slopes(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """Per combination of the other fields: inference working-memory slope over depth vs training's activation slope."""
    ok = cells.dropna(subset=["peak_bytes"])
    if ok.empty or ok["depth"].nunique() < 2:
        return []
    others = [f for f in varying_fields(ok) if f not in ("depth", "mode")]
    keys = others or ["batch_size"]
    rows = []
    for key, part in ok.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        infer = part[part["mode"] == "inference"].sort_values("depth")
        train = part[part["mode"] == "train"].sort_values("depth")
        working = infer["peak_bytes"] - infer["parameter_bytes"] - infer["optimizer_state_bytes"].fillna(0) \
            - infer["input_bytes"]
        rows.append({
            "key": dict(zip(keys, key)),
            "depths": int(part["depth"].nunique()),
            "inference_slope": _slope(infer["depth"].to_numpy(), working.to_numpy()) if len(infer) else float("nan"),
            "train_slope": _slope(train["depth"].to_numpy(), train["activation_bytes"].to_numpy())
            if len(train) else float("nan"),
        })
    return rows


LARGE_STEP_BYTES = 2**20  # the criterion: probes must agree on steps whose peak is at least 1 MiB


def relative_errors(rows: pd.DataFrame, quantity: str, reference: str) -> np.ndarray:
    """(quantity − reference) ÷ reference per row; a row where both are 0 agrees (0), one with reference 0 and a
    non-zero quantity, or either missing, is left out."""
    part = rows[[quantity, reference]].dropna()
    both_zero = int(((part[quantity] == 0) & (part[reference] == 0)).sum())
    part = part[part[reference] > 0]
    rel = ((part[quantity] - part[reference]) / part[reference]).to_numpy(dtype=float)
    return np.concatenate([rel, np.zeros(both_zero)])


def large_steps(runs_ok: pd.DataFrame) -> pd.Series:
    """Rows whose ledger step peak is at least LARGE_STEP_BYTES: where the probes are compared."""
    return runs_ok["step_peak_bytes"] >= LARGE_STEP_BYTES


def agreement(runs_ok: pd.DataFrame) -> list[list[Any]]:
    """Relative error of each probe and prediction against the ledger, per mode and step size, per repeat."""
    table = []
    large = large_steps(runs_ok)
    for quantity, reference, label in AGREEMENT:
        for mode, size, rows in (
            (mode, size, runs_ok[(runs_ok["mode"] == mode) & mask])
            for mode in ("train", "inference")
            for size, mask in (("≥ 1 MiB", large), ("< 1 MiB", ~large))
        ):
            rel = relative_errors(rows, quantity, reference)
            if not len(rel):
                continue
            magnitude = np.abs(rel)
            table.append([label, mode, size, len(rel), _pct(float(np.median(rel))),
                          _pct(float(np.median(magnitude)), False), _pct(float(np.max(magnitude)), False)])
    return table


# --- the report -------------------------------------------------------------------------------------

def _env_section(env: dict[str, Any] | None, runs: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    lines = ["## What was run", ""]
    experiment = runs["experiment"].dropna().iloc[0] if runs["experiment"].notna().any() else "?"
    spec = (env or {}).get("spec", {})
    status_counts = summary["status"].value_counts().to_dict()
    counted = ", ".join(f"{n} {s}" for s, n in sorted(status_counts.items()))
    total_cells = spec.get("cells")
    lines.append(f"- **Study** `{experiment}`" + (f": {spec['description']}" if spec.get("description") else ""))
    done = f"{len(summary)} cells" + (f" of {total_cells}" if total_cells else "")
    lines.append(f"- **Cells** {done} ({counted}); {len(runs)} rows in runs.csv"
                 + (f", {spec.get('repeats')} repeats per cell" if spec.get("repeats") else ""))
    if total_cells and len(summary) < total_cells:
        lines.append(f"- **Incomplete**: {total_cells - len(summary)} cells not run yet "
                     "(rerun the same sweep to resume)")
    grid = spec.get("grid")
    if grid:
        lines.append("- **Grid** " + "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in grid.items()))
    else:
        vary = varying_fields(runs)
        lines.append("- **Varying** " + ("; ".join(f"{f} = {', '.join(map(str, _values(runs, f)))}" for f in vary)
                                          or "nothing"))
    if spec:
        lines.append(f"- **Budget** {spec.get('budget')!s}; timeout {spec.get('timeout_seconds')} s per cell; "
                     f"spec hash `{spec.get('hash')}`")
    if env is None:
        lines += ["- (no env.json: provenance unknown)", ""]
        return lines
    git = env.get("git", {})
    commit = (git.get("commit") or "unknown")[:12]
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    lines.append(f"- **Code** memstudy {env.get('memstudy_version')}, git `{commit}`{dirty}")
    python = env.get("python", {})
    numpy_info = env.get("numpy", {})
    blas = _blas_summary(numpy_info.get("blas", {}))
    lines.append(f"- **Software** Python {python.get('version')}, numpy {numpy_info.get('version')}, BLAS {blas}")
    machine = env.get("machine", {})
    lines.append(f"- **Machine** {machine.get('cpu_model')}, {machine.get('logical_cores')} logical cores "
                 f"({machine.get('usable_cores')} usable), {_bytes(machine.get('total_memory_bytes'))} memory; "
                 f"{env.get('os', {}).get('platform')}")
    cell_env = env.get("cell_environment") or {}
    if cell_env:
        lines.append("- **Cell environment** " + ", ".join(f"`{k}={v}`" for k, v in cell_env.items()))
    sweep = env.get("sweep", {})
    sessions = env.get("sessions", [])
    if sweep:
        lines.append(f"- **Sweep** jobs {sweep.get('jobs')}, budget {_bytes(sweep.get('budget_bytes'))}; "
                     f"{len(sessions)} session(s), recorded {env.get('recorded_at')}")
    lines.append("")
    return lines


def _blas_summary(blas: dict[str, Any]) -> str:
    libs = blas.get("libraries")
    if isinstance(libs, list) and libs:  # threadpoolctl
        return ", ".join(f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('num_threads')} threads)"
                         for lib in libs if isinstance(lib, dict))
    if isinstance(libs, dict) and libs.get("blas"):
        info = libs["blas"]
        return f"{info.get('name')} {info.get('version')}"
    return "unknown"


def _timeline_cell(env: dict[str, Any] | None) -> str | None:
    if not env:
        return None
    candidates = [env.get("sweep", {}).get("timeline_cell")] + [s.get("timeline_cell") for s in env.get("sessions", [])]
    return next((c for c in candidates if c), None)


def write_report(results_dir: str | Path, figures: bool = True,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Write summary.csv, report.md and the figures into `results_dir`; returns the paths written.

    `figures=False` skips the PNGs (and their links, and removes figures an earlier report left), e.g. for quick
    text-only checks. `warn` receives one line per problem found in runs.csv (also stated in report.md).
    Raises ReportError when the directory has no (readable) runs.csv, PathError when it cannot be written or
    another process (a sweep) is writing into it. Every file is written whole (temporary name, then rename).
    """
    if str(results_dir).strip() and not Path(results_dir).exists():
        raise ReportError(f"{results_dir}: no such folder")
    out = results_folder(results_dir, "report folder", create=False)
    with FolderLock(out, "report"):
        return _write_report(out, figures, warn)


def _write_report(out: Path, figures: bool, warn: Callable[[str], None] | None) -> list[Path]:
    if figures:
        from . import plots
    else:
        plots = _NoPlots()

    runs = load_runs(out)
    env = read_env(out)
    written: list[Path] = []
    for problem in runs.attrs.get("problems", []):
        if warn is not None:
            warn(problem)

    summary = summarize(runs)
    summary_path = out / "summary.csv"
    with replace_atomically(summary_path) as tmp:
        summary.to_csv(tmp, index=False)
    written.append(summary_path)

    ok_rows = runs[runs["status"] == "ok"]
    ok_cells = summary[summary["ok_repeats"] > 0]
    train_cells = ok_cells[ok_cells["mode"] == "train"]
    vary = varying_fields(ok_cells) if not ok_cells.empty else []

    md: list[str] = [f"# Memory study: {runs['experiment'].dropna().iloc[0] if len(runs) else out.name}", ""]
    md += ["Training keeps each layer's intermediate values alive until backward uses them; inference frees them "
           "as it goes. Every figure below is a median over repeats of one measured step; byte counts come from "
           "the ledger (every buffer the engine allocates) unless a probe is named; predicted means computed from "
           "the configuration without running.", ""]
    md += _env_section(env, runs, summary)
    md += _file_problems(runs)
    md += _timing_load_section(runs)
    md += _hosts_section(runs, env)
    made: dict[str, Path] = {}

    # peak vs depth and vs batch
    if not ok_cells.empty:
        sliced, fixed = fix_others(ok_cells, keep=("depth", "batch_size"))
        caption = f" ({_describe_fixed(fixed)})" if fixed else ""
        if sliced["depth"].nunique() > 1:
            p = plots.peak_lines(sliced, "depth", "batch_size", out / "peak_vs_depth.png",
                                 f"Total peak vs depth, one line per batch{caption}", logx=True)
            if p:
                made["peak_vs_depth"] = p
        if sliced["batch_size"].nunique() > 1:
            p = plots.peak_lines(sliced, "batch_size", "depth", out / "peak_vs_batch.png",
                                 f"Total peak vs batch size, one line per depth{caption}", logx=True)
            if p:
                made["peak_vs_batch"] = p
        if "width" in vary:
            wsliced, wfixed = fix_others(ok_cells, keep=("width", "depth"))
            p = plots.peak_lines(wsliced, "width", "depth", out / "peak_vs_width.png",
                                 f"Total peak vs width, one line per depth ({_describe_fixed(wfixed) or 'all'})",
                                 logx=True)
            if p:
                made["peak_vs_width"] = p

    md += ["## Peak memory", ""]
    md += _peak_section(ok_cells, made)
    from . import attention  # a gpt study over sequence lengths: the Megatron-LM formula, term by term

    gpt_attention = attention.applies(ok_cells)
    cnn_study = not ok_cells.empty and set(ok_cells["model"]) == {"cnn"}
    if cnn_study:
        # a CNN study: its own laws (image size, blocks, conv_save, checkpointing); the MLP's law and the
        # remedies' per-layer expectations (batch × width) do not describe a convolutional network
        from .cnn_report import sections as cnn_sections

        md += cnn_sections(ok_cells, out, made, figures)
    else:
        if not gpt_attention:  # the MLP's laws (one width-sized buffer per layer); attention has its own, per layer
            md += _laws_section(ok_cells, train_cells, vary, out, made, plots)
        from .remedies import sections as remedy_sections

        # the attention section compares its own checkpoint strategies (selective among them), per layer
        md += remedy_sections(ok_cells, [f for f in vary if not (gpt_attention and f == "checkpoint")], out, made,
                              plots)
    if gpt_attention:
        md += attention.section(ok_cells, out, made, draw=figures)
    md += _breakdown_section(ok_cells, out, made, plots)
    md += _timeline_section(out, env, made, plots)
    md += _agreement_section(ok_rows, out, made, plots)
    md += _problems_section(summary, runs)

    report_path = out / "report.md"
    write_text_atomically(report_path, "\n".join(md).rstrip() + "\n")
    written.append(report_path)
    from .webpage import write_study_page  # the same tables (kept as data in `md`), interactive

    written.append(write_study_page(out, runs, summary, env, md))
    written += list(made.values())
    # a figure this report does not link (this data no longer supports it, or --no-figures) must not linger
    from .cnn_report import FIGURES as CNN_FIGURES
    from .remedies import FIGURES as REMEDY_FIGURES

    for name in FIGURES + REMEDY_FIGURES + attention.FIGURES + CNN_FIGURES:
        if (out / name).exists() and out / name not in made.values():
            (out / name).unlink()
    return written


def _file_problems(runs: pd.DataFrame) -> list[str]:
    problems = runs.attrs.get("problems", [])
    if not problems:
        return []
    return [f"**Warning** {p} (resuming the sweep repairs the file and reruns what is missing)."
            for p in problems] + [""]


LOADED_CORES = 0.5  # other processes' average busy cores above which a timing is flagged


def _timing_load_section(runs: pd.DataFrame) -> list[str]:
    """Flag timings taken while other processes kept the machine busy (`foreign_cores`)."""
    timed = runs[(runs["status"] == "ok") & runs["step_seconds"].notna()]
    known = timed["foreign_cores"].dropna()
    if timed.empty:
        return []
    if known.empty:  # runs.csv from before the column, or not Linux: nothing to say either way
        return []
    loaded = timed[timed["foreign_cores"] > LOADED_CORES]
    line = (f"Timing load: other processes kept a median {known.median():.2f} cores busy (max {known.max():.2f}) "
            f"while the steps were measured.")
    if loaded.empty:
        return [line + f" No row above {LOADED_CORES:g} cores.", ""]
    cells = loaded["cell"].unique().tolist()
    shown = ", ".join(f"`{c}`" for c in cells[:5]) + (f" and {len(cells) - 5} more" if len(cells) > 5 else "")
    return [f"**Warning: timings taken under load.** {line} {len(loaded)} of {len(timed)} rows were timed while "
            f"they used more than {LOADED_CORES:g} cores (cells {shown}): their step_seconds, and every time ratio "
            "built on them, are slower than on a quiet machine. Rerun those cells on a quiet machine (`--fresh`, or "
            "a new --out) to compare times.", ""]


def _host_differences(hosts: dict[str, Any]) -> list[str]:
    """What differs between the hosts' recorded environments (CPU, cores, memory, Python, numpy, BLAS)."""
    facts = {
        "CPU": lambda h: h.get("machine", {}).get("cpu_model"),
        "cores": lambda h: h.get("machine", {}).get("usable_cores"),
        "memory": lambda h: h.get("machine", {}).get("total_memory_bytes"),
        "Python": lambda h: h.get("python", {}).get("version"),
        "numpy": lambda h: h.get("numpy", {}).get("version"),
        "BLAS": lambda h: _blas_summary(h.get("numpy", {}).get("blas", {})),
        "memstudy": lambda h: h.get("memstudy_version"),
    }
    return [name for name, fact in facts.items() if len({str(fact(h)) for h in hosts.values()}) > 1]


def _hosts_section(runs: pd.DataFrame, env: dict[str, Any] | None) -> list[str]:
    """Timings by host when more than one host measured: bytes compare across hosts, seconds do not."""
    timed = runs[(runs["status"] == "ok") & (runs["host"] != "")]
    hosts = sorted(timed["host"].unique().tolist())
    if len(hosts) < 2:
        return []
    recorded = (env or {}).get("hosts") or {}
    differ = _host_differences({h: recorded[h] for h in hosts if h in recorded})
    body = []
    for host in hosts:
        part = timed[timed["host"] == host]
        machine = recorded.get(host, {}).get("machine", {})
        body.append([f"`{host}`", part["cell"].nunique(), len(part), machine.get("cpu_model", "—"),
                     f"{1000 * part['step_seconds'].median():.2f} ms", _ratio(part["foreign_cores"].median())])
    what = f" (they differ in {', '.join(differ)})" if differ else ""
    return [f"**Warning: timings from {len(hosts)} hosts{what}.** Byte counts compare across hosts; seconds do not: "
            "each host's CPU, BLAS and load set its step times, so a time ratio between cells measured on different "
            "hosts says as much about the hosts as about the cells. Timings by host:", "",
            _md_table(["host", "cells", "rows", "CPU", "median step time", "median foreign cores"], body), ""]


def peak_ratio_cells(ok_cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(cells at depth × batch with every other varying field fixed, one row per depth × batch that has a train ÷
    inference peak ratio, the fixed fields)."""
    sliced, fixed = fix_others(ok_cells, keep=("depth", "batch_size"))
    ratios = sliced.dropna(subset=["train_inference_peak_ratio"]).drop_duplicates(["depth", "batch_size"])
    return sliced, ratios, fixed


def _peak_section(ok_cells: pd.DataFrame, figures: dict[str, Path]) -> list[str]:
    if ok_cells.empty:
        return ["No cell finished, so there is nothing to show.", ""]
    lines = _figure(figures, "peak_vs_depth", "total peak vs depth")
    lines += _figure(figures, "peak_vs_batch", "total peak vs batch size")
    lines += _figure(figures, "peak_vs_width", "total peak vs width")
    sliced, ratios, fixed = peak_ratio_cells(ok_cells)
    if ratios.empty:
        lines += ["(No configuration ran in both modes, so there is no train/inference ratio.)", ""]
        return lines
    at = f" at {_describe_fixed(fixed)}" if fixed else ""
    lines += [f"Training peak ÷ inference peak (total, ledger){at}; rows are depths, columns batch sizes:", ""]
    batches = sorted(ratios["batch_size"].unique().tolist())
    body = []
    for depth in sorted(ratios["depth"].unique().tolist()):
        row = [depth]
        for batch in batches:
            hit = ratios[(ratios["depth"] == depth) & (ratios["batch_size"] == batch)]
            row.append(f"{hit['train_inference_peak_ratio'].iloc[0]:.2f}×" if len(hit) else "—")
        body.append(row)
    lines += [_md_table(["depth \\ batch"] + [str(b) for b in batches], body), ""]
    peaks = sliced.pivot_table(index=["depth", "batch_size"], columns="mode", values="peak_bytes", aggfunc="median")
    if not peaks.empty:
        modes = [m for m in ("train", "inference") if m in peaks.columns]
        body = [[d, b] + [_bytes(peaks.loc[(d, b), m]) for m in modes] for d, b in peaks.index]
        lines += [f"Total peak{at}:", "", _md_table(["depth", "batch"] + [f"{m} peak" for m in modes], body), ""]
    return lines


def _group_label(group: dict[str, Any]) -> str:
    return _describe_fixed(group) if group else "all"


def _laws_section(ok_cells, train_cells, vary, out, figures, plots) -> list[str]:
    lines = ["## The laws", ""]
    laws = training_law(train_cells) if not train_cells.empty else []
    if not laws:
        lines += ["No training cell finished: no activation law to fit.", ""]
    else:
        width_law = any(law["width_varies"] for law in laws)
        main = "depth·batch·width" if width_law else "depth·batch"
        extra = " + d·batch·in_features" if any(law["d"] is not None for law in laws) else ""
        lines += [f"**Training.** Activation bytes held for backward ≈ a·{main} + b·batch{extra} + c, least squares "
                  "(numpy.linalg.lstsq) over the per-cell medians. The seed predicts one stored intermediate per layer "
                  "whose size grows with the batch and the layer's width, so a should be "
                  + ("the itemsize (bytes per unit per layer per example)." if width_law else
                     "width × itemsize (bytes per layer per example)."), ""]
        header = ["group", "cells", "a", "expected a", "a ÷ expected", "b (per example)", "c", "R²"]
        if extra:
            header.insert(6, "d")
        body = []
        notes = []
        for law in laws:
            row = [_group_label(law["group"]), law["cells"], _coef(law["a"]), law["expected_label"],
                   _ratio(law["ratio"]), _coef(law["b"]), _coef(law["c"]), _ratio(law["r2"])]
            if extra:
                row.insert(6, _coef(law["d"]) if law["d"] is not None else "—")
            body.append(row)
            if not law["depth_varies"]:
                notes.append(f"{_group_label(law['group'])}: only depth {law['depths'][0]} ran, so the per-layer "
                             "slope a cannot be told apart from the per-example term b; b holds both.")
            elif law["dropped"]:
                notes.append(f"{_group_label(law['group'])}: terms {', '.join(law['dropped'])} add nothing the "
                             "others do not already explain (constant or collinear over this grid) and were left out.")
        lines += [_md_table(header, body), ""]
        if extra:
            lines += ["d measures how the bytes held for backward grow with the number of input features: the first "
                      "Linear does keep its input x for ∂J/∂W1, but x belongs to the caller (the `input` category), "
                      "so d should be about 0; the inputs' share is in the input law below.", ""]
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        good = [law for law in laws if math.isfinite(law["a"])]
        # read (and plot) the unmodified engine's law when a study varies what buys memory back
        good.sort(key=lambda law: (law["group"].get("checkpoint", "none") != "none",
                                   law["group"].get("policy", "minimal") != "minimal"))
        if good:
            law = good[0]
            per = "per example per unit of width" if law["width_varies"] else "per example"
            lines += [f"Read: each extra layer holds a = {_coef(law['a'])} {per} (expected {law['expected_label']}, "
                      f"ratio {_ratio(law['ratio'])}); R² = {_ratio(law['r2'])}.", ""]
            part = train_cells
            if law["group"]:
                for k, v in law["group"].items():
                    part = part[part[k] == v]
            part = part.copy()
            if law["width_varies"]:
                part["_x"] = (part["depth"].astype(float) * part["batch_size"].astype(float)
                              * part["width"].astype(float))
            else:
                part["_x"] = part["depth"].astype(float) * part["batch_size"].astype(float)
            p = plots.activation_law(part, "_x", law["main_label"], law["a"], True, law["coef"],
                                     out / "activation_law.png",
                                     f"Training activations vs {law['main_label']} ({_group_label(law['group'])})")
            if p:
                figures["activation_law"] = p
                lines += _figure(figures, "activation_law", "activation bytes vs the law's main term")
    inputs = input_law(ok_cells) if "in_features" in vary else None
    if inputs:
        lines += [f"**Inputs.** input bytes ≈ e·batch·in_features + f·batch: e = {_coef(inputs['e'])} "
                  f"(itemsize {inputs['itemsize']} B), f = {_coef(inputs['f'])} (the integer labels in training), "
                  f"R² = {_ratio(inputs['r2'])}, {inputs['n']} cells. The input grows with the number of inputs; "
                  "the activations held for backward do not.", ""]
    slopes = depth_slopes(ok_cells)
    if slopes:
        lines += ["**Inference.** Working memory = peak − parameter − optimiser-state − input bytes. Its growth per "
                  "layer is the slope over depth (least-squares line); training's activation bytes grow per layer by "
                  "the slope next to it. Inference frees each intermediate once the next layer has used it, so its "
                  "slope should be about 0.", ""]
        keys = list(slopes[0]["key"])
        body = [[*(s["key"][k] for k in keys), s["depths"], _coef(s["inference_slope"]), _coef(s["train_slope"]),
                 _ratio(s["inference_slope"] / s["train_slope"]) if s["train_slope"] else "—"] for s in slopes]
        header = [k.replace("_size", "") for k in keys] + ["depths", "inference slope / layer",
                                                           "training activation slope / layer", "ratio"]
        lines += [_md_table(header, body), ""]
    elif not ok_cells.empty:
        lines += ["**Inference.** Only one depth ran, so there is no slope over depth.", ""]
    return lines


def _pick_depth_batch(cells: pd.DataFrame) -> tuple[Any, Any] | None:
    both = cells.groupby(["depth", "batch_size"])["mode"].nunique()
    candidates = both[both == 2].index.tolist() or both.index.tolist()
    if not candidates:
        return None
    depths = sorted({d for d, _ in candidates})
    depth = depths[len(depths) // 2]
    batches = sorted(b for d, b in candidates if d == depth)
    batch = nearest_batch(batches)
    return depth, batch


def _breakdown_section(ok_cells, out, figures, plots) -> list[str]:
    if ok_cells.empty:
        return []
    sliced, fixed = fix_others(ok_cells, keep=("depth", "batch_size"))
    pick = _pick_depth_batch(sliced)
    if pick is None:
        return []
    depth, batch = pick
    at = sliced[(sliced["depth"] == depth) & (sliced["batch_size"] == batch)]
    rows = {m: (at[at["mode"] == m].iloc[0] if (at["mode"] == m).any() else None) for m in ("train", "inference")}
    where = f"depth {depth}, batch {batch}" + (f", {_describe_fixed(fixed)}" if fixed else "")
    p = plots.breakdown(rows["train"], rows["inference"], out / "breakdown.png", f"What is live at the peak ({where})")
    lines = ["## What is live at the peak", ""]
    if p:
        figures["breakdown"] = p
        lines += _figure(figures, "breakdown", "breakdown at the peak")
    modes = [m for m in ("train", "inference") if rows[m] is not None]
    body = [[c.replace("_", " ")] + [_bytes(rows[m][f"peak_{c}_bytes"]) for m in modes] for c in CATEGORIES]
    body.append(["**total peak**"] + [_bytes(rows[m]["peak_bytes"]) for m in modes])
    lines += [f"Ledger bytes by category at the step's peak, {where}:", "",
              _md_table(["category"] + modes, body), ""]
    return lines


def _timeline_section(out, env, figures, plots) -> list[str]:
    lines = ["## One training step over time", ""]
    path = out / "timeline.csv"
    if not path.is_file():
        return lines + ["(No timeline.csv in this directory: the sweep writes one for a single training cell; "
                        "skipped here.)", ""]
    try:
        events = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        return lines + [f"(timeline.csv is unreadable: {exc}; skipped.)", ""]
    if events.empty or not any(f"{c}_bytes" in events.columns for c in CATEGORIES):
        return lines + ["(timeline.csv has no per-category columns; skipped.)", ""]
    cell = _timeline_cell(env)
    title = "Live bytes by category over one training step" + (f"\n{cell}" if cell else "")
    p = plots.timeline(events, out / "timeline.png", title)
    lines += [f"Every allocation and free the ledger saw during one training step{f' of `{cell}`' if cell else ''} "
              f"({len(events)} events), stacked by category: the forward pass stacks up one activation per layer, "
              "backward releases them in reverse order while gradients appear."
              + (" With checkpointing, forward holds only each segment's input, and every shaded `recompute` span "
                 "rebuilds one segment's activations just before backward releases them again."
                 if "phase" in events.columns and (events["phase"] == "recompute").any() else ""), ""]
    if p:
        figures["timeline"] = p
        lines += _figure(figures, "timeline", "live bytes over one training step")
    return lines


def _agreement_section(ok_rows, out, figures, plots) -> list[str]:
    lines = ["## Do the probes and the prediction agree with the ledger?", ""]
    table = agreement(ok_rows)
    if not table:
        return lines + ["No finished rows to compare.", ""]
    lines += ["Relative error = (probe − ledger) ÷ ledger, over individual repeats (rows with a ledger value of 0 "
              "count as agreeing when the probe also reads 0).", ""]
    header = ["comparison", "mode", "step peak", "rows", "median error", "median abs. error", "max abs. error"]
    lines += [_md_table(header, table), ""]
    lines += [SAMPLING_NOTE, "", SMALL_STEP_NOTE, ""]
    if "rss_method" in ok_rows.columns:
        methods = ok_rows["rss_method"].replace("", "unknown").value_counts()
        if len(methods):
            lines += ["How the RSS step peak was taken: " + ", ".join(f"{m} in {n} rows" for m, n in methods.items())
                      + " (vmhwm: the kernel's high-water mark reset before the step, exact to the page; sampled: "
                      "a polling thread, which can miss short spikes).", ""]
    p = plots.predicted_vs_measured(ok_rows, SCATTER_PROBES, out / "predicted_vs_measured.png")
    if p:
        figures["predicted_vs_measured"] = p
        lines += _figure(figures, "predicted_vs_measured", "measured step peak by probe vs predicted step peak")
    return lines


def _problems_section(summary: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    bad = summary[summary["status"] != "ok"]
    lines = ["## Skipped and failed cells", ""]
    if bad.empty:
        return lines + ["None: every cell ran and every repeat finished.", ""]
    body = []
    for _, cell in bad.iterrows():
        rows = runs[(runs["cell"] == cell["cell"]) & (runs["status"] != "ok")]
        error = rows["error"].iloc[0] if len(rows) else ""
        body.append([f"`{cell['cell']}`", cell["status"], f"{int(cell['ok_repeats'])}/{int(cell['repeats'])}",
                     _bytes(cell["predicted_peak_bytes"]), error])
    return lines + [_md_table(["cell", "status", "ok repeats", "predicted peak", "reason"], body), ""]


__all__ = ["ReportError", "agreement", "depth_slopes", "large_steps", "load_runs", "peak_ratio_cells", "relative_errors",
           "summarize", "training_law", "write_report"]

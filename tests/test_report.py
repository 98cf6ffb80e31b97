"""The report on synthetic runs.csv files whose laws are known: files, fits, and grids of every shape."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memstudy.run.results.fields import CATEGORIES, ROW_FIELDS
from memstudy.findings.mlp import training_law
from memstudy.report import ReportError, write_report
from memstudy.report.load import load_runs, summarize
from memstudy.run.spec import cell_id
from memstudy.run.results.runs import format_rows, header_line

SLOPE = 256 * 4  # bytes per layer per example: width 256 × float32
PER_EXAMPLE = 40
CONSTANT = 100


def synthetic_row(depth, batch, mode, repeat, width=256, in_features=None, rng=None, status="ok"):
    in_features = in_features or width
    config = {"depth": depth, "width": width, "in_features": in_features, "out_features": 10, "batch_size": batch,
              "activation": "relu", "bias": True, "dtype": "float32", "mode": mode, "optimizer": "sgd",
              "checkpoint": "none", "policy": "minimal", "seed": 0}
    row = {k: None for k in ROW_FIELDS}
    row.update(config, repeat=repeat, status=status, error="" if status == "ok" else f"{status} for a test")
    row.update(experiment="synthetic", cell=cell_id(config))
    parameters = (in_features * width + (depth - 1) * width * width + width * 10) * 4
    inputs = batch * in_features * 4 + (batch * 8 if mode == "train" else 0)
    noise = 1 + (rng.uniform(-1e-3, 1e-3) if rng is not None else 0)
    if mode == "train":
        activation = int((SLOPE * depth * batch * width / 256 + PER_EXAMPLE * batch + CONSTANT) * noise)
        gradients, temporary = parameters, 2 * batch * width * 4
    else:
        activation, gradients, temporary = 0, 0, 2 * batch * width * 4
    step_peak = activation + gradients + temporary
    predicted = {"predicted_peak_bytes": parameters + inputs + step_peak, "predicted_step_peak_bytes": step_peak,
                 "predicted_activation_bytes": activation}
    if status != "ok":
        row.update(predicted)
        return row
    row.update(
        parameter_bytes=parameters, optimizer_state_bytes=0, input_bytes=inputs, peak_bytes=parameters + inputs
        + step_peak, step_peak_bytes=step_peak, activation_bytes=activation, saved_tensors=depth + 1,
        peak_parameter_bytes=parameters, peak_gradient_bytes=gradients, peak_optimizer_state_bytes=0,
        peak_input_bytes=inputs, peak_activation_bytes=activation, peak_temporary_bytes=temporary,
        peak_output_bytes=4, tracemalloc_step_peak_bytes=int(step_peak * 1.01) + 2000,
        rss_step_peak_bytes=(step_peak // 4096) * 4096, mprof_step_peak_bytes=int(step_peak * 0.8),
        hwm_bytes=50_000_000 + step_peak, step_seconds=1e-3 * depth, rss_method="vmhwm", **predicted,
    )
    return row


def write_runs(out: Path, rows: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.csv").write_text(header_line() + format_rows(rows))
    return out


def grid_rows(depths=(1, 2, 4, 8), batches=(16, 64, 256), widths=(256,), inputs=(None,), repeats=3, modes=None):
    rng = np.random.default_rng(0)
    return [synthetic_row(d, b, m, r, width=w, in_features=i, rng=rng)
            for d in depths for b in batches for w in widths for i in inputs
            for m in (modes or ("train", "inference")) for r in range(repeats)]


def write_timeline(out: Path) -> None:
    events = []
    live = dict.fromkeys(CATEGORIES, 0)
    plan = [("baseline", "parameter", 4000), ("baseline", "input", 1000)]
    plan += [("forward", "activation", 512)] * 4 + [("backward", "activation", -512), ("backward", "gradient", 800)] * 4
    for i, (phase, category, delta) in enumerate(plan):
        live[category] += delta
        events.append({"event": i, "phase": phase, "op": "op", "layer": 0, "category": category,
                       "delta_bytes": delta, "live_bytes": sum(live.values()),
                       **{f"{c}_bytes": v for c, v in live.items()}})
    pd.DataFrame(events).to_csv(out / "timeline.csv", index=False)


def test_report_writes_every_file_and_recovers_the_slope(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows())
    write_timeline(out)
    written = write_report(out)
    names = {p.name for p in written}
    assert {"summary.csv", "report.md", "peak_vs_depth.png", "peak_vs_batch.png", "breakdown.png", "timeline.png",
            "predicted_vs_measured.png", "activation_law.png"} <= names
    for path in written:
        assert path.exists() and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    laws = training_law(summarize(load_runs(out)).query("mode == 'train'"))
    assert len(laws) == 1
    assert laws[0]["a"] == pytest.approx(SLOPE, rel=5e-3)
    assert laws[0]["expected"] == SLOPE
    assert laws[0]["r2"] > 0.999

    report = (out / "report.md").read_text()
    for png in (n for n in names if n.endswith(".png")):
        assert f"]({png})" in report
    assert "width × itemsize = 256 × 4 B" in report
    assert "| all | 12 | 1,02" in report and "256 × 4 B | 1.000 |" in report  # a ≈ 1024 B, a ÷ expected
    assert "KiB" in report and "MiB" in report
    assert "memory_profiler" in report and "page-granular" in report
    assert "tracemalloc step peak vs ledger step peak" in report
    assert "None: every cell ran" in report
    assert "vmhwm in 72 rows" in report


def test_summary_has_medians_and_the_train_inference_ratio(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows(depths=(1, 2), batches=(16,)))
    assert [p.name for p in write_report(out, figures=False)] == ["summary.csv", "report.md", "report.html"]
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4
    assert (summary["repeats"] == 3).all() and (summary["ok_repeats"] == 3).all()
    runs = pd.read_csv(out / "runs.csv")
    for _, cell in summary.iterrows():
        assert cell["peak_bytes"] == runs[runs["cell"] == cell["cell"]]["peak_bytes"].median()
    for depth in (1, 2):
        at = summary[summary["depth"] == depth].set_index("mode")
        ratio = at.loc["train", "peak_bytes"] / at.loc["inference", "peak_bytes"]
        assert at.loc["train", "train_inference_peak_ratio"] == pytest.approx(ratio, rel=1e-3)
        assert at.loc["inference", "train_inference_peak_ratio"] == pytest.approx(ratio, rel=1e-3)


def test_report_without_timeline_says_so(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows(depths=(1, 2), batches=(16, 64), repeats=1))
    written = write_report(out)
    assert "timeline.png" not in {p.name for p in written}
    assert "No timeline.csv" in (out / "report.md").read_text()


def test_stale_figures_are_removed(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows(depths=(1, 2), batches=(16,), repeats=1))
    (out / "peak_vs_width.png").write_bytes(b"old")
    (out / "timeline.png").write_bytes(b"old")
    write_report(out)
    assert not (out / "peak_vs_width.png").exists() and not (out / "timeline.png").exists()


def test_one_depth_grid_does_not_crash(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows(depths=(4,), batches=(16, 64, 256), repeats=1))
    written = write_report(out)
    report = (out / "report.md").read_text()
    assert "only depth 4 ran" in report
    assert "peak_vs_depth.png" not in {p.name for p in written}
    assert "peak_vs_batch.png" in {p.name for p in written}


def test_single_cell_and_single_mode_grids(tmp_path):
    out = write_runs(tmp_path / "one", grid_rows(depths=(2,), batches=(16,), repeats=2, modes=("train",)))
    write_report(out)
    assert "no train/inference ratio" in (out / "report.md").read_text()
    out = write_runs(tmp_path / "inf", grid_rows(depths=(1, 2), batches=(16,), repeats=1, modes=("inference",)))
    write_report(out)
    assert "No training cell finished" in (out / "report.md").read_text()


def test_width_grid_fits_bytes_per_unit(tmp_path):
    rows = grid_rows(depths=(2, 8), batches=(64, 256), widths=(64, 128, 256, 512), inputs=(64, 784), repeats=1)
    out = write_runs(tmp_path / "w", rows)
    written = write_report(out)
    laws = training_law(summarize(load_runs(out)).query("mode == 'train'"))
    assert laws[0]["width_varies"]
    assert laws[0]["a"] == pytest.approx(4, rel=5e-3)  # float32 itemsize
    assert abs(laws[0]["d"]) < 0.05  # held activations do not grow with in_features
    report = (out / "report.md").read_text()
    assert "depth·batch·width" in report and "**Inputs.**" in report
    assert "peak_vs_width.png" in {p.name for p in written}


def test_skipped_and_failed_cells_are_listed(tmp_path):
    rows = grid_rows(depths=(1, 2), batches=(16,), repeats=2)
    rows += [synthetic_row(4, 16, "train", r, status="skipped") for r in range(2)]
    rows += [synthetic_row(4, 16, "inference", r, status="failed") for r in range(2)]
    out = write_runs(tmp_path / "r", rows)
    write_report(out, figures=False)
    report = (out / "report.md").read_text()
    assert "skipped for a test" in report and "failed for a test" in report
    summary = pd.read_csv(out / "summary.csv")
    skipped = summary[summary["status"] == "skipped"].iloc[0]
    assert skipped["ok_repeats"] == 0 and np.isnan(skipped["peak_bytes"]) and skipped["predicted_peak_bytes"] > 0


def test_nothing_finished(tmp_path):
    rows = [synthetic_row(2, 16, "train", r, status="failed") for r in range(2)]
    out = write_runs(tmp_path / "r", rows)
    written = write_report(out)
    assert {p.name for p in written} == {"summary.csv", "report.md", "report.html"}
    assert "No cell finished" in (out / "report.md").read_text()


def test_env_json_is_summarised(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows(depths=(1, 2), batches=(16,), repeats=1))
    env = {"memstudy_version": "9.9", "git": {"commit": "abcdef1234567890", "dirty": True},
           "python": {"version": "3.11.7"}, "numpy": {"version": "2.0", "blas": {"libraries": []}},
           "machine": {"cpu_model": "Test CPU", "logical_cores": 4, "usable_cores": 4,
                       "total_memory_bytes": 8 << 30},
           "os": {"platform": "TestOS"}, "cell_environment": {"MALLOC_MMAP_THRESHOLD_": "65536"},
           "spec": {"name": "synthetic", "hash": "0123abcd", "cells": 6, "repeats": 1,
                    "grid": {"depth": [1, 2, 4]}, "budget": "75%", "timeout_seconds": 600}}
    (out / "env.json").write_text(json.dumps(env))
    write_report(out, figures=False)
    report = (out / "report.md").read_text()
    for text in ("abcdef123456", "uncommitted", "Test CPU", "8.00 GiB", "MALLOC_MMAP_THRESHOLD_=65536", "0123abcd",
                 "2 cells not run yet"):
        assert text in report, text


def test_directory_without_runs_csv_is_refused(tmp_path):
    with pytest.raises(ReportError, match="runs.csv"):
        write_report(tmp_path)
    with pytest.raises(ReportError):
        write_report(tmp_path / "missing")
    (tmp_path / "runs.csv").write_text("")
    with pytest.raises(ReportError):
        write_report(tmp_path)


# --- when things go wrong ---------------------------------------------------------------------------------------

def test_a_torn_last_line_is_said_and_left_out_never_a_blank_status(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows(depths=(1, 2), batches=(16,), repeats=2))
    text = (out / "runs.csv").read_text()
    (out / "runs.csv").write_text(text[: len(text) - 60])  # a crash mid-write cut the last row
    warnings: list[str] = []
    write_report(out, figures=False, warn=warnings.append)
    assert len(warnings) == 1 and "last line is cut off" in warnings[0]
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert set(summary["status"]) == {"ok"}
    cut = summary[summary["ok_repeats"] == 1]
    assert len(cut) == 1 and len(summary) == 4  # the torn row's cell has one repeat left, not a blank one
    report = (out / "report.md").read_text()
    assert "last line is cut off" in report and "| mixed" not in report
    assert (out / "runs.csv").read_text() == text[: len(text) - 60]  # the report only reads


def test_repeated_rows_from_two_writers_are_counted_once(tmp_path):
    rows = grid_rows(depths=(1, 2), batches=(16,), repeats=2)
    out = write_runs(tmp_path / "r", rows + rows[:3])
    warnings: list[str] = []
    write_report(out, figures=False, warn=warnings.append)
    assert any("3 rows repeat" in w for w in warnings), warnings
    assert (pd.read_csv(out / "summary.csv")["repeats"] == 2).all()


def test_no_figures_removes_the_figures_of_an_earlier_report(tmp_path):
    out = write_runs(tmp_path / "r", grid_rows(depths=(1, 2), batches=(16, 64), repeats=1))
    write_timeline(out)
    pngs = [p.name for p in write_report(out) if p.suffix == ".png"]
    assert pngs
    assert not [p for p in write_report(out, figures=False) if p.suffix == ".png"]
    assert not list(out.glob("*.png")), list(out.glob("*.png"))
    assert "](" not in (out / "report.md").read_text()


def test_timings_taken_under_load_are_flagged(tmp_path):
    rows = grid_rows(depths=(1, 2), batches=(16,), repeats=2)
    for i, row in enumerate(rows):
        row["foreign_cores"] = 1.4 if i < 2 else 0.05
    out = write_runs(tmp_path / "r", rows)
    write_report(out, figures=False)
    report = (out / "report.md").read_text()
    assert "timings taken under load" in report and "2 of 8 rows" in report and rows[0]["cell"] in report
    summary = pd.read_csv(out / "summary.csv")
    assert summary.set_index("cell").loc[rows[0]["cell"], "foreign_cores"] == pytest.approx(1.4)
    for row in rows:
        row["foreign_cores"] = 0.05
    write_report(write_runs(tmp_path / "quiet", rows), figures=False)
    quiet = (tmp_path / "quiet" / "report.md").read_text()
    assert "under load" not in quiet and "No row above 0.5 cores" in quiet


def test_an_older_runs_csv_without_the_newest_columns_loads(tmp_path):
    from memstudy.run.results.fields import LATER_FIELDS

    rows = grid_rows(depths=(1, 2), batches=(16,), repeats=1)
    columns = [c for c in ("experiment", "cell", *ROW_FIELDS) if c not in LATER_FIELDS and c not in ("model", "lam")]
    out = tmp_path / "old"
    out.mkdir()
    (out / "runs.csv").write_text(format_rows(rows, columns, header=True))
    frame = load_runs(out)
    assert len(frame) == 4 and frame["foreign_cores"].isna().all() and set(frame["model"]) == {"mlp"}
    write_report(out, figures=False)
    assert "Timing load" not in (out / "report.md").read_text()  # unknown: no claim either way


def test_timings_from_several_hosts_are_grouped_and_warned_about(tmp_path):
    rows = grid_rows(depths=(1, 2), batches=(16,), repeats=2)
    for i, row in enumerate(rows):
        row["host"], row["step_seconds"] = ("fast", 0.001) if i % 2 else ("slow", 0.003)
    out = write_runs(tmp_path / "r", rows)
    machine = {"cpu_model": "Fast CPU", "usable_cores": 8}
    env = {"hosts": {"fast": {"machine": machine, "numpy": {"version": "2.4"}},
                     "slow": {"machine": {**machine, "cpu_model": "Slow CPU"}, "numpy": {"version": "2.4"}}}}
    (out / "env.json").write_text(json.dumps(env))
    write_report(out, figures=False)
    report = (out / "report.md").read_text()
    assert "timings from 2 hosts (they differ in CPU)" in report
    assert "| `fast` | 4 | 4 | Fast CPU | 1.00 ms |" in report and "| `slow` | 4 | 4 | Slow CPU | 3.00 ms |" in report
    for row in rows:
        row["host"] = "fast"
    write_report(write_runs(tmp_path / "one", rows), figures=False)
    assert "hosts" not in (tmp_path / "one" / "report.md").read_text()

"""Tests written against deliberate bugs that the suite once let through (issue 12), through public behaviour:

- a resumed sweep keeps no duplicate (cell, repeat) row that runs.csv already held (`memstudy sweep`, runs.csv);
- the report's probe-agreement figures are recomputed here, independently, from the rows it was given;
- the dtype study's "median ratio" is the median of the pairs' ratios (not their minimum, nor any one pair's).
"""
from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from memstudy.report import write_report
from memstudy.run.sweep import format_rows, header_line

from test_remedies import predicted_rows
from test_report import synthetic_row

ROOT = Path(__file__).resolve().parents[1]


def read_runs(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def table_rows(markdown: str, header_start: str) -> list[list[str]]:
    """The body of the first markdown table whose header line starts with `header_start`, as lists of cells."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip("|").split("|")])
    return body


# --- resume drops duplicate rows already in runs.csv --------------------------------------------------

SPEC = textwrap.dedent("""
    [study]
    name = "resume"

    [grid]
    depth = 1
    width = 8
    in_features = 8
    out_features = 3
    batch_size = 2
    mode = ["train", "inference"]

    [run]
    repeats = 2
    budget = "1GiB"
    timeout_seconds = 120
    jobs = 1
""")


def sweep(spec: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "memstudy", "sweep", str(spec), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_resume_drops_duplicate_rows_already_in_runs_csv(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    first = sweep(spec, out)
    assert first.returncode == 0, first.stderr
    runs = out / "runs.csv"
    original = read_runs(runs)
    assert len(original) == 4 and Counter((r["cell"], r["repeat"]) for r in original).most_common(1)[0][1] == 1
    # a (cell, repeat) row written twice, as two sessions that both finished the same cell would leave it
    lines = runs.read_text().splitlines(keepends=True)
    runs.write_text("".join(lines[:2]) + lines[1] + "".join(lines[2:]) + lines[3])
    assert len(read_runs(runs)) == 6

    second = sweep(spec, out)
    assert second.returncode == 0, second.stderr
    resumed = read_runs(runs)
    keys = Counter((r["cell"], r["repeat"]) for r in resumed)
    assert all(n == 1 for n in keys.values()), [k for k, n in keys.items() if n > 1]
    # nothing was measured again: the rows are the first session's, in its order
    assert resumed == original


# --- the report's probe-agreement table, recomputed independently ----------------------------------------

AGREEMENT = (  # (probe column, ledger column, the report's label)
    ("tracemalloc_step_peak_bytes", "step_peak_bytes", "tracemalloc step peak vs ledger step peak"),
    ("rss_step_peak_bytes", "step_peak_bytes", "RSS step peak vs ledger step peak"),
    ("mprof_step_peak_bytes", "step_peak_bytes", "memory_profiler step peak vs ledger step peak"),
    ("predicted_step_peak_bytes", "step_peak_bytes", "predicted step peak vs ledger step peak"),
    ("predicted_activation_bytes", "activation_bytes", "predicted activation bytes vs ledger activation bytes"),
    ("predicted_peak_bytes", "peak_bytes", "predicted total peak vs ledger total peak"),
)


def agreement_rows() -> list[dict]:
    """Synthetic rows whose probes disagree with the ledger by known, varied amounts (both step-size classes)."""
    rng = np.random.default_rng(7)
    rows = [synthetic_row(d, b, m, r) for d in (1, 8) for b in (16, 256) for m in ("train", "inference")
            for r in range(3)]
    for row in rows:
        for probe, reference, _ in AGREEMENT:
            if row[reference]:
                row[probe] = int(row[reference] * (1 + rng.uniform(-0.2, 0.1)))
    return rows


def expected_agreement(rows: list[dict]) -> list[list[str]]:
    def pct(value: float, signed: bool = True) -> str:
        return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"

    table = []
    for probe, reference, label in AGREEMENT:
        for mode in ("train", "inference"):
            for size, large in (("≥ 1 MiB", True), ("< 1 MiB", False)):
                errors = []
                for row in rows:
                    if row["mode"] != mode or (row["step_peak_bytes"] >= 1 << 20) != large:
                        continue
                    if row[reference] == 0:
                        if row[probe] == 0:
                            errors.append(0.0)  # both zero: agreeing
                        continue
                    errors.append((row[probe] - row[reference]) / row[reference])
                if errors:
                    magnitudes = [abs(e) for e in errors]
                    table.append([label, mode, size, str(len(errors)), pct(statistics.median(errors)),
                                  pct(statistics.median(magnitudes), False), pct(max(magnitudes), False)])
    return table


def test_report_agreement_figures_equal_an_independent_computation(tmp_path):
    rows = agreement_rows()
    assert {row["step_peak_bytes"] >= 1 << 20 for row in rows} == {True, False}  # both size classes present
    out = tmp_path / "study"
    out.mkdir()
    (out / "runs.csv").write_text(header_line() + format_rows(rows))
    write_report(out, figures=False)
    reported = table_rows((out / "report.md").read_text(), "| comparison | mode | step peak |")
    expected = expected_agreement(rows)
    assert reported == expected
    # the figures are not all zero: the rows disagree by up to 20 %
    assert any(row[6] != "0.00%" for row in expected)


# --- the dtype study's median ratio -----------------------------------------------------------------------

def test_dtype_section_prints_the_median_of_the_pairs_ratios(tmp_path):
    rows = predicted_rows({"dtype": ["float32", "float64"], "depth": [2, 4, 8], "mode": ["train"],
                           "optimizer": ["adam"], "width": [16], "batch_size": [4]})
    # float32 step times against float64's: ratios 0.3, 0.9, 0.6 (median 0.6, unlike the minimum or the first)
    f32_share = {2: 0.3, 4: 0.9, 8: 0.6}
    for row in rows:
        row["step_seconds"] = 0.01 * row["depth"] * (f32_share[row["depth"]] if row["dtype"] == "float32" else 1)
    out = tmp_path / "dtypes"
    out.mkdir()
    (out / "runs.csv").write_text(header_line() + format_rows(rows))
    write_report(out, figures=False)
    table = {r[0]: r[1:] for r in table_rows((out / "report.md").read_text(), "| quantity | pairs | median ratio |")}

    def expected(column: str) -> list[str]:
        by_depth = {(r["depth"], r["dtype"]): float(r[column]) for r in rows}
        ratios = [by_depth[d, "float32"] / by_depth[d, "float64"] for d in (2, 4, 8)]
        return [str(len(ratios)), f"{statistics.median(ratios):.4f}", f"{min(ratios):.4f} – {max(ratios):.4f}"]

    assert table["step time"] == expected("step_seconds") == ["3", "0.6000", "0.3000 – 0.9000"]
    # a byte figure whose ratios differ too: tracemalloc's step peak carries a fixed 1000 B on top of each
    tracemalloc = expected("tracemalloc_step_peak_bytes")
    assert table["step peak (tracemalloc)"] == tracemalloc
    low, high = (float(v) for v in re.findall(r"\d\.\d{4}", tracemalloc[2]))
    assert low < float(tracemalloc[1]) < high


# --- issue 21: every array alive between steps is registered with the ledger --------------------------------

BASELINE_CONFIGS = {
    "mlp": dict(depth=2, width=16, batch_size=4),
    "seed": dict(model="seed", width=16, batch_size=4, lam=0.1),
    "gpt": dict(model="gpt", depth=2, width=16, heads=2, seq_len=8, vocab=23, batch_size=2, dropout=0.1),
    "cnn": dict(model="cnn", depth=2, width=4, image_size=8, batch_size=2),
}


def _traced_numpy_bytes() -> int:
    import tracemalloc

    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


# every optimiser on the MLP, every family with an optimiser that keeps state (tracing costs about a second each)
@pytest.mark.parametrize("family, optimizer", [("mlp", "sgd"), ("mlp", "momentum"), ("mlp", "adam"), ("seed", "adam"),
                                               ("gpt", "adam"), ("cnn", "momentum")])
def test_tracemallocs_baseline_is_the_ledgers_registered_bytes(family, optimizer):
    """Between two training steps numpy holds exactly what the ledger registered: parameters and model state,
    optimiser state, the batch. An optimiser array kept but left out of `state_arrays()` (so never registered,
    and missing from every prediction and budget) shows as traced bytes the ledger lacks. tracemalloc sees every
    numpy data buffer, independently of the ledger; it starts after a throw-away step of the same family, so that
    the lazy imports and caches of a first step in this process are not counted (the test is order-independent)."""
    import gc
    import tracemalloc

    from memstudy.measure.workload import Workload
    from memstudy.nn.models.registry import normalize

    config = normalize({**BASELINE_CONFIGS[family], "optimizer": optimizer, "mode": "train"})
    Workload(config).step()  # first-step imports and caches, outside the trace
    gc.collect()
    tracemalloc.start()
    try:
        work = Workload(config)
        work.step()  # warm-up: the optimiser state exists
        work.reset()
        account = work.ledger_step()
        work.reset()
        traced = _traced_numpy_bytes()
    finally:
        tracemalloc.stop()
    registered = account.registered_bytes
    assert registered["optimizer_state"] == {"sgd": 0, "momentum": 1, "adam": 2}[optimizer] * sum(
        p.nbytes for p in work.optimizer.params)
    assert traced == registered["parameter"] + registered["optimizer_state"] + registered["input"], (
        f"numpy holds {traced} B between steps, the ledger registered {registered}")

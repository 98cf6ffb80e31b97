"""`python -m benchmarks.cell_profile`: where a cell's wall time goes, end to end, with each launcher (issue 28
item 1), into results/bench/cell_profile.csv (docs/performance.md's `cell-profile` block renders it).

For a few cells of the committed studies, each launched as the sweep launches it (launcher.launch, 3 repeats, the
ledger's by-layer rows) with the old exec launcher (MEMSTUDY_LAUNCHER=exec: a fresh interpreter) and the fork
server, alternately, `samples` times each; per phase the median seconds:

- the sweep's part: the budget's check (a prediction in the sweep's process), the BLAS threads' load window
  (launcher.free_cores), writing the rows (runs.csv and layers.csv, each appended and fsynced, into a temporary
  folder);
- the cell's own phases (measure/cell.py `phase_seconds`): its prediction, the model's build, the warm-up (the
  gradient checks, one step, the first collection), and over its repeats the baseline collections, the ledger's
  step, tracemalloc's step, the RSS + memory_profiler step (memory_profiler's first use in the process included),
  the timed steps, the rows;
- process start, imports and pipes: the launch's wall time less the load window and the cell's phases.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memstudy.nn.models.registry import normalize
from memstudy.run import forkserver, launcher
from memstudy.run.budget import DEFAULT_PREDICTOR, BudgetCheck
from memstudy.run.results.runs import CSV_COLUMNS, append_rows, rewrite_runs
from memstudy.run.sweep import LAYER_COLUMNS, append_layers

from .load import ForeignLoad

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench" / "cell_profile.csv"
# (label, config): a small and a large MLP cell of the default study, a CNN cell, an attention cell
CELLS = (
    ("default: depth 4, batch 64, train", dict(depth=4, width=256, batch_size=64, mode="train")),
    ("default: depth 32, batch 256, train", dict(depth=32, width=256, batch_size=256, mode="train")),
    ("cnn: depth 3, batch 32, train", dict(model="cnn", depth=3, width=16, batch_size=32, mode="train")),
    ("attention: gpt depth 2, seq 128, train", dict(model="gpt", depth=2, width=64, heads=2, seq_len=128,
                                                     vocab=512, batch_size=4, mode="train")),
)
LAUNCHERS = ("exec", "fork")
REPEATS = 3
SWEEP_PHASES = ("budget_check", "blas_load_window", "write_rows")
CELL_PHASES = ("predict", "model_build", "warm_up", "reset", "ledger_step", "tracemalloc_step", "rss_mprof_step",
               "timed_steps", "row")
START = "process_start_imports_pipes"
PHASES = SWEEP_PHASES[:2] + (START,) + CELL_PHASES + SWEEP_PHASES[2:]
COLUMNS = ("cell", "launcher", "phase", "seconds", "samples", "foreign_cores")


def _one(config: dict[str, Any], way: str, checker: BudgetCheck, folder: Path) -> dict[str, float]:
    """The phases' seconds of one cell launched `way`."""
    env = launcher.cell_environment()
    if way == "exec":
        env[forkserver.LAUNCHER_ENV] = "exec"
    else:
        env.pop(forkserver.LAUNCHER_ENV, None)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    checker.check(config)
    seconds["budget_check"] = time.perf_counter() - start
    start = time.perf_counter()
    launcher.free_cores()  # what launch() waits for before it starts the cell (blas_for_cell)
    seconds["blas_load_window"] = time.perf_counter() - start
    request = launcher.CellRequest(config, REPEATS, by_layer=True, phase_seconds=True)
    start = time.perf_counter()
    result = launcher.launch(request, env=env)
    wall = time.perf_counter() - start
    if result is None or result.error:
        raise RuntimeError(f"{way} cell failed: {result.error if result else 'not started'}")
    cell = result.rows[-1]["phase_seconds"]  # the last row's: the whole cell
    seconds.update({name: cell.get(name, 0.0) for name in CELL_PHASES})
    seconds[START] = wall - seconds["blas_load_window"] - sum(cell.values())
    rows = [{**dict.fromkeys(CSV_COLUMNS), **r} for r in result.rows]
    layers = [{**e, "experiment": "profile", "cell": "c", "repeat": r["repeat"]} for r in result.rows
              for e in r.get("by_op") or ()]
    runs = folder / "runs.csv"
    rewrite_runs(runs, [], CSV_COLUMNS)
    start = time.perf_counter()
    append_layers(folder / "layers.csv", layers)
    append_rows(runs, rows, CSV_COLUMNS)
    seconds["write_rows"] = time.perf_counter() - start
    return seconds


def profile(samples: int = 3, log=lambda message: None) -> list[dict[str, Any]]:
    checker = BudgetCheck(1 << 40, "profile", DEFAULT_PREDICTOR, lambda: None)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="memstudy-bench-profile-") as tmp:
        for label, raw in CELLS:
            config = normalize(dict(raw))
            log(f"  profile: {label}")
            load = ForeignLoad().start()
            got: dict[str, list[dict[str, float]]] = {way: [] for way in LAUNCHERS}
            for sample in range(samples + 1):  # the first round starts the fork server and warms the page cache
                for way in LAUNCHERS if sample % 2 == 0 else LAUNCHERS[::-1]:
                    seconds = _one(config, way, checker, Path(tmp))
                    if sample:
                        got[way].append(seconds)
            foreign = load.cores()
            for way in LAUNCHERS:
                for phase in PHASES:
                    out.append({"cell": label, "launcher": way, "phase": phase,
                                "seconds": round(statistics.median(s[phase] for s in got[way]), 4),
                                "samples": samples, "foreign_cores": None if foreign is None else round(foreign, 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cell_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    rows = profile(args.samples, log=lambda message: print(message, file=sys.stderr, flush=True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print("\n".join(table_lines(rows)))
    return 0


def read(path: str | os.PathLike = OUT) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What the table says, computed from it: each cell's total with each launcher, and what the fork server saves."""
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    total = {(r["cell"], r["launcher"]): 0.0 for r in rows}
    start = {}
    for r in rows:
        total[(r["cell"], r["launcher"])] += float(r["seconds"])
        if r["phase"] == START:
            start[(r["cell"], r["launcher"])] = float(r["seconds"])
    load = max((float(r["foreign_cores"]) for r in rows if r.get("foreign_cores") not in (None, "")), default=None)
    parts = [f"{c}: {total[(c, 'exec')]:.2f} s exec'd, {total[(c, 'fork')]:.2f} s forked (of which process start, "
             f"imports and pipes {start.get((c, 'exec'), 0):.2f} s and {start.get((c, 'fork'), 0):.2f} s)" for c in cells]
    samples = rows[0]["samples"] if rows else "?"
    return [f"Seconds per phase of one cell of 3 repeats, this checkout's cell either way (median of {samples} "
            f"launches each way, alternating; others' load up to {load if load is None else round(load, 2)} cores "
            "while they ran, so the steps' seconds move from launch to launch): " + "; ".join(parts) + "."]


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table: a row per phase, a column per (cell, launcher), and the totals."""
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    value = {(r["cell"], r["launcher"], r["phase"]): float(r["seconds"]) for r in rows}
    header = "| phase | " + " | ".join(f"{c} ({w})" for c in cells for w in LAUNCHERS) + " |"
    lines = [header, "|---" * (1 + len(cells) * len(LAUNCHERS)) + "|"]
    for phase in PHASES:
        lines.append(f"| {phase.replace('_', ' ')} | " + " | ".join(
            f"{value.get((c, w, phase), float('nan')):.3f}" for c in cells for w in LAUNCHERS) + " |")
    lines.append("| **total** | " + " | ".join(
        f"**{sum(value.get((c, w, p), 0.0) for p in PHASES):.3f}**" for c in cells for w in LAUNCHERS) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

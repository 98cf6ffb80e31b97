"""The committed results the README's blocks read (each file once), and the small formats the blocks share."""
from __future__ import annotations

import ast
import json
import statistics
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memstudy.run.results.provenance import read_env
from memstudy.report.load import ReportError, load_runs, summarize

DEFAULT_STUDY = "default"
EXAMPLE_RUN = "results/example/run.jsonl"  # written by `make example` (memstudy run ... --json)
BENCH_CSV = "results/bench/bench.csv"
CELL_PROFILE_CSV = "results/bench/cell_profile.csv"  # benchmarks/cell_profile.py: a cell's phases, each launcher
PROBE_TEST = "tests/test_probe_agreement.py"  # its tolerances are quoted beside the measured errors
OPTIMIZER_NAMES = {"sgd": "SGD", "momentum": "Momentum", "adam": "Adam"}


class PublishError(RuntimeError):
    """A committed result the README quotes is missing or unreadable; one-line message."""


# --- the committed results ----------------------------------------------------------------------------

@dataclass
class StudyData:
    """One committed study as the report reads it."""

    name: str
    runs: pd.DataFrame
    env: dict[str, Any] | None

    @cached_property
    def ok_rows(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]

    @cached_property
    def summary(self) -> pd.DataFrame:
        return summarize(self.runs)

    @cached_property
    def ok_cells(self) -> pd.DataFrame:
        return self.summary[self.summary["ok_repeats"] > 0]

    @cached_property
    def train_cells(self) -> pd.DataFrame:
        return self.ok_cells[self.ok_cells["mode"] == "train"]


class Results:
    """The committed results under a project folder, each file read once."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self._studies: dict[str, StudyData] = {}

    def path(self, relative: str) -> Path:
        return self.root / relative

    def study_names(self) -> list[str]:
        """Every results/<name>/ with a runs.csv, sorted."""
        return sorted(p.parent.name for p in self.path("results").glob("*/runs.csv"))

    def study(self, name: str) -> StudyData:
        if name not in self._studies:
            folder = self.path("results") / name
            try:
                runs = load_runs(folder)
            except ReportError as exc:
                raise PublishError(str(exc)) from None
            self._studies[name] = StudyData(name, runs, read_env(folder))
        return self._studies[name]

    @cached_property
    def bench_rows(self) -> list[dict[str, str]]:
        import csv

        path = self.path(BENCH_CSV)
        if not path.is_file():
            raise PublishError(f"{path}: not found (run `make bench`)")
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @cached_property
    def example_run(self) -> dict[str, list[dict[str, Any]]]:
        """results/example/run.jsonl's rows by mode, in file order (what `memstudy run --json` printed)."""
        path = self.path(EXAMPLE_RUN)
        if not path.is_file():
            raise PublishError(f"{path}: not found (run `make example`)")
        results: dict[str, list[dict[str, Any]]] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PublishError(f"{path}:{number}: not JSON ({exc.msg})") from None
            results.setdefault(row["mode"], []).append(row)
        if not results:
            raise PublishError(f"{path}: no rows")
        return results

    def test_constant(self, relative: str, name: str) -> Any:
        """A module-level constant of a test file, read without importing it (the README quotes its tolerances)."""
        path = self.path(relative)
        if not path.is_file():
            raise PublishError(f"{path}: not found")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
        raise PublishError(f"{path}: no constant {name}")


# --- small formats ------------------------------------------------------------------------------------

def times(value: float) -> str:
    """A ratio as the report's tables print it: 3.90×."""
    return f"{value:.2f}×"


def and_list(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def span(values: list[Any]) -> str:
    values = sorted(set(values))
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def near(value: float, target: float, tolerance: float = 5e-4) -> bool:
    return bool(np.isfinite(value)) and abs(value - target) <= tolerance


def row_median(rows: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def load_clause(loads: Any, what: str = "rows") -> str:
    """The load a quoted timing was taken under: other processes' busy cores (`foreign_cores`) over the rows it is
    built on, flagged when any is above LOADED_CORES (a figure taken on a busy machine is slower than a quiet one's)."""
    from memstudy.measure.load import LOADED_CORES

    values = pd.to_numeric(pd.Series(list(loads), dtype=object), errors="coerce").dropna()
    if values.empty:
        return "others' load not recorded"
    loaded = values[values > LOADED_CORES]
    if not loaded.empty:
        some = "all" if len(loaded) == len(values) else f"{len(loaded)} of {len(values)}"
        return (f"**taken under load**: other processes kept more than {LOADED_CORES:g} cores busy in {some} {what} "
                f"(up to {loaded.max():.2f} cores), whose times are slower than on a quiet machine")
    low, high = f"{values.min():.2f}", f"{values.max():.2f}"
    return f"others' load {low if low == high else low + '–' + high} cores" + (f" over {len(values)} {what}"
                                                                                  if len(values) > 1 else "")


def at_cell(row: pd.Series | dict[str, Any], fields: tuple[str, ...] = ("depth", "batch_size")) -> str:
    return ", ".join(f"{f.replace('_size', '')} {row[f]}" for f in fields)

"""One study as every section and finding reads it: the rows, the cells, env.json, and what the families declare.

A finding never asks which model ran; it asks what the rows' families declare (`declares`, `cells_declaring`:
a family lists the findings that describe it, `Family.findings`) and which fields vary (`varies`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from ..nn.models.registry import ConfigError, Family, get_family
from .fit import varying_fields
from .load import load_layers, timeline_cell


@dataclass
class Study:
    out: Path  # the study's folder: where its PNGs go
    runs: pd.DataFrame  # every usable row of runs.csv (load.load_runs)
    summary: pd.DataFrame  # one row per cell (load.summarize)
    env: dict[str, Any] | None = None
    _families: dict[str, Family | None] = field(default_factory=dict, repr=False)

    @classmethod
    def of_cells(cls, cells: pd.DataFrame, out: Path, env: dict[str, Any] | None = None) -> "Study":
        """A study of per-cell rows measured elsewhere (a notebook, a test): each row a finished cell, repeat 0."""
        cells = cells.copy()
        for column, value in (("status", "ok"), ("repeats", 1), ("ok_repeats", 1), ("repeat", 0),
                              ("experiment", out.name), ("foreign_cores", float("nan"))):
            if column not in cells.columns:
                cells[column] = value
        if "cell" not in cells.columns:
            cells["cell"] = [f"c{i}" for i in range(len(cells))]
        return cls(Path(out), cells, cells, env)

    @cached_property
    def ok_rows(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]

    @cached_property
    def shape_only(self) -> bool:
        """Every finished row is a prediction alone (a spec's `[run] measure = false`, run/sweep.py): no step was
        measured, so the sections that read the ledger's, the probes' or the clock's columns have nothing to read."""
        rows = self.ok_rows
        if rows.empty or "shape_only" not in rows.columns:
            return False
        return bool(rows["shape_only"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0")).all())

    @cached_property
    def ok_cells(self) -> pd.DataFrame:
        return self.summary[self.summary["ok_repeats"] > 0]

    @cached_property
    def train_cells(self) -> pd.DataFrame:
        return self.ok_cells[self.ok_cells["mode"] == "train"]

    @cached_property
    def vary(self) -> list[str]:
        """The config fields that take more than one value among the finished cells."""
        return varying_fields(self.ok_cells) if not self.ok_cells.empty else []

    def varies(self, name: str) -> bool:
        return name in self.vary

    @cached_property
    def experiment(self) -> str:
        return self.runs["experiment"].dropna().iloc[0] if len(self.runs) else self.out.name

    # --- the families ------------------------------------------------------------------------------------
    def family(self, model: str) -> Family | None:
        """The family a row's `model` names (None when it cannot be loaded here, e.g. a user's file that moved)."""
        if model not in self._families:
            try:
                self._families[model] = get_family(model)
            except ConfigError:
                self._families[model] = None
        return self._families[model]

    def findings_of(self, model: str) -> tuple[str, ...]:
        family = self.family(model)
        return tuple(getattr(family, "findings", ())) if family is not None else ()

    @cached_property
    def models(self) -> list[str]:
        return sorted(self.runs["model"].dropna().unique().tolist())

    def declares(self, finding: str) -> bool:
        """Whether any family in the rows lists `finding`."""
        return any(finding in self.findings_of(m) for m in self.models)

    def cells_declaring(self, finding: str, cells: pd.DataFrame | None = None) -> pd.DataFrame:
        """The cells (default: the finished ones) whose family lists `finding`."""
        cells = self.ok_cells if cells is None else cells
        models = [m for m in self.models if finding in self.findings_of(m)]
        return cells[cells["model"].isin(models)]

    def config_of(self, cell: str) -> dict[str, Any] | None:
        """The config of one cell (from its first row in runs.csv, which has every field's column: summary.csv has
        not the parallel ones), with its family's describe() and layer_names()."""
        hit = self.runs[self.runs["cell"] == cell]
        if hit.empty:
            return None
        row = hit.iloc[0]
        family = self.family(row["model"])
        if family is None:
            return None
        config = {}
        for f in family.all_fields():
            value = row.get(f.name)
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                continue
            value = value.item() if hasattr(value, "item") else value
            if f.type is int and isinstance(value, float) and value.is_integer():
                value = int(value)  # a column with empty cells (another family's rows) is read as floats
            config[f.name] = value
        try:
            return family.normalize(config)
        except (ConfigError, ValueError, TypeError):
            return None

    def describe(self, cell: str) -> str | None:
        config = self.config_of(cell)
        return None if config is None else self.family(config["model"]).describe(config)

    def layer_names(self, cell: str) -> dict[str, str]:
        """Layer index (as timeline.csv writes it) -> the family's name for it, for one cell."""
        config = self.config_of(cell)
        if config is None:
            return {}
        return {str(i): name for i, name in enumerate(self.family(config["model"]).layer_names(config))}

    # --- other files ---------------------------------------------------------------------------------------
    @cached_property
    def layers(self) -> pd.DataFrame | None:
        """layers.csv (bytes each op saved per layer, per cell and repeat), or None."""
        return load_layers(self.out)

    @cached_property
    def timeline_cell(self) -> str | None:
        return timeline_cell(self.env)

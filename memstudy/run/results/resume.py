"""May this spec continue the results already in a folder? Extend yes, reinterpret no.

A row is fully described by its own columns (the cell's config, the repeat, the outcome), so a spec may
change everything that only decides *which* rows exist or *how* they are run: the grid may gain values,
keys or combinations, `repeats` may grow (missing repeats are run) or shrink (extra rows stay), and the
budget, timeout and jobs may change. What is refused is what would make the folder's rows mean something
else: another study name (the `experiment` column), a grid that no longer has a cell the folder holds
(its report would present cells the spec does not have), or a model whose source file changed since the
folder's rows were made (`check_model_sources`). The refusal names the field (or the file).

This is decided from the rows themselves and the spec recorded in env.json, not from the spec's hash,
so folders written by any earlier memstudy resume as long as their spec is compatible.
"""
from __future__ import annotations

from typing import Any, Iterable

from ...nn.models.registry import DEFAULT_FAMILY
from ..spec import Spec, cell_id
from .fields import GRID_FIELDS
from .runs import RunsFile


class SweepError(RuntimeError):
    """The sweep refuses to start (e.g. DIR holds results this spec would reinterpret); one-line message."""


REFUSAL_HINT = "use --fresh to start over, or another --out"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def check_compatible(folder: str, stored_spec: dict[str, Any] | None, runs: RunsFile | None, spec: Spec) -> list[str]:
    """The changes from the stored spec that this run makes (one phrase each, for env.json and the user);
    raises SweepError naming the field when the spec would reinterpret rows already in the folder."""
    stored_spec = stored_spec or {}
    rows = runs.rows if runs is not None else []
    stored_name = stored_spec.get("name") or next((r.get("experiment") for r in rows if r.get("experiment")), None)
    if stored_name is not None and stored_name != spec.name:
        raise SweepError(f"study.name: {folder} holds the study {stored_name!r}, this spec is {spec.name!r}; "
                         f"{REFUSAL_HINT}")
    if rows:
        if stored_spec.get("measure", True) != spec.measure:  # measured rows and shape-only ones mean other things
            said = {True: "measured", False: "shape-only (measure = false)"}
            raise SweepError(f"run.measure: {folder} holds {said[stored_spec.get('measure', True)]} rows, this spec "
                             f"asks for {said[spec.measure]} ones; {REFUSAL_HINT}")
        _check_cells(folder, rows, spec, stored_spec.get("grid") or {})
    return describe_changes(stored_spec, spec)


def check_model_sources(folder: str, runs: RunsFile | None, spec: Spec,
                        sources: dict[str, dict[str, str] | None]) -> None:
    """Refuse (naming the file) when the folder's rows of a cell were made from another version of that cell's
    model source than the one `sources` (model -> provenance.model_source) holds now: one runs.csv would mix
    two versions of the model. Rows from before the `model_source_hash` column record nothing and pass."""
    model_of = {cell_id(c): c.get("model") or DEFAULT_FAMILY for c in spec.cells()}
    differing: dict[str, list[str]] = {}  # model -> the other hashes its rows recorded
    for row in runs.rows if runs is not None else []:
        recorded, model = row.get("model_source_hash") or "", model_of.get(row["cell"])
        source = sources.get(model) if model is not None else None
        if recorded and source is not None and recorded != source["sha256"]:
            differing.setdefault(model, []).append(recorded)
    for model, hashes in differing.items():
        source = sources[model]
        then = ", ".join(sorted(set(hashes)))
        raise SweepError(f"model: {source['path']} changed since {len(hashes)} rows in {folder}/runs.csv were "
                         f"measured (its source hash was {then}, it is {source['sha256']} now), and one runs.csv "
                         f"would mix two versions of the model; {REFUSAL_HINT}")


def _check_cells(folder: str, rows: list[dict[str, str]], spec: Spec, stored_grid: dict[str, Any]) -> None:
    cells = spec.cells()
    ids = {cell_id(c) for c in cells}
    foreign = [r for r in rows if r["cell"] not in ids]
    if not foreign:
        return
    n_cells = len({r["cell"] for r in foreign})
    values: dict[str, set[str]] = {}
    for config in cells:
        for key, value in config.items():
            values.setdefault(key, set()).add(_text(value))
    values.setdefault("model", set()).add("mlp")
    order = [*stored_grid, *spec.grid, *GRID_FIELDS]
    row = foreign[0]
    for key in dict.fromkeys(order):
        have = row.get(key, "")
        if key == "model" and have == "":
            have = "mlp"  # files from before the model registry hold MLP cells
        if have == "" or key not in values:
            continue
        if have not in values[key]:
            cells_word = "cell" if n_cells == 1 else "cells"
            raise SweepError(f"grid.{key}: this spec has no {key} = {have}, which {n_cells} {cells_word} in "
                             f"{folder}/runs.csv measured; a spec may only extend a folder's grid; {REFUSAL_HINT}")
    raise SweepError(f"grid: the cell {row['cell']} in {folder}/runs.csv is not a cell of this spec (a combination "
                     f"the grid no longer makes); {REFUSAL_HINT}")


def _values(grid_values: Iterable[Any]) -> list[str]:
    return [_text(v) for v in grid_values]


def describe_changes(stored: dict[str, Any], spec: Spec) -> list[str]:
    """What differs from the stored spec: grid values added, repeats, budget, timeout (phrases)."""
    if not stored:
        return []
    changes = []
    old_grid = {k: _values(v if isinstance(v, list) else [v]) for k, v in (stored.get("grid") or {}).items()}
    for key, values in spec.grid.items():
        new = _values(values)
        if key not in old_grid:
            changes.append(f"grid.{key} added ({', '.join(new)})")
        else:
            gained = [v for v in new if v not in old_grid[key]]
            if gained:
                changes.append(f"grid.{key} gained {', '.join(gained)}")
    for key in ("repeats", "budget", "timeout_seconds"):
        label = f"run.{key}"
        old, new = stored.get(key), getattr(spec, key)
        if old is not None and _text(old) != _text(new):
            changes.append(f"{label} {old} -> {new}")
    return changes


__all__ = ["SweepError", "check_compatible", "check_model_sources", "describe_changes"]

"""Measured against predicted: whether a row's prediction matched its ledger, and the one line that says it didn't.

The prediction is the engine run on shape-only arrays, so it equals the ledger byte for byte as long as every numpy
call in the step has a shape rule that follows numpy (autograd/meta). A difference means one does not (a user's own
rule, or a built-in one with a bug): it is shown wherever the row is shown, never only in `--json`. A prediction
can also be unavailable (the step calls something the shape-only arrays cannot follow, `meta.Unsupported`); the
step is then measured anyway and the row says why.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from ..units import format_bytes

# (what, ledger field, predicted field): the figures a row has from both
COMPARED = (
    ("step peak", "step_peak_bytes", "predicted_step_peak_bytes"),
    ("total peak", "peak_bytes", "predicted_peak_bytes"),
    ("activations held for backward", "activation_bytes", "predicted_activation_bytes"),
)


def _figure(value: Any) -> int | None:
    """A row's byte count as an int; None when absent (None, "", NaN from a CSV)."""
    if value is None or value == "":
        return None
    number = float(value)
    return None if math.isnan(number) else int(number)


def prediction_matches(row: dict[str, Any]) -> bool | None:
    """True when every compared figure equals its prediction, False when one differs, None without both."""
    pairs = [(_figure(row.get(measured)), _figure(row.get(predicted))) for _, measured, predicted in COMPARED]
    if any(m is None or p is None for m, p in pairs):
        return None
    return all(m == p for m, p in pairs)


def differences(row: dict[str, Any]) -> list[str]:
    """Each compared figure that differs: "step peak 1,184 B measured, 2,208 B predicted (+1.00 KiB)"."""
    out = []
    for what, measured, predicted in COMPARED:
        m, p = _figure(row.get(measured)), _figure(row.get(predicted))
        if m is not None and p is not None and m != p:
            sign = "+" if p > m else "-"
            out.append(f"{what} {m:,} B measured, {p:,} B predicted ({sign}{format_bytes(abs(p - m))})")
    return out


def unavailable_prediction(reason: str) -> dict[str, Any]:
    """The prediction fields of a step that could not be predicted (`reason`: the Unsupported message)."""
    return {"predicted_peak_bytes": None, "predicted_step_peak_bytes": None, "predicted_activation_bytes": None,
            "prediction_unavailable": reason}


def row_warning(row: dict[str, Any], label: str = "") -> str | None:
    """One line for a row whose prediction differs or is unavailable; None when it matched."""
    prefix = f"{label}: " if label else ""
    reason = row.get("prediction_unavailable") or ""
    if reason:
        return f"{prefix}prediction unavailable, measured anyway: {reason}"
    if prediction_matches(row) is False:
        return (f"{prefix}the prediction differs from the ledger: {'; '.join(differences(row))} (a numpy call's "
                "shape rule does not follow numpy: README, When things go wrong)")
    return None


class Tally:
    """A sweep's rows, summed up for the end of the sweep: one warning line per kind of disagreement."""

    def __init__(self) -> None:
        self.differing: list[tuple[str, str]] = []  # (cell, its differences)
        self.unavailable: dict[str, list[str]] = {}  # reason -> cells

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        seen: set[str] = set()
        for row in rows:
            cell = str(row.get("cell"))
            if cell in seen or row.get("status") not in (None, "ok"):
                continue
            reason = row.get("prediction_unavailable") or ""
            if reason:
                seen.add(cell)
                self.unavailable.setdefault(reason, []).append(cell)
            elif prediction_matches(row) is False:
                seen.add(cell)
                self.differing.append((cell, "; ".join(differences(row))))

    def warnings(self) -> list[str]:
        out = []
        if self.differing:
            cell, what = self.differing[0]
            more = f" ({len(self.differing)} cells; the first shown)" if len(self.differing) > 1 else ""
            out.append(f"the prediction differs from the ledger in cell {cell}: {what}{more} (a numpy call's shape "
                       "rule does not follow numpy: README, When things go wrong)")
        for reason, cells in self.unavailable.items():
            which = f"cell {cells[0]}" if len(cells) == 1 else f"{len(cells)} cells (first {cells[0]})"
            out.append(f"prediction unavailable for {which}, measured anyway: {reason}")
        return out


__all__ = ["COMPARED", "Tally", "differences", "prediction_matches", "row_warning", "unavailable_prediction"]

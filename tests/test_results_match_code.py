"""The committed results are tied to the committed code: every cell of every committed study is predicted again
with today's predictor (which equals the ledger byte for byte, tests/test_predict.py) and must give the ledger
figures that study recorded. Any change in what the engine keeps, in a family's model or in the ledger shows up
here without running a single step; regenerate the studies (`make results`) when it does.

A shape-only study's rows (a spec's `measure = false`) have no ledger columns: their predicted columns must be what
`predict` gives today. Such a study has hundreds of cells; every SAMPLE_EVERY-th is checked here, every one in the
slow test.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from memstudy.measure.predict import predict, predicted_account, predicted_row
from memstudy.nn.models.registry import get_family, normalize

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent.name for p in (ROOT / "results").glob("*/runs.csv"))
# ledger columns of a row, and how the predicted account gives each
LEDGER_COLUMNS = {
    "parameter_bytes": lambda a: a.registered_bytes["parameter"],
    "optimizer_state_bytes": lambda a: a.registered_bytes["optimizer_state"],
    "input_bytes": lambda a: a.registered_bytes["input"],
    "peak_bytes": lambda a: a.peak_bytes,
    "step_peak_bytes": lambda a: a.step_peak_bytes,
    "activation_bytes": lambda a: a.activation_bytes,
    "saved_tensors": lambda a: a.saved_tensors,
    "recomputed_ops": lambda a: a.recomputed_ops,
    **{f"peak_{c}_bytes": (lambda c: lambda a: a.peak_by_category[c])(c)
       for c in ("parameter", "gradient", "optimizer_state", "input", "activation", "temporary", "output")},
}


SAMPLE_EVERY = 32  # the fast test's share of a shape-only study's cells


def _value(field, text: str):
    if text == "":
        return None
    if field.type is bool:
        return text == "True"
    return field.type(text)


def cells(study: str, shape_only: bool = False) -> list[tuple[str, dict, dict]]:
    """(cell id, config, the first ok row's ledger columns) for every ok cell of a committed study; with `shape_only`,
    (cell id, config, its predicted columns) for every ok shape-only cell."""
    found: dict[str, tuple[dict, dict]] = {}
    with open(ROOT / "results" / study / "runs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("status") != "ok" or row["cell"] in found or (row.get("shape_only") == "True") != shape_only:
                continue
            family = get_family(row.get("model") or "mlp")
            config = {"model": family.name}
            # a column the file lacks (a field added since, e.g. LoRA's) is the field's default
            config.update({f.name: _value(f, row.get(f.name, "")) for f in family.all_fields() if row.get(f.name, "") != ""
                           or f.default is None})
            columns = PREDICTED_COLUMNS if shape_only else LEDGER_COLUMNS
            ledger = {k: int(float(row[k])) for k in columns if row.get(k, "") != ""}
            found[row["cell"]] = (config, ledger)
    return [(cid, config, ledger) for cid, (config, ledger) in found.items()]


PREDICTED_COLUMNS = tuple(k for k in predicted_row({}) if k.endswith("_bytes"))


def test_every_study_has_cells():
    assert STUDIES and all(cells(study) or cells(study, shape_only=True) for study in STUDIES)


def _shape_only_mismatches(study: str, every: int) -> list[str]:
    mismatches = []
    for cid, raw, recorded in cells(study, shape_only=True)[::every]:
        predicted = predicted_row(predict(normalize(raw)))
        diff = {k: (v, predicted[k]) for k, v in recorded.items() if predicted[k] != v}
        if diff or not recorded:
            mismatches.append(f"{cid}: {diff or 'no predicted columns'}")
    return mismatches


SHAPE_ONLY = [s for s in STUDIES if cells(s, shape_only=True)]


@pytest.mark.parametrize("study", SHAPE_ONLY)
def test_shape_only_rows_are_what_the_code_predicts_sampled(study):
    mismatches = _shape_only_mismatches(study, SAMPLE_EVERY)
    assert not mismatches, f"{len(mismatches)} sampled cells of results/{study} differ from today's prediction " \
                           f"(recorded, predicted): " + "; ".join(mismatches[:3])


@pytest.mark.slow
@pytest.mark.parametrize("study", SHAPE_ONLY)
def test_shape_only_rows_are_what_the_code_predicts(study):
    mismatches = _shape_only_mismatches(study, 1)
    assert not mismatches, f"{len(mismatches)} cells of results/{study} differ from today's prediction " \
                           f"(recorded, predicted): " + "; ".join(mismatches[:3])


@pytest.mark.parametrize("study", STUDIES)
def test_committed_ledger_figures_are_what_the_code_predicts(study):
    mismatches = []
    for cid, raw, recorded in cells(study):
        account = predicted_account(normalize(raw))
        predicted = {k: int(get(account)) for k, get in LEDGER_COLUMNS.items() if k in recorded}
        if predicted != recorded:
            diff = {k: (recorded[k], predicted[k]) for k in recorded if recorded[k] != predicted[k]}
            mismatches.append(f"{cid}: {diff}")
    assert not mismatches, f"{len(mismatches)} cells of results/{study} differ from today's code " \
                           f"(recorded, predicted): " + "; ".join(mismatches[:3])

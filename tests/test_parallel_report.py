"""Shape-only sweeps (`[run] measure = false`) and the parallelism finding (memstudy/findings/parallel.py).

A shape-only cell's rows are its prediction: no process is started, the predicted columns are `predict`'s, the ledger's,
the probes' and the clock's columns are empty, `shape_only` is true, and the report says so and leaves out the
sections that read a measured step. The finding's sentences are computed from the rows: change a row, the sentence
changes. The committed shape-only specs' cells each predict.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from memstudy.config import normalize
from memstudy.findings import parallel
from memstudy.measure.predict import predict, predicted_row
from memstudy.report.build import write_report
from memstudy.report.context import Study
from memstudy.report.document import Paragraph, Table
from memstudy.report.load import load_runs, summarize
from memstudy.run.results.resume import SweepError
from memstudy.run.spec import SpecError, cell_id, load_spec, parse_spec
from memstudy.run.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
SPECS = ("parallel_plan_gpt", "parallel_plan_llama")
GRID = {"model": "gpt", "tensor_parallel": [1, 2], "sequence_parallel": [False, True], "zero": [0, 3],
        "data_parallel": [1, 2], "depth": 2, "width": 64, "heads": 8, "seq_len": 64, "vocab": 128, "dropout": 0.1,
        "batch_size": 4, "dtype": "bfloat16", "master_weights": True, "optimizer": "adam"}
MEASURED_COLUMNS = ("peak_bytes", "step_peak_bytes", "activation_bytes", "peak_activation_bytes",
                    "max_gradient_bytes", "tracemalloc_step_peak_bytes", "rss_step_peak_bytes", "step_seconds")


def _spec(measure: bool = False, **grid):
    return parse_spec({"study": {"name": "plan"}, "grid": {**GRID, **grid},
                       "run": {"repeats": 1, "measure": measure, "skip_refused": True}}, name="plan")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A shape-only sweep of a small GPT; the cell command would fail if any cell were started."""
    out = tmp_path_factory.mktemp("plan")
    outcome = run_sweep(_spec(), out, progress=False, cell_command=["false"])
    assert (outcome.ok, outcome.failed, outcome.skipped) == (12, 0, 0)
    return out


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "runs.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_spec_option_is_checked_and_decides_the_hash():
    assert _spec().measure is False and _spec(measure=True).measure is True
    assert _spec().hash != _spec(measure=True).hash
    with pytest.raises(SpecError, match="run.measure must be true or false"):
        parse_spec({"grid": GRID, "run": {"measure": "no"}}, name="plan")


def test_a_shape_only_cell_is_its_prediction_and_nothing_measured(folder):
    rows = _rows(folder)
    configs = {cell_id(c): c for c in _spec().cells()}
    assert len(rows) == 12 and {r["cell"] for r in rows} == set(configs)
    for row in rows:
        expected = predicted_row(predict(configs[row["cell"]]))
        assert row["status"] == "ok" and row["shape_only"] == "True"
        for column, value in expected.items():
            assert row[column] == ("" if value is None else str(value)), column
        assert all(row[c] == "" for c in MEASURED_COLUMNS)
        assert row["prediction_matches"] == ""


def test_a_folder_refuses_the_other_kind_of_rows(folder, tmp_path):
    with pytest.raises(SweepError, match="run.measure"):
        run_sweep(_spec(measure=True), folder, progress=False, cell_command=["false"])


def test_shape_only_rows_load_in_the_report(folder):
    written = write_report(folder)
    text = (folder / "report.md").read_text()
    assert "Every figure below is predicted, none measured" in text
    assert "## Parallelism: one rank's memory, category by category" in text
    assert "All 12 cells are predicted" in text
    for measured in ("## Peak memory", "## What is live at the peak", "## Do the probes"):
        assert measured not in text
    assert folder / "parallel_categories.png" in written


def _study(rows: pd.DataFrame, out: Path) -> Study:
    return Study(out, rows, summarize(rows))


def _paragraphs(study: Study) -> str:
    return "\n".join(b.text for b in parallel.blocks(study) if isinstance(b, Paragraph))


def test_the_sentences_are_computed_from_the_rows(folder):
    runs = load_runs(folder)
    before = _paragraphs(_study(runs, folder))
    assert "no change cuts it to half or less" in before.split("**activation**")[1].split(";")[0]
    assert "cut to at most half by N 2 (at ZeRO 3)" in before.split("**optimizer state**")[1].split(";")[0]
    assert "(so: the layers' terms" in before
    changed = runs.copy()
    t2 = (changed["tensor_parallel"] == 2) & ~changed["sequence_parallel"].astype(bool)
    changed.loc[t2, "predicted_activation_bytes"] = 1  # t 2 now holds fewer activations than the paper's layers
    zero3 = (changed["zero"] == 3) & (changed["data_parallel"] == 2)
    changed.loc[zero3, "predicted_peak_optimizer_state_bytes"] *= 4  # and ZeRO 3 no longer cuts the optimiser state
    after = _paragraphs(_study(changed, folder))
    assert "cut to at most half by t 2" in after.split("**activation**")[1].split(";")[0]
    assert "N 2 (at ZeRO 3)" not in after.split("**optimizer state**")[1].split(";")[0]
    assert "(not so)" in after and "(so: the layers' terms" not in after


def test_the_zero_table_is_the_papers_formula_beside_the_rows(folder):
    study = _study(load_runs(folder), folder)
    table = next(b for b in parallel.blocks(study) if isinstance(b, Table) and b.header[0] == "N")
    for row in table.rows:
        n, stage, psi = int(row[0].text), int(row[1].text), int(row[2].value)
        assert row[3].value == pytest.approx(parallel.zero_states_bytes(psi, n, stage))
    assert [(int(r[0].text), int(r[1].text)) for r in table.rows] == [(1, 0), (1, 3), (2, 0), (2, 3)]


def test_one_f_one_b_on_one_stage_holds_one_microbatch():
    """Gradient accumulation (p 1, 1f1b, m microbatches) holds one microbatch's layers at a time, as the ledger does;
    the old expression counted all m (this fails on the code before the fix)."""
    base = {"model": "gpt", "depth": 2, "width": 64, "heads": 8, "seq_len": 64, "vocab": 128, "dropout": 0.1,
            "batch_size": 8, "microbatches": 8, "dtype": "bfloat16", "optimizer": "adam"}
    one_f = normalize({**base, "schedule": "1f1b"})
    gpipe = normalize({**base, "schedule": "gpipe"})
    assert parallel.formula_activations(gpipe) == 8 * parallel.formula_activations(one_f)
    assert parallel.formula_activations(one_f) <= predict(one_f)["predicted_activation_bytes"] \
        < parallel.formula_activations(gpipe)


def test_zero_table_one_formulas():
    psi = 7.5e9
    assert [parallel.zero_states_bytes(psi, 64, s) / 1e9 for s in range(4)] == pytest.approx(
        [120, 31.40625, 16.640625, 1.875])


def _spec_cells(name: str) -> list[dict]:
    return load_spec(ROOT / "experiments" / f"{name}.toml").cells()


@pytest.mark.parametrize("name", SPECS)
def test_the_shape_only_specs_are_shape_only_and_their_cells_predict_sampled(name):
    spec = load_spec(ROOT / "experiments" / f"{name}.toml")
    assert spec.measure is False
    # one cell here; tests/test_results_match_code.py compares every 32nd cell's prediction with its committed row
    assert predict(spec.cells()[-1])["predicted_peak_bytes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_every_cell_of_the_shape_only_specs_predicts(name):
    for config in _spec_cells(name):
        assert predict(config)["predicted_peak_bytes"] > 0


def test_strategies_are_compared_within_one_model(folder):
    """Two models in one study (results/parallel has a GPT and a Llama): a pair is two cells of the same model, so a
    second model three times the size leaves every ratio as it was (pairs across models would give 3× and ⅓×)."""
    cells = parallel.figures(_study(load_runs(folder), folder))
    other = cells.copy()
    other["model"], other["cell"] = "other", other["cell"] + "-other"
    for column in [c for c in cells.columns if c.startswith("peak") or c in parallel.CATEGORIES]:
        other[column] = other[column] * 3
    alone, both = parallel.pair_ratios(cells), parallel.pair_ratios(pd.concat([cells, other], ignore_index=True))
    assert list(both["pairs"]) == [2 * n for n in alone["pairs"]]
    for c in ("parameter", "optimizer_state", "activation", "peak"):
        flat = [[x for r in frame[c] if r is not None for x in r[:3]] for frame in (both, alone)]
        assert flat[0] == pytest.approx(flat[1])
    assert [title for title, _ in parallel.model_groups(pd.concat([cells, other]))] == ["model gpt", "model other"]

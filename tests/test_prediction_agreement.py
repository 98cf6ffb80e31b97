"""Where the prediction cannot follow numpy, say so (issue 21, items 2 and 8).

- a custom op calling np.einsum is predicted byte for byte (numpy's einsum returns views and lays results out
  by its iterator; the shape-only arrays follow it);
- every measured row says whether its prediction matched the ledger (`prediction_matches`), and where it does
  not, `memstudy run` shows it in its table and warns on stderr, naming the figures;
- a numpy function without a shape rule no longer blocks the measurement: the step is measured, the row says
  the prediction is unavailable and why (the function, the user's file and op), with a warning; a rule the user
  registers from their own file (`meta.implements`) makes it predicted.

The user families live in tests/families/numpy_ops.py; those that register a rule (interp_rule.py,
interp_wrong_rule.py) are only ever imported in a subprocess, so no test here depends on another's registration.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import memstudy
from memstudy.config import normalize
from memstudy.measure.predict import predicted_account
from test_predict import assert_same_account, measured_account

ROOT = Path(__file__).resolve().parents[1]
OPS = "tests/families/numpy_ops.py"
RULE = "tests/families/interp_rule.py:InterpWithRuleFamily"
WRONG = "tests/families/interp_wrong_rule.py:InterpWrongRuleFamily"
SMALL = ("--batch", "4", "--width", "8")


def cli(*args: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "memstudy", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("family", ["EinsumViewFamily", "EinsumSquareFamily"])
def test_a_custom_op_calling_einsum_is_predicted_exactly(family, mode, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = normalize({"model": f"{OPS}:{family}", "batch_size": 4, "mode": mode})
    assert_same_account(predicted_account(config), measured_account(config))


def test_a_measured_row_says_its_prediction_matched(monkeypatch):
    from memstudy.measure.cell import measure

    monkeypatch.chdir(ROOT)
    (row,) = measure({"model": f"{OPS}:EinsumViewFamily", "batch_size": 4})
    assert row["prediction_matches"] is True and row["prediction_unavailable"] == ""
    assert row["step_peak_bytes"] == row["predicted_step_peak_bytes"]


def test_run_shows_a_prediction_that_differs_in_the_table_the_row_and_a_warning():
    shown = cli("run", "--model", WRONG, *SMALL, "--mode", "both")
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout
    (agreement,) = [line for line in table.splitlines() if line.startswith("prediction = ledger")]
    assert agreement.split()[-2:] == ["differs", "yes"], table  # inference saves nothing: it still matches
    (line,) = warning_lines(shown.stderr)
    assert line.startswith("warning: train: ") and "prediction differs from the ledger" in line, line
    assert "activations held for backward" in line and line[len("warning: "):] in table, table  # said in both
    as_json = cli("run", "--model", WRONG, *SMALL, "--json")
    assert as_json.returncode == 0, as_json.stderr
    row = json.loads(as_json.stdout.splitlines()[0])
    assert row["prediction_matches"] is False
    assert row["step_peak_bytes"] != row["predicted_step_peak_bytes"]
    (line,) = warning_lines(as_json.stderr)  # never only in --json
    assert f"{row['step_peak_bytes']:,} B measured" in line and f"{row['predicted_step_peak_bytes']:,} B predicted" \
        in line, line


def test_an_unknown_numpy_function_is_measured_anyway():
    done = cli("run", "--model", f"{OPS}:InterpFamily", *SMALL, "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.splitlines()[0])
    assert row["status"] == "ok" and row["activation_bytes"] > 0 and row["step_peak_bytes"] > 0
    assert row["predicted_step_peak_bytes"] is None and row["prediction_matches"] is None
    reason = row["prediction_unavailable"]
    assert "numpy.interp" in reason and "numpy_ops.py:" in reason and "Interp.forward" in reason, reason
    (line,) = warning_lines(done.stderr)
    assert "prediction unavailable" in line and "numpy.interp" in line and "Interp.forward" in line, line
    table = cli("run", "--model", f"{OPS}:InterpFamily", *SMALL)
    assert table.returncode == 0, table.stderr
    assert "unavailable" in table.stdout and "numpy.interp" in table.stdout, table.stdout


def test_predict_without_a_rule_is_one_line_exit_2():
    done = cli("predict", "--model", f"{OPS}:InterpFamily", *SMALL)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "numpy.interp" in done.stderr


def test_a_rule_registered_in_the_users_file_predicts_the_step():
    done = cli("run", "--model", RULE, *SMALL, "--json", "--mode", "both")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 2 and all(r["prediction_matches"] is True for r in rows)
    assert all(r["predicted_step_peak_bytes"] == r["step_peak_bytes"] for r in rows)
    assert not warning_lines(done.stderr)
    predicted = cli("predict", "--model", RULE, *SMALL, "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predicted_peak_bytes"] == rows[0]["peak_bytes"]


def test_a_sweep_measures_a_cell_it_cannot_predict_and_says_so(tmp_path):
    spec = tmp_path / "interp.toml"
    spec.write_text(f'[study]\nname = "interp"\n\n[grid]\nmodel = ["{ROOT / OPS}:InterpFamily", "{ROOT / RULE}"]\n'
                    'width = 8\nbatch_size = 4\n\n[run]\nrepeats = 1\nbudget = "1GiB"\ntimeout_seconds = 120\n')
    done = cli("sweep", str(spec), "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from memstudy.run.results.runs import read_runs

    rows = {r["model"].rpartition(":")[2]: r for r in read_runs(tmp_path / "out" / "runs.csv").rows}
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert "numpy.interp" in rows["InterpFamily"]["prediction_unavailable"]
    assert rows["InterpFamily"]["prediction_matches"] == "" and rows["InterpWithRuleFamily"]["prediction_matches"] == \
        "True"
    assert any("prediction unavailable" in line and "numpy.interp" in line for line in warning_lines(done.stderr))
    reported = cli("report", str(tmp_path / "out"), "--no-figures", cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr


def _interp_model():
    import importlib.util

    spec = importlib.util.spec_from_file_location("numpy_ops_notebook", ROOT / OPS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OpMLP(module.Interp, 6, 8, 3, "float32", 0)


def test_measure_model_measures_a_model_it_cannot_predict():
    model = _interp_model()
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    y = np.arange(4) % 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = memstudy.measure_model(model, x, y)
    (row,) = result.rows
    assert result.predicted is None and row["activation_bytes"] > 0 and row["predicted_peak_bytes"] is None
    assert "numpy.interp" in result.prediction_unavailable and "Interp.forward" in result.prediction_unavailable
    assert row["prediction_unavailable"] == result.prediction_unavailable and row["prediction_matches"] is None
    assert [w for w in caught if "numpy.interp" in str(w.message)], [str(w.message) for w in caught]


def test_the_new_row_fields_are_documented_and_old_files_load(tmp_path):
    from memstudy.run.results.fields import ROW_FIELDS
    from memstudy.report.load import load_runs
    from memstudy.run.results.runs import format_rows
    from test_report import grid_rows

    source = (ROOT / "memstudy" / "run" / "results" / "fields.py").read_text()
    for field in ("prediction_matches", "prediction_unavailable"):
        assert field in ROW_FIELDS and f"# {field}:" in source
    rows = grid_rows(depths=(1, 2), batches=(16,), repeats=1)
    columns = [c for c in ("experiment", "cell", *ROW_FIELDS) if c not in ("prediction_matches",
                                                                             "prediction_unavailable")]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "runs.csv").write_text(format_rows(rows, columns, header=True))
    frame = load_runs(tmp_path / "old")
    assert len(frame) == 4 and list(frame["prediction_unavailable"]) == [""] * 4
    # an older row that has both figures says whether they matched (the same comparison as a new row's)
    expected = [r["peak_bytes"] == r["predicted_peak_bytes"] and r["step_peak_bytes"] == r["predicted_step_peak_bytes"]
                and r["activation_bytes"] == r["predicted_activation_bytes"] for r in rows]
    assert list(frame["prediction_matches"]) == expected


def test_a_cell_without_a_prediction_takes_the_whole_budget():
    """It runs alone (it reserves the budget) under an address-space limit of the budget, never unchecked."""
    from memstudy.autograd.meta import Unsupported
    from memstudy.run.budget import BudgetCheck
    from memstudy.run.launcher import process_baseline

    def cannot_predict(config):
        raise Unsupported("numpy.interp")

    def baseline():
        return process_baseline(dict(os.environ))

    budget = 1 << 30
    verdict = BudgetCheck(budget, "test", cannot_predict, baseline).check({"mode": "train", "depth": 1})
    assert not verdict.error and not verdict.skip_reason and verdict.predicted is None
    assert verdict.need.total_bytes == budget
    assert verdict.need.own_bytes == budget - verdict.need.resident_baseline_bytes
    tiny = BudgetCheck(1 << 20, "test", cannot_predict, baseline).check({"mode": "train", "depth": 1})
    assert tiny.skip_reason.startswith("its step cannot be predicted") and "exceeds" in tiny.skip_reason

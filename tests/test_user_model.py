"""Your own model: a family in your own file works wherever a built-in one does, and a model built in a
notebook is measured and predicted in one call (README "Your own model")."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import memstudy
from memstudy.config import ConfigError, normalize
from memstudy.measure.predict import predicted_account
from test_predict import assert_same_account, measured_account

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/residual.py:ResidualFamily"


def cli(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "memstudy", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def load_example():
    spec = importlib.util.spec_from_file_location("residual_example", ROOT / "examples" / "residual.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("raw", [
    dict(depth=3, width=16, batch_size=4),
    dict(depth=2, width=8, batch_size=3, optimizer="adam", policy="half"),
    dict(depth=2, width=8, batch_size=3, mode="inference", dtype="float64"),
    dict(depth=4, width=8, batch_size=2, policy="all", optimizer="momentum"),
])
def test_a_user_family_is_predicted_exactly(raw, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = normalize({"model": EXAMPLE, **raw})
    assert_same_account(predicted_account(config), measured_account(config))


def test_user_family_through_run_predict_and_graph(tmp_path):
    args = ["--model", EXAMPLE, "--depth", "2", "--width", "16", "--batch", "4", "--in-features", "8"]
    ran = cli("run", *args, "--json")
    assert ran.returncode == 0, ran.stderr
    row = json.loads(ran.stdout.splitlines()[0])
    assert row["model"] == EXAMPLE and row["in_features"] == 8 and row["classes"] == 10
    assert row["activation_bytes"] == row["predicted_activation_bytes"] > 0
    predicted = cli("predict", *args, "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predicted_peak_bytes"] == row["peak_bytes"]
    dot = tmp_path / "g.dot"
    drawn = cli("graph", *args, "--out", str(dot))
    assert drawn.returncode == 0, drawn.stderr
    assert "embed.weight" in dot.read_text() and "ResidualFamily" in dot.read_text()


def test_user_family_in_a_spec_sweeps_and_reports(tmp_path):
    spec = tmp_path / "mine.toml"
    spec.write_text(f'[study]\nname = "mine"\n\n[grid]\nmodel = "{ROOT / "examples" / "residual.py"}:ResidualFamily"\n'
                    'depth = [1, 2]\nwidth = 8\nbatch_size = 4\nmode = ["train", "inference"]\n\n'
                    '[run]\nrepeats = 1\nbudget = "1GiB"\ntimeout_seconds = 120\njobs = 1\n')
    done = cli("sweep", str(spec), "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "out" / "runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and all(",ok," in r for r in rows[1:])
    assert "classes" in rows[0].split(",")  # the user family's own field is a column of its own
    reported = cli("report", str(tmp_path / "out"), "--no-figures", cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr


@pytest.mark.parametrize("model, message", [
    ("examples/missing.py:X", "no file"),
    ("examples/residual.py:Nope", "has no Nope"),
    ("examples/residual.py:ResidualMLP", "is not a memstudy.nn.models.Family"),
    ("tests/families/broken.py:Broken", "importing"),
    ("nonsense", "model must be one of"),
])
def test_bad_user_models_are_one_line_exit_2(model, message, tmp_path):
    broken = ROOT / "tests" / "families" / "broken.py"
    assert broken.exists()
    done = cli("predict", "--model", model)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and message in done.stderr


def test_a_user_family_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="checkpoint"):
        normalize({"model": str(ROOT / "examples" / "residual.py") + ":ResidualFamily", "checkpoint": "sqrt"})


def test_measure_model_built_in_a_notebook():
    example = load_example()
    model = example.ResidualMLP(12, 16, 3, 5, "float64", 0)
    before = [p.data.copy() for p in model.parameters()]
    x = np.random.default_rng(0).standard_normal((6, 12))
    y = np.arange(6) % 5
    result = memstudy.measure_model(model, x, y, optimizer="adam", repeats=2)
    assert len(result.rows) == 2
    row = result.rows[0]
    # the prediction ran on a shape-only copy and agrees with the ledger byte for byte
    assert_same_account(result.predicted, result.account)
    assert row["peak_bytes"] == row["predicted_peak_bytes"] and row["activation_bytes"] > 0
    assert row["optimizer_state_bytes"] == 2 * row["parameter_bytes"]
    assert result.breakdown == result.account.peak_by_category
    assert result.timeline[-1]["live_bytes"] == sum(result.timeline[-1][f"{c}_bytes"] for c in result.breakdown)
    assert all(type(p.data) is np.ndarray for p in model.parameters())  # the model was not swapped
    assert any(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))  # Adam trained it


def test_measure_model_rejects_bad_arguments():
    example = load_example()
    model = example.ResidualMLP(4, 4, 1, 2, "float32", 0)
    x = np.zeros((2, 4), dtype=np.float32)
    for kwargs in ({"optimizer": "lbfgs"}, {"mode": "eval"}, {"policy": "most"}, {"repeats": 0}):
        with pytest.raises(ConfigError):
            memstudy.measure_model(model, x, np.zeros(2, dtype=np.int64), **kwargs)

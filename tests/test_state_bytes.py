"""What a configuration holds before its step (parameters, trainable parameters, batch) is known without building it,
and a size whose state alone exceeds the budget is refused at once, whatever the size.

Each family's closed form (`Family.state_bytes`) is checked against what the ledger registers for the built model
over every family's grid (tests/test_predict.py's, which covers every built-in family, and a user's file that
declares it); the optimiser's state is STATE_COPIES times the trainable bytes. Where a family declares nothing, the
shape-only build is counted instead, with repeated blocks built once and counted as many: checked against the
closed forms at a depth of 10⁶. The refusals of `run`, `predict --budget` and a sweep's cell at depth 10⁹ and width
10⁵ are one line, exit status 2 (the cell: skipped), within a bound generous enough for a busy machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memstudy.config import get_family, normalize
from memstudy.measure.predict import predict, state_bytes
from memstudy.optim import STATE_COPIES
from test_predict import FAMILY_CONFIGS, rotate, grid

ROOT = Path(__file__).resolve().parents[1]
DECLARED = str(ROOT / "tests" / "families" / "declared.py") + ":DeclaredFamily"
UNDECLARED = str(ROOT / "examples" / "residual.py") + ":ResidualFamily"
ABSURD = ["--depth", "1000000000", "--width", "100000"]
REFUSAL_SECONDS = 5.0  # wall-clock bound for a refusal, process start included: generous on a loaded machine

GRID = {**FAMILY_CONFIGS,
        "declared": rotate([{"model": DECLARED, **c} for c in grid(
            depth=(1, 5), checkpoint=("none", "every:2"), mode=("train", "inference"))],
            optimizer=("sgd", "momentum", "adam"), dtype=("float32", "float64"), in_features=(3, 12),
            batch_size=(1, 6)),
        "undeclared": [dict(model=UNDECLARED, depth=3, width=8, in_features=5, batch_size=2, mode=m)
                       for m in ("train", "inference")]}


def cases() -> list:
    return [pytest.param(raw, id=f"{family}-{i}") for family, configs in GRID.items()
            for i, raw in enumerate(configs)]


@pytest.mark.parametrize("raw", cases())
def test_state_bytes_are_what_the_ledger_registers(raw, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = normalize(raw)
    held = state_bytes(config)
    prediction = predict(config)
    assert held.parameter_bytes == prediction["parameter_bytes"]
    assert held.input_bytes == prediction["input_bytes"]
    assert held.optimizer_state_bytes(config) == prediction["optimizer_state_bytes"]
    copies = STATE_COPIES[config["optimizer"]]
    low = held.low_trainable_bytes  # 16-bit trainables: with master weights, a float32 copy and float32 state each
    expected = copies * (held.trainable_bytes - low) + (2 * (1 + copies) if config["master_weights"] else copies) * low
    expected += 8 if config["loss_scale"] == "dynamic" else 0  # the loss scaler's scale and growth counter
    assert prediction["optimizer_state_bytes"] == (expected if config["mode"] == "train" else 0)
    assert 0 < held.trainable_bytes <= held.parameter_bytes
    assert held.total_bytes(config) <= prediction["predicted_peak_bytes"]  # a bound the budget may refuse by


def test_every_builtin_family_declares_its_state_bytes():
    from memstudy.nn.models.registry import builtin_names

    for name in builtin_names():
        assert get_family(name).state_bytes(normalize({"model": name})) is not None, name


@pytest.mark.parametrize("raw", [dict(model="mlp", depth=10 ** 6, width=64, checkpoint="sqrt"),
                                 dict(model="gpt", depth=10 ** 6, width=32, heads=4, bias=False),
                                 dict(model=DECLARED, depth=10 ** 6, checkpoint="every:3", mode="inference")])
def test_a_repeated_block_built_once_and_counted_as_many_gives_the_closed_form(raw, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = normalize(raw)
    family = get_family(config["model"])
    declared = family.state_bytes(config)
    monkeypatch.setattr(family, "state_bytes", lambda config: None)
    assert state_bytes(config) == declared


def test_gpt2_small_has_its_published_parameter_count():
    config = normalize(dict(model="gpt", depth=12, width=768, heads=12, seq_len=1024, vocab=50257))
    assert state_bytes(config).parameter_bytes == 124_439_808 * 4  # REFERENCES.md: GPT-2 small, 1024 positions


def cli(*args: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "memstudy", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)
    return done, time.monotonic() - start


@pytest.mark.parametrize("args", [
    ["run", *ABSURD],
    ["run", "--model", "gpt", "--depth", "1000000000", "--width", "12288", "--heads", "96"],
    ["predict", *ABSURD, "--budget", "4GiB"],
    ["predict", "--model", DECLARED, *ABSURD, "--budget", "75%"],
])
def test_an_absurd_size_is_refused_at_once_in_one_line(args):
    done, seconds = cli(*args)
    assert seconds < REFUSAL_SECONDS, f"refused after {seconds:.1f} s"
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: its parameters")
    assert "alone need" in done.stderr and "exceeds the budget" in done.stderr


def test_an_absurd_cell_of_a_sweep_is_skipped_at_once(tmp_path):
    spec = tmp_path / "absurd.toml"
    spec.write_text('[study]\nname = "absurd"\n\n[grid]\ndepth = 1000000000\nwidth = 100000\n\n'
                    '[run]\nrepeats = 1\nbudget = "4GiB"\ntimeout_seconds = 60\njobs = 1\n')
    done, seconds = cli("sweep", str(spec), "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert seconds < 2 * REFUSAL_SECONDS, f"took {seconds:.1f} s"  # the sweep's own start, env and files too
    assert done.returncode == 0, done.stderr
    assert "1 skipped" in done.stdout
    rows = (tmp_path / "out" / "runs.csv").read_text()
    assert ",skipped," in rows and "alone need" in rows


def test_a_deep_prediction_answers_or_says_how_long_it_would_take():
    done, _ = cli("predict", "--model", UNDECLARED, "--depth", "10000000", "--max-seconds", "5")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: predicting it would take about ") and "over the 5 s allowed" in done.stderr
    done, seconds = cli("predict", "--depth", "1000000000", "--checkpoint", "sqrt", "--json", "--max-seconds", "5")
    assert done.returncode == 0, done.stderr
    assert seconds < REFUSAL_SECONDS

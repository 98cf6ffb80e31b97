"""The `memstudy` command, run as a user runs it: `python -m memstudy ...` in a subprocess."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from memstudy.measure.ledger import CATEGORIES
from memstudy.run.results.fields import ROW_FIELDS

SIZE = ["--depth", "8", "--width", "256", "--batch", "64"]


def memstudy(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def ok(*args: str) -> str:
    done = memstudy(*args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def json_rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def train_rows():
    return json_rows(ok("run", *SIZE, "--mode", "train", "--json"))


@pytest.fixture(scope="module")
def inference_rows():
    return json_rows(ok("run", *SIZE, "--mode", "inference", "--json"))


@pytest.fixture(scope="module")
def both_plain():
    return ok("run", *SIZE, "--mode", "both")


@pytest.fixture(scope="module")
def both_by_layer(tmp_path_factory):
    timeline = tmp_path_factory.mktemp("timeline") / "steps.csv"
    stdout = ok("run", *SIZE, "--mode", "both", "--by-layer", "--timeline", str(timeline))
    return stdout, timeline


# --------------------------------------------------------------------------------------------------
# run --json
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "inference"])
def test_run_json_rows_have_every_field(mode, train_rows, inference_rows):
    rows = {"train": train_rows, "inference": inference_rows}[mode]
    assert len(rows) == 1  # --repeats 1
    row = rows[0]
    missing = [f for f in ROW_FIELDS if f not in row]
    assert not missing
    assert (row["mode"], row["depth"], row["width"], row["batch_size"], row["status"]) == (mode, 8, 256, 64, "ok")
    assert row["step_peak_bytes"] == row["peak_bytes"] - row["parameter_bytes"] - row["optimizer_state_bytes"] \
        - row["input_bytes"]


def test_train_peak_exceeds_inference_peak(train_rows, inference_rows):
    train, inference = train_rows[0], inference_rows[0]
    assert train["peak_bytes"] > inference["peak_bytes"]
    assert train["activation_bytes"] > 0 == inference["activation_bytes"]
    assert train["peak_gradient_bytes"] == train["parameter_bytes"] and inference["peak_gradient_bytes"] == 0


def test_predict_json_agrees_with_run_json(train_rows, inference_rows):
    """`predict --json` (no step run) against the ledger's fields of `run --json` (a measured step)."""
    for mode, rows in (("train", train_rows), ("inference", inference_rows)):
        prediction = json.loads(ok("predict", *SIZE, "--mode", mode, "--json"))
        row = rows[0]
        config = ["depth", "width", "in_features", "out_features", "batch_size", "activation", "bias", "dtype", "mode",
                  "optimizer", "seed"]
        assert {f: prediction[f] for f in config} == {f: row[f] for f in config}
        # predicted field -> the ledger's field of the measured step (baseline bytes are the ledger's registrations)
        ledger = {"parameter_bytes": "parameter_bytes", "optimizer_state_bytes": "optimizer_state_bytes",
                  "input_bytes": "input_bytes", "predicted_peak_bytes": "peak_bytes",
                  "predicted_step_peak_bytes": "step_peak_bytes", "predicted_activation_bytes": "activation_bytes",
                  "predicted_saved_tensors": "saved_tensors", "predicted_recomputed_ops": "recomputed_ops"}
        assert {p: prediction[p] for p in ledger} == {p: row[m] for p, m in ledger.items()}
        assert prediction["predicted_peak_by_category"] == {c: row[f"peak_{c}_bytes"] for c in CATEGORIES}
        # every parameter's gradient is alive at the end of a training step (the peak need not hold them all)
        assert prediction["gradient_bytes"] == (row["parameter_bytes"] if mode == "train" else 0)
        assert row["activation_bytes"] > 0 if mode == "train" else row["activation_bytes"] == 0


# --------------------------------------------------------------------------------------------------
# run, human output
# --------------------------------------------------------------------------------------------------
BREAKDOWN_LABELS = ("parameters", "optimizer state", "input", "gradients", "activations (held for backward)",
                    "temporaries", "output", "peak, total")


def test_run_both_prints_breakdown_and_ratio(both_plain):
    lines = both_plain.splitlines()
    header = next(line for line in lines if line.startswith("breakdown at the peak (ledger)"))
    assert header.split()[-2:] == ["train", "inference"]
    for label in BREAKDOWN_LABELS:
        assert any(line.startswith(label + " ") for line in lines), label
    ratio = [line for line in lines if line.startswith("train / inference peak: ")]
    assert len(ratio) == 1
    match = re.fullmatch(r"train / inference peak: (\d+\.\d\d)x \(.+ vs .+\)", ratio[0])
    assert match and float(match.group(1)) > 1
    assert "by layer" not in both_plain


def test_run_by_layer_adds_per_layer_tables(both_by_layer, both_plain):
    stdout, _ = both_by_layer
    lines = stdout.splitlines()
    for mode in ("train", "inference"):
        start = lines.index(f"by layer ({mode}, repeat 0)")
        assert lines[start + 1].split() == ["layer", "held", "for", "backward", "parameters", "gradients"]
        # each layer by the family's name for it (issue 21 item 9); the loss is outside every layer
        expected = [f"{i}: hidden {i}" for i in range(8)] + ["8: output"] + (["no layer"] if mode == "train" else [])
        assert [line[:len(name)] for line, name in zip(lines[start + 2:], expected)] == expected
    assert any(line.startswith("no layer: buffers of ops outside every layer_scope") for line in lines)
    # the rest of the report is still there
    assert any(line.startswith("train / inference peak: ") for line in lines)
    assert len(lines) > len(both_plain.splitlines())


def test_run_timeline_csv(both_by_layer):
    _, timeline = both_by_layer
    with open(timeline, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames
        rows = list(reader)
    assert columns == ["event", "phase", "op", "layer", "category", "delta_bytes", "live_bytes"] + [
        f"{c}_bytes" for c in CATEGORIES] + ["key", "buffer_op", "role", "shape", "dtype", "nbytes", "born", "died"]
    assert [int(r["event"]) for r in rows] == list(range(len(rows)))
    phases = [r["phase"] for r in rows]
    assert "forward" in phases and "backward" in phases  # the train step (the first mode)
    last_forward = max(i for i, p in enumerate(phases) if p == "forward")
    first_backward = min(i for i, p in enumerate(phases) if p == "backward")
    assert last_forward < first_backward
    for r in rows:
        assert int(r["live_bytes"]) == sum(int(r[f"{c}_bytes"]) for c in CATEGORIES)
    assert sum(int(r["delta_bytes"]) for r in rows) == int(rows[-1]["live_bytes"])
    # each buffer's columns: born at the event that adds its bytes, dead at the one that takes them away
    births = {r["key"]: r for r in rows if int(r["delta_bytes"]) > 0}
    deaths = {r["key"]: r for r in rows if int(r["delta_bytes"]) < 0}
    assert len(births) + len(deaths) == len(rows)
    for key, born in births.items():
        assert int(born["born"]) == int(born["event"]) and int(born["nbytes"]) == int(born["delta_bytes"])
        assert born["buffer_op"] == born["op"] and born["category"] and born["dtype"]
        if key in deaths:
            dead = deaths[key]
            assert int(born["died"]) == int(dead["event"]) > int(born["event"])
            assert dead["op"] == "free" and int(dead["delta_bytes"]) == -int(born["nbytes"])
            assert (dead["buffer_op"], dead["shape"], dead["born"]) == (born["buffer_op"], born["shape"], born["born"])
        else:
            assert born["died"] == ""  # alive after the step: the baseline, gradients, the loss


# --------------------------------------------------------------------------------------------------
# Bad input: one line `error: ...`, exit 2, no traceback, nothing on stdout, no cell run
# --------------------------------------------------------------------------------------------------
BAD = {
    "unknown activation": ["run", "--activation", "gelu"],
    "unknown dtype": ["run", "--dtype", "int8"],
    "unknown mode": ["run", "--mode", "sideways"],
    "unknown optimizer": ["run", "--optimizer", "rmsprop"],
    "depth 0": ["run", "--depth", "0"],
    "depth -1": ["run", "--depth", "-1"],
    "depth abc": ["run", "--depth", "abc"],
    "depth missing value": ["run", "--depth"],
    "batch -5": ["run", "--batch", "-5"],
    "batch 0": ["run", "--batch", "0"],
    "width 0": ["run", "--width", "0"],
    "width 1.5": ["predict", "--width", "1.5"],
    "classes 0": ["run", "--classes", "0"],
    "in-features 0": ["run", "--in-features", "0"],
    "repeats 0": ["run", "--repeats", "0"],
    "seed -1": ["run", "--seed", "-1"],
    "unknown flag": ["run", "--frobnicate"],
    "unknown command": ["frobnicate"],
    "no command": [],
    "over budget": ["run", "--depth", "8", "--width", "4096", "--budget", "1MiB"],
    "budget garbage": ["run", "--budget", "garbage"],
    "budget 0": ["run", "--budget", "0"],
    "budget 150%": ["run", "--budget", "150%"],
    "timeline folder missing": ["run", "--timeline", "{missing}/steps.csv"],
    "timeline is a folder": ["run", "--timeline", "{folder}"],
    "html folder missing": ["run", "--html", "{missing}/step.html"],
    "html is a folder": ["run", "--html", "{folder}"],
    "html unwritable": ["run", "--html", "/proc/memstudy-step.html"],  # even root cannot create files in /proc
    "predict mode both": ["predict", "--mode", "both"],
    "predict unknown dtype": ["predict", "--dtype", "int8"],
    "bias with a value": ["run", "--bias=yes"],
    "checkpoint every:0": ["run", "--checkpoint", "every:0"],
    "checkpoint every:1.5": ["run", "--checkpoint", "every:1.5"],
    "checkpoint garbage": ["predict", "--checkpoint", "sometimes"],
    "unknown policy": ["run", "--policy", "quarter"],
    "study --all with --spec": ["study", "--all", "--spec", "experiments/default.toml"],
    "abbreviated flag": ["run", "--wid", "64"],
    "abbreviated sweep flag": ["sweep", "experiments/default.toml", "--retry"],
    "abbreviated graph flag": ["graph", "--dep", "2"],
}


@pytest.mark.parametrize("args", list(BAD.values()), ids=list(BAD))
def test_bad_invocation_is_one_error_line_exit_2(args, tmp_path):
    args = [a.replace("{missing}", str(tmp_path / "missing")).replace("{folder}", str(tmp_path)) for a in args]
    done = memstudy(*args, timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ")


# --------------------------------------------------------------------------------------------------
# checkpointing and policies from the command line; study --all
# --------------------------------------------------------------------------------------------------
def test_predict_and_run_take_checkpoint_and_policy():
    args = ["--depth", "9", "--width", "32", "--batch", "16", "--checkpoint", "sqrt", "--policy", "half"]
    prediction = json.loads(ok("predict", *args, "--json"))
    assert (prediction["checkpoint"], prediction["policy"]) == ("sqrt", "half")
    assert prediction["predicted_recomputed_ops"] == 18
    row = json_rows(ok("run", *args, "--json"))[0]
    assert (row["checkpoint"], row["policy"], row["recomputed_ops"]) == ("sqrt", "half", 18)
    assert row["activation_bytes"] == prediction["predicted_activation_bytes"]
    assert row["peak_bytes"] == prediction["predicted_peak_bytes"]
    assert 0 < row["grad_rel_error"] < 5e-3
    text = ok("predict", *args)
    assert "checkpoint sqrt, policy half" in text and "ops recomputed (checkpointing)" in text


TINY_SPEC = """
[study]
name = "{name}"
[grid]
depth = 2
width = 16
batch_size = 8
checkpoint = {checkpoint}
[run]
repeats = 1
"""


def test_study_all_runs_every_spec_into_results(tmp_path):
    (tmp_path / "experiments").mkdir()
    for name, checkpoint in (("one", '"none"'), ("two", '["none", "sqrt"]')):
        (tmp_path / "experiments" / f"{name}.toml").write_text(TINY_SPEC.format(name=name, checkpoint=checkpoint))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    done = subprocess.run([sys.executable, "-m", "memstudy", "study", "--all", "--no-progress"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    for name in ("one", "two"):
        report = (tmp_path / "results" / name / "report.md").read_text()
        assert f"# Memory study: {name}" in report
    assert "### Gradient checkpointing" in (tmp_path / "results" / "two" / "report.md").read_text()
    assert "### Gradient checkpointing" not in (tmp_path / "results" / "one" / "report.md").read_text()
    empty = subprocess.run([sys.executable, "-m", "memstudy", "study", "--all"], cwd=tmp_path / "results",
                           capture_output=True, text=True, timeout=60, env=env)
    assert empty.returncode == 2 and empty.stderr.startswith("error: no experiments/*.toml")


def test_json_is_documented_as_json_lines():
    assert "JSON Lines" in ok("run", "--help")
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    assert "JSON Lines" in readme and "--json" in readme


def test_report_warns_about_a_torn_runs_csv_on_stderr(tmp_path):
    from memstudy.run.results.runs import format_rows
    from test_report import synthetic_row

    rows = [synthetic_row(depth, 16, mode, 0) for depth in (1, 2) for mode in ("train", "inference")]
    (tmp_path / "runs.csv").write_text(format_rows(rows, header=True)[:-20])
    done = memstudy("report", str(tmp_path), "--no-figures")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: runs.csv: its last line is cut off"), done.stderr

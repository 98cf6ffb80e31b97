"""Shared by the sweep tests: a fake cell (a tiny script that echoes rows and can be told to sleep, hang,
raise or die), a small spec, and checks on runs.csv. Import the fixtures by name into a test module."""
from __future__ import annotations

import csv
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from memstudy.run.results.fields import ROW_FIELDS
from memstudy.run.spec import cell_id, load_spec

FAKE_CELL = textwrap.dedent('''
    """A stand-in for memstudy.measure.cell: rows made up from the config, behaviour steered by env vars."""
    import json, os, signal, sys, time

    ROW_FIELDS = __ROW_FIELDS__  # inlined: the fake starts in milliseconds without importing numpy

    control = os.environ.get("FAKE_CELL_CONTROL")  # a file of settings, for cells on Dask workers started earlier
    if control and os.path.exists(control):
        with open(control) as fh:
            os.environ.update(json.load(fh))

    def matches(var, config):
        hook = os.environ.get(var)
        if not hook:
            return False
        name, _, value = hook.partition("=")
        return str(config.get(name)) == value

    request = json.loads(sys.stdin.read())
    repeats = request.pop("repeats")
    timeline = request.pop("timeline_path", None)
    log = os.environ.get("FAKE_CELL_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps({"config": request, "repeats": repeats, "pid": os.getpid(), "ppid": os.getppid(),
                                 "pandas": "pandas" in sys.modules,
                                 "malloc": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                                 "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}) + "\\n")
    started = time.time()
    time.sleep(float(os.environ.get("FAKE_CELL_SLEEP", "0")))
    if matches("FAKE_CELL_HANG", request):
        time.sleep(60)
    if matches("FAKE_CELL_DIE", request):
        os.kill(os.getpid(), signal.SIGKILL)
    if matches("FAKE_CELL_RAISE", request):
        sys.stderr.write("some noise\\nRuntimeError: a cell raised\\n")
        sys.exit(1)
    if timeline:
        with open(timeline, "w") as fh:
            fh.write("event,phase,op,layer,category,delta_bytes,live_bytes,parameter_bytes,activation_bytes\\n")
            fh.write("0,forward,linear,0,activation,64,64,0,64\\n")
    d, b, w = request["depth"], request["batch_size"], request["width"]
    for repeat in range(repeats):
        if repeat == 1 and matches("FAKE_CELL_PARTIAL", request):
            sys.stderr.write("ValueError: died after one repeat\\n")
            sys.exit(3)
        row = {k: None for k in ROW_FIELDS}
        row.update(request)
        act = d * b * w * 4 if request["mode"] == "train" else 0
        row.update(repeat=repeat, parameter_bytes=d * w * w * 4, optimizer_state_bytes=0, input_bytes=b * w * 4,
                   activation_bytes=act, peak_bytes=d * w * w * 4 + b * w * 4 + act + 2 * b * w * 4,
                   step_peak_bytes=act + 2 * b * w * 4, status="ok", error="")
        print(json.dumps(row), flush=True)
    spans = os.environ.get("FAKE_CELL_SPANS")
    if spans:
        with open(spans, "a") as fh:
            fh.write(f"{started} {time.time()}\\n")
''').replace("__ROW_FIELDS__", repr(ROW_FIELDS))

SPEC = """
[study]
name = "fake"

[grid]
depth = [1, 2, 3]
batch_size = [4, 8]
mode = ["train", "inference"]
width = 8

[run]
repeats = 2
budget = "1GiB"
timeout_seconds = 20
jobs = 1
"""


@pytest.fixture()
def fake_cell(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_cell.py"
    script.write_text(FAKE_CELL)
    return [sys.executable, str(script)]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("FAKE_CELL_SPANS", "FAKE_CELL_SLEEP", "FAKE_CELL_HANG", "FAKE_CELL_DIE", "FAKE_CELL_PARTIAL",
                "FAKE_CELL_LOG", "FAKE_CELL_RAISE"):
        monkeypatch.delenv(var, raising=False)


def make_spec(tmp_path: Path, text: str = SPEC, name: str = "spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_spec(path)


def no_predictor(config):
    return {"predicted_peak_bytes": 1000, "predicted_step_peak_bytes": 500, "predicted_activation_bytes": 100}


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_one_row_per_cell_and_repeat(spec, out: Path) -> list[dict[str, str]]:
    rows = read_rows(out)
    keys = Counter((r["cell"], r["repeat"]) for r in rows)
    expected = {(cell_id(c), str(r)) for c in spec.cells() for r in range(spec.repeats)}
    assert set(keys) == expected
    assert all(n == 1 for n in keys.values()), [k for k, n in keys.items() if n > 1]
    return rows


# A sweep in its own process, as a user runs it. SIGINT gets Python's default handler (Ctrl-C raises
# KeyboardInterrupt): a process started in the background by a non-interactive shell (`sh -c '... &'`, how CI
# may start `make test`) inherits SIGINT ignored, and the interrupt tests would then wait for nothing.
SWEEP_SCRIPT = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from memstudy.run.spec import load_spec
from memstudy.run.sweep import run_sweep
def predictor(config):
    return {"predicted_peak_bytes": 1}
run_sweep(load_spec(sys.argv[1]), sys.argv[2], progress=False, cell_command=sys.argv[3:], predictor=predictor)
"""

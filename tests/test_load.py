"""Timing honesty: the cores other processes keep busy while a cell is timed, measured and recorded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from memstudy.measure.load import ForeignLoad, machine_busy_seconds, own_seconds, process_seconds

pytestmark = pytest.mark.skipif(machine_busy_seconds() is None, reason="needs Linux /proc/stat")

SPIN = "import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end: pass\n"


def spin_here(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_another_process_counts_and_our_own_work_does_not():
    """Two figures over one window, so that whatever else the machine runs meanwhile cancels out (the earlier
    version compared two windows and failed when other processes kept both cores busy): a spinning child is
    foreign load unless it is named as ours (`helper_pids`), and our own CPU time is in `own_seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=1.5)])
    time.sleep(0.2)  # spinning, not starting
    theirs, ours = ForeignLoad().start(), ForeignLoad(helper_pids=lambda: [proc.pid]).start()
    wall0, spun0, own0 = time.perf_counter(), process_seconds(proc.pid), own_seconds()
    cpu_end = time.process_time() + 0.2
    while time.process_time() < cpu_end:  # 0.2 CPU seconds of our own, however busy the machine is
        pass
    time.sleep(0.3)
    spun, own = process_seconds(proc.pid) - spun0, own_seconds() - own0
    foreign_theirs, foreign_ours, wall = theirs.cores(), ours.cores(), time.perf_counter() - wall0
    proc.kill()
    proc.wait()
    assert own >= 0.15 and spun > 0.05, (own, spun)  # os.times() counts in 10 ms ticks
    assert abs((foreign_theirs - foreign_ours) - spun / wall) < 0.1, (foreign_theirs, foreign_ours, spun / wall)


def test_each_cell_row_records_the_load_while_it_was_timed():
    request = {"depth": 1, "width": 16, "batch_size": 4, "repeats": 1}
    done = subprocess.run([sys.executable, "-m", "memstudy.measure.cell"], input=json.dumps(request), text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.splitlines()[0])
    assert isinstance(row["foreign_cores"], float) and 0 <= row["foreign_cores"] < 64


# --- a cell's BLAS threads: capped to the cores free when it starts (issue 21, item 6) --------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from memstudy.run.launcher import BLAS_THREAD_ENV, CellRequest, launch  # noqa: E402

# a stand-in cell: what BLAS thread count its environment gave it, as one row
ECHO_CELL = [sys.executable, "-c", "import json, os, sys; sys.stdin.read(); "
                                   "print(json.dumps({'threads_seen': os.environ.get('OPENBLAS_NUM_THREADS')}))"]
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]  # `yes > /dev/null`, in Python


@pytest.fixture()
def busy_core():
    """One core kept busy by another process for the test's duration."""
    proc = subprocess.Popen(BUSY_LOOP)
    time.sleep(0.3)  # running, not starting
    yield proc
    proc.kill()
    proc.wait()


def test_a_busy_core_caps_the_next_cells_blas_threads(monkeypatch, busy_core):
    """On 2 cores with one busy, two OpenBLAS threads made a CNN step 15-25x slower than one thread: a cell started
    beside a busy core gets at most the cores left (at least one), and its rows say so."""
    from memstudy.measure.load import busy_cores

    for name in BLAS_THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    assert busy_cores(0.2) >= 0.7  # the loop is a core's worth of work (more, if others are busy too)
    result = launch(CellRequest({}, 1), ECHO_CELL)
    assert not result.error, result.error
    row = result.rows[0]
    usable = len(os.sched_getaffinity(0))
    assert row["threads_seen"] == str(row["blas_threads"])  # what the row records is what the cell got
    assert 1 <= row["blas_threads"] <= max(1, usable - 1)
    assert row["free_cores"] <= usable - 0.5


def test_a_blas_thread_count_the_user_set_is_never_capped(monkeypatch, busy_core):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    result = launch(CellRequest({}, 1), ECHO_CELL)
    row = result.rows[0]
    assert row["threads_seen"] == "7" and row["blas_threads"] == 7
    assert isinstance(row["free_cores"], float)  # measured and recorded all the same


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1, max_value=64, allow_nan=False), st.integers(min_value=1, max_value=64))
def test_the_thread_count_is_the_free_cores_rounded_within_one_and_the_ceiling(free, ceiling):
    from memstudy.run.launcher import blas_thread_count

    count = blas_thread_count(free, ceiling)
    assert 1 <= count <= ceiling
    assert count == max(1, min(ceiling, int(free + 0.5)))  # round half up: 1.5 free cores are 2
    assert blas_thread_count(free + 1, ceiling) >= count
    assert blas_thread_count(None, ceiling) == ceiling  # load unknown (no /proc/stat): the ceiling


def test_a_sweep_records_each_cells_threads_and_the_rule_in_env_json(tmp_path, monkeypatch):
    from sweep_helpers import FAKE_CELL, SPEC, make_spec, no_predictor, read_rows

    from memstudy.run.sweep import run_sweep

    for name in BLAS_THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    script = tmp_path / "fake_cell.py"
    script.write_text(FAKE_CELL)
    spec = make_spec(tmp_path, SPEC.replace("depth = [1, 2, 3]", "depth = 1").replace("repeats = 2", "repeats = 1"))
    run_sweep(spec, tmp_path / "out", progress=False, cell_command=[sys.executable, str(script)],
              predictor=no_predictor)
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 4 and all(int(r["blas_threads"]) >= 1 and float(r["free_cores"]) >= 0 for r in rows)
    rule = json.loads((tmp_path / "out" / "env.json").read_text())["sessions"][-1]["blas_threads"]
    assert rule["set_by"] == "memstudy" and rule["at_most"] == len(os.sched_getaffinity(0))


# --- the load in `memstudy run`'s table ----------------------------------------------------------------------

def _run_rows(mode: str, foreign_cores: float, blas_threads: int | None = None) -> list[dict]:
    from memstudy.config import normalize
    from memstudy.run.results.fields import ROW_FIELDS

    row = dict.fromkeys(ROW_FIELDS, 1000)
    row.update(normalize({"depth": 2, "width": 8, "batch_size": 4, "mode": mode}))
    row.update(rss_method="vmhwm", step_seconds=0.367, grad_rel_error=None, foreign_cores=foreign_cores,
               prediction_matches=None, prediction_unavailable=None,
               blas_threads=blas_threads, free_cores=None if blas_threads is None else 0.9)
    return [row]


def test_the_run_table_shows_the_load_and_flags_a_loaded_step_time():
    from memstudy.report.terminal import run_report

    quiet = run_report({"train": _run_rows("train", 0.05), "inference": _run_rows("inference", 0.1)})
    assert "other cores busy meanwhile" in quiet and "loaded" not in quiet
    line = next(l for l in quiet.splitlines() if l.strip().startswith("other cores busy"))
    assert line.split()[-2:] == ["0.05", "0.10"], line
    assert "BLAS threads" not in quiet  # rows from before the field existed: no empty row
    busy = run_report({"train": _run_rows("train", 1.2, blas_threads=1), "inference": _run_rows("inference", 0.1)})
    line = next(l for l in busy.splitlines() if l.strip().startswith("other cores busy"))
    assert "1.20 (loaded)" in line, line
    note = busy.splitlines()[-1]
    assert "train" in note and "1.20 cores" in note and "slower than on a quiet machine" in note, note
    threads = next(l for l in busy.splitlines() if l.strip().startswith("BLAS threads"))
    assert "1 (0.90 free)" in threads, threads

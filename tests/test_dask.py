"""Sweeps on a Dask cluster (loopback only, each test bounded in time): the same rows as a local sweep, a worker
killed mid-sweep loses and duplicates nothing, resume works in both directions, and an unusable cluster is
one error line, exit 2, at once."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from memstudy.study.dask_executor import CELL_RESOURCE  # noqa: E402
from memstudy.study.fields import BASELINE_FIELDS, LEDGER_FIELDS, PREDICTED_FIELDS  # noqa: E402
from memstudy.study.spec import cell_id  # noqa: E402
from memstudy.study.sweep import run_sweep  # noqa: E402
from sweep_helpers import (SPEC, assert_one_row_per_cell_and_repeat, clean_env, fake_cell, make_spec,  # noqa: E402,F401
                           no_predictor, read_rows)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> Path:
    """The fake cell's settings file: the workers start before the tests, so they read it at each cell."""
    return tmp_path_factory.mktemp("control") / "control.json"


@pytest.fixture(scope="module")
def cluster(control):
    """Two single-threaded workers offering memstudy-cell=1 on 127.0.0.1, shared by this module's tests."""
    os.environ["FAKE_CELL_CONTROL"] = str(control)  # inherited by the worker processes (and their restarts)
    try:
        local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                         dashboard_address=None, resources={CELL_RESOURCE: 1}, silence_logs=50)
        client = distributed.Client(local)
        yield local.scheduler_address, client
        client.close()
        local.close()
    finally:
        os.environ.pop("FAKE_CELL_CONTROL", None)


@pytest.fixture()
def settings(control):
    """Write the fake cell's settings for this test; cleared afterwards."""
    def write(**values: str) -> None:
        control.write_text(json.dumps(values))

    yield write
    control.write_text("{}")


REAL_SPEC = """
[study]
name = "real"
[grid]
depth = [1, 3]
width = 32
batch_size = 8
mode = ["train", "inference"]
[run]
repeats = 1
budget = "1GiB"
timeout_seconds = 120
"""
COMPARED = BASELINE_FIELDS + LEDGER_FIELDS + PREDICTED_FIELDS


def test_a_cluster_sweep_measures_what_a_local_sweep_measures(tmp_path, cluster):
    address, _ = cluster
    spec = make_spec(tmp_path, REAL_SPEC)
    local = run_sweep(spec, tmp_path / "local", progress=False)
    remote = run_sweep(spec, tmp_path / "dask", progress=False, cluster=address)
    assert (local.ok, remote.ok, remote.failed, remote.exit_status) == (4, 4, 0, 0)
    by_key = {(r["cell"], r["repeat"]): r for r in read_rows(tmp_path / "local")}
    rows = assert_one_row_per_cell_and_repeat(spec, tmp_path / "dask")
    for row in rows:
        assert {f: row[f] for f in COMPARED} == {f: by_key[row["cell"], row["repeat"]][f] for f in COMPARED}
        assert row["host"] == socket.gethostname() and row["worker"].startswith("tcp://127.0.0.1:")
        assert int(row["mem_limit_bytes"]) > int(row["vm_peak_bytes"])  # the limit measured on the worker's host
    assert all(r["worker"] == "" for r in by_key.values())
    env = json.loads((tmp_path / "dask" / "env.json").read_text())
    session = env["sessions"][-1]
    assert session["executor"] == address and len(session["workers"]) == 2
    host = env["hosts"][socket.gethostname()]
    assert host["numpy"]["version"] and host["machine"]["cpu_model"]
    assert (tmp_path / "dask" / "timeline.csv").read_text().startswith("event,")  # written by the client


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it (it was reparented when its worker died)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_a_worker_killed_mid_cell_loses_and_duplicates_no_row(tmp_path, cluster, fake_cell, settings):
    address, client = cluster
    log = tmp_path / "cells.log"
    settings(FAKE_CELL_SLEEP="1.0", FAKE_CELL_LOG=str(log))
    spec = make_spec(tmp_path, SPEC.replace("batch_size = [4, 8]", "batch_size = 4"))  # 6 cells of ~1 s
    pids = set(worker_pids(client).values())
    outcome: list = []
    sweep = threading.Thread(target=lambda: outcome.append(run_sweep(
        spec, tmp_path / "out", progress=False, cell_command=fake_cell, predictor=no_predictor, cluster=address)))
    sweep.start()
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        started = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        victim = next((c for c in started if c["ppid"] in pids), None)
        time.sleep(0.05)
    assert victim is not None, "no cell started on a worker"
    os.kill(victim["ppid"], signal.SIGKILL)  # the worker process dies mid-cell; its nanny starts another
    sweep.join(timeout=90)
    assert not sweep.is_alive() and outcome, "the sweep did not finish"
    assert (outcome[0].ok, outcome[0].failed) == (6, 0)
    rows = assert_one_row_per_cell_and_repeat(spec, tmp_path / "out")
    assert {r["status"] for r in rows} == {"ok"}
    attempts = Counter(cell_id(c["config"]) for c in map(json.loads, log.read_text().splitlines()))
    assert attempts[cell_id(victim["config"])] == 2  # lost with its worker, run again elsewhere, written once
    assert dead(victim["pid"])  # the lost attempt's cell process died with its worker


def test_resume_goes_both_ways_between_local_and_cluster(tmp_path, cluster, fake_cell, settings):
    address, _ = cluster
    log = tmp_path / "cells.log"
    settings(FAKE_CELL_LOG=str(log))
    out = tmp_path / "out"
    first = make_spec(tmp_path, SPEC.replace("depth = [1, 2, 3]", "depth = [1, 2]"))
    assert run_sweep(first, out, progress=False, cell_command=fake_cell, predictor=no_predictor, cluster=address).ok == 8
    wider = make_spec(tmp_path, SPEC, "wider.toml")  # a local sweep resumes it and runs only depth 3
    os.environ["FAKE_CELL_LOG"] = str(log)
    try:
        local = run_sweep(wider, out, progress=False, cell_command=fake_cell, predictor=no_predictor)
    finally:
        os.environ.pop("FAKE_CELL_LOG")
    assert (local.resumed, local.ok) == (8, 4)
    more = make_spec(tmp_path, SPEC.replace("repeats = 2", "repeats = 3"), "more.toml")  # back on the cluster
    again = run_sweep(more, out, progress=False, cell_command=fake_cell, predictor=no_predictor, cluster=address)
    assert (again.resumed, again.ok) == (0, 12)
    rows = assert_one_row_per_cell_and_repeat(more, out)
    ran = Counter(cell_id(c["config"]) for c in map(json.loads, log.read_text().splitlines()))
    assert set(ran.values()) == {2}  # every cell ran twice: its first repeats, then its third
    placed = {(r["depth"], r["repeat"]): r["worker"] != "" for r in rows}
    assert placed[("1", "0")] and not placed[("3", "0")] and placed[("3", "2")]


def test_a_cell_too_big_for_every_worker_is_skipped_with_that_reason(tmp_path, cluster, fake_cell):
    address, _ = cluster

    def predictor(config):
        return {"predicted_peak_bytes": (1 << 50) if config["depth"] == 3 else 1000}

    spec = make_spec(tmp_path, SPEC.replace('budget = "1GiB"', 'budget = "50%"'))
    outcome = run_sweep(spec, tmp_path / "out", progress=False, cell_command=fake_cell, predictor=predictor,
                        cluster=address)
    assert (outcome.ok, outcome.skipped) == (8, 4)
    skipped = [r for r in read_rows(tmp_path / "out") if r["status"] == "skipped"]
    assert all("of the largest worker's memory" in r["error"] for r in skipped), skipped[0]["error"]


def memstudy(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_an_unreachable_scheduler_is_one_line_exit_2_at_once(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    start = time.monotonic()
    line = one_error_line(memstudy("sweep", str(spec), "--out", str(tmp_path / "out"), "--cluster",
                                   f"tcp://127.0.0.1:{port}"))
    assert f"127.0.0.1:{port}" in line and time.monotonic() - start < 20
    assert not (tmp_path / "out" / "runs.csv").exists()


def test_without_the_extra_cluster_names_it(tmp_path):
    fake = tmp_path / "nodask" / "distributed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no distributed here')\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "nodask"), str(ROOT)])}
    line = one_error_line(memstudy("sweep", str(spec), "--out", str(tmp_path / "out"), "--cluster", "local:1",
                                   env=env))
    assert "memstudy[distributed]" in line


@pytest.mark.parametrize("args", [["--cluster", "local:0"], ["--cluster", "local:two"],
                                  ["--cluster", "local:1", "--jobs", "2"]])
def test_bad_cluster_flags_are_one_line_exit_2(tmp_path, args):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    one_error_line(memstudy("sweep", str(spec), "--out", str(tmp_path / "out"), *args))


INTERRUPTED = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in sweep_helpers.SWEEP_SCRIPT: not inherited ignored
from memstudy.study.spec import load_spec
from memstudy.study.sweep import run_sweep
run_sweep(load_spec(sys.argv[1]), sys.argv[2], progress=False, cell_command=sys.argv[3:],
          predictor=lambda config: {"predicted_peak_bytes": 1}, cluster="local:2")
"""


def test_an_interrupted_cluster_sweep_stops_its_cells_and_closes_its_workers(tmp_path, fake_cell):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    log = tmp_path / "cells.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_CELL_HANG": "mode=train", "FAKE_CELL_LOG": str(log)}
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(spec), str(tmp_path / "out"), *fake_cell],
                            env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(json.loads(line)["config"]["mode"] == "train" for line in
                  (log.read_text().splitlines() if log.exists() else [])):
        assert time.monotonic() < deadline and proc.poll() is None, "no cell started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    proc.communicate(timeout=60)
    assert proc.returncode != 0 and time.monotonic() - start < 30  # the hanging cells were not waited for
    time.sleep(1.0)
    assert all(dead(json.loads(line)["pid"]) for line in log.read_text().splitlines())
    rows = read_rows(tmp_path / "out")
    assert all(r["mode"] == "inference" for r in rows)  # only finished cells were written

"""Sweeps on a Dask cluster (loopback only, each test bounded in time): the same rows as a local sweep, a worker
killed mid-sweep loses and duplicates nothing, resume works in both directions, and an unusable cluster is
one error line, exit 2, at once. An address that is not a scheduler (a web server, the dashboard's port) is one
line within the connect timeout, a scheduler killed mid-sweep leaves its cells un-run for a resume, Ctrl-C on
local:N is one line, and tls:// runs with certificates from Dask's configuration (made here with openssl)."""
from __future__ import annotations

import csv
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from memstudy.run.executors.dask import CELL_RESOURCE, CONNECT_TIMEOUT_SECONDS  # noqa: E402
from memstudy.run.results.fields import BASELINE_FIELDS, LEDGER_FIELDS, PREDICTED_FIELDS  # noqa: E402
from memstudy.run.spec import cell_id  # noqa: E402
from memstudy.run.sweep import run_sweep  # noqa: E402
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
                                         dashboard_address=None, resources={CELL_RESOURCE: 1}, silence_logs=50,
                                         scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})  # 8787 may be taken
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


# --- an address that is not a Dask scheduler, a scheduler lost mid-sweep, Ctrl-C (issue 21, item 5) -----------

# the whole command, interpreter start-up and imports on a busy 2-core machine included
ANSWER_BOUND_SECONDS = CONNECT_TIMEOUT_SECONDS + 15


def timed_sweep(tmp_path, address: str, env: dict | None = None) -> tuple[str, float]:
    """`memstudy sweep --cluster ADDRESS` as a user runs it: its one error line and how long it took."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "memstudy", "sweep", str(spec), "--out", str(tmp_path / "out"),
                               "--cluster", address], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=ANSWER_BOUND_SECONDS + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"memstudy sweep --cluster {address} did not answer in {ANSWER_BOUND_SECONDS + 10:g} s")
    elapsed = time.monotonic() - start
    line = one_error_line(done)
    assert not (tmp_path / "out" / "runs.csv").exists()
    return line, elapsed


class _AnsweringHTTP(socketserver.BaseRequestHandler):
    """A web server as most answer a client that speaks no HTTP: a 400 at once. Dask reads its first 8 bytes,
    b"HTTP/1.1", as a frame length (3.07 EiB) and tried to allocate it."""

    def handle(self) -> None:
        self.request.recv(1024)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


# the waiting one (11 s: the handshake's timeout) takes the path the dashboard-port test below takes: `make test-all`
@pytest.fixture(params=["answers at once", pytest.param("waits for a request line", marks=pytest.mark.slow)])
def http_service(request):
    """An HTTP service on a loopback port, in a thread: one that answers Dask's handshake with a 400 at once, and
    http.server, which waits for a line that Dask's handshake never sends."""
    if request.param == "answers at once":
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _AnsweringHTTP)
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_http_service_is_one_line_exit_2_in_bounded_time(tmp_path, http_service):
    line, elapsed = timed_sweep(tmp_path, http_service)
    assert "not a Dask scheduler" in line and http_service.split("//")[1] in line, line
    assert elapsed < ANSWER_BOUND_SECONDS, elapsed


def test_the_schedulers_dashboard_port_is_one_line_exit_2_in_bounded_time(tmp_path, cluster):
    """The scheduler's own HTTP port (its dashboard, 8787 by default) waits for an HTTP request forever; it used to
    hold the sweep until the scheduler died."""
    _, client = cluster
    port = client.scheduler_info()["services"]["dashboard"]
    line, elapsed = timed_sweep(tmp_path, f"tcp://127.0.0.1:{port}")
    assert "not a Dask scheduler" in line and "8786" in line, line  # names the scheduler's usual port
    assert elapsed < ANSWER_BOUND_SECONDS, elapsed


def start_scheduler(tmp_path, env: dict) -> tuple[subprocess.Popen, str]:
    """A real `dask scheduler` in its own process (so that it can be killed), on a free loopback port."""
    scheduler_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                             "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() or not scheduler_file.read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None, "the scheduler did not start"
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written in one go, but read it once it is closed
    return proc, json.loads(scheduler_file.read_text())["address"]


# `memstudy sweep SPEC --out DIR --cluster ADDRESS` as a user runs it, with the fake cell (argv: spec, out, address,
# cell command). SIGINT gets Python's default handler, as in sweep_helpers.SWEEP_SCRIPT: not inherited ignored.
CLI_SWEEP = """
import functools, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import memstudy.run.sweep as sweep
sweep.run_sweep = functools.partial(sweep.run_sweep, cell_command=sys.argv[4:],
                                    predictor=lambda config: {"predicted_peak_bytes": 1})
from memstudy.cli import main
raise SystemExit(main(["sweep", sys.argv[1], "--out", sys.argv[2], "--no-progress", "--cluster", sys.argv[3]]))
"""


def test_a_scheduler_killed_mid_sweep_leaves_its_cells_unrun_and_a_resume_runs_them(tmp_path, fake_cell):
    """Cells lost with the scheduler are the cluster's failure, not theirs: no `failed` row (CancelledError, empty
    message, as it was), one line naming the lost scheduler (no Dask log lines), and a plain resume runs them."""
    log = tmp_path / "cells.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_CELL_SLEEP": "0.5", "FAKE_CELL_LOG": str(log)}
    env.pop("FAKE_CELL_CONTROL", None)
    scheduler, address = start_scheduler(tmp_path, env)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--resources", f"{CELL_RESOURCE}=1", "--no-nanny", "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    spec = make_spec(tmp_path)  # 12 cells of 2 repeats, one at a time on the one worker: about 6 s
    out = tmp_path / "out"
    sweep = subprocess.Popen([sys.executable, "-c", CLI_SWEEP, str(spec.path), str(out), address, *fake_cell],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "runs.csv").exists() or len(read_rows(out)) < 2:
            assert time.monotonic() < deadline and sweep.poll() is None, "no cell finished"
            time.sleep(0.05)
        scheduler.kill()
        killed = time.monotonic()
        _, stderr = sweep.communicate(timeout=60)
        assert time.monotonic() - killed < 30
    finally:
        for proc in (scheduler, worker, sweep):
            proc.kill()
            proc.wait()
    assert sweep.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --cluster {address}: "), stderr
    assert "run the same command" in lines[0], lines[0]
    rows = read_rows(out)
    assert rows and {r["status"] for r in rows} == {"ok"}, {(r["status"], r["error"]) for r in rows}
    finished = {r["cell"] for r in rows}
    resumed = run_sweep(spec, out, progress=False, cell_command=fake_cell, predictor=no_predictor)  # locally
    assert resumed.resumed == len(finished) and resumed.failed == 0 and resumed.done == 12
    rows = assert_one_row_per_cell_and_repeat(spec, out)
    assert {r["status"] for r in rows} == {"ok"}


def test_ctrl_c_on_a_local_cluster_sweep_is_one_line(tmp_path, fake_cell):
    """Ctrl-C in a terminal signals the whole foreground process group: the sweep and its local Dask workers. The
    user sees one line (it used to be each worker's KeyboardInterrupt traceback and Dask's warning that port 8787
    was taken), the cells stop (hanging ones are not waited for) and only finished cells are written."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    log = tmp_path / "cells.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_CELL_HANG": "mode=train", "FAKE_CELL_LOG": str(log)}
    taken = socket.socket()  # port 8787 in use, as by any other Dask cluster on the machine
    try:
        taken.bind(("127.0.0.1", 8787))
        taken.listen()
    except OSError:
        pass  # already in use
    try:
        proc = subprocess.Popen([sys.executable, "-c", CLI_SWEEP, str(spec), str(tmp_path / "out"), "local:2",
                                 *fake_cell], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own process group, as a terminal gives a command
        deadline = time.monotonic() + 60
        while sum(json.loads(line)["config"]["mode"] == "train" for line in
                  (log.read_text().splitlines() if log.exists() else [])) < 2:  # both workers are in a cell
            assert time.monotonic() < deadline and proc.poll() is None, "no cell started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        start = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        assert time.monotonic() - start < 30  # the hanging cells (60 s) were not waited for
    finally:
        taken.close()
    assert proc.returncode == 130 and stderr == "error: interrupted\n", stderr
    time.sleep(1.0)
    assert all(dead(json.loads(line)["pid"]) for line in log.read_text().splitlines())  # the hanging cells too
    assert all(r["mode"] == "inference" for r in read_rows(tmp_path / "out"))  # only finished cells were written


# --- tls:// with Dask's own security settings (issue 21, item 14) ------------------------------------------

TLS_KEYS = ("ca-file", "client.cert", "client.key")


def no_dask_config(tmp_path) -> dict:
    """An environment in which Dask reads no configuration but its defaults (no ~/.config/dask, no DASK_*)."""
    empty = tmp_path / "dask-config"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    return {**env, "DASK_CONFIG": str(empty), "PYTHONPATH": str(ROOT)}


def test_a_tls_address_without_certificates_is_one_line_exit_2(tmp_path):
    with socket.socket() as probe:  # nothing listens there: the refusal must come before any connection
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line, elapsed = timed_sweep(tmp_path, f"tls://127.0.0.1:{port}", env=no_dask_config(tmp_path))
    assert "distributed.comm.tls.ca-file" in line and "certificate" in line, line
    assert elapsed < 20, elapsed


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, str]:
    """A self-signed CA and one certificate it signed (for the scheduler, the workers and the client), made here
    with the openssl command (distributed's own Security.temporary() needs the `cryptography` package, which is not
    one of memstudy's dependencies)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    where = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=memstudy-test-ca", cwd=where)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
            "-subj", "/CN=memstudy-test-node", cwd=where)
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.pem", "-days", "1", cwd=where)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem", "-days",
            "1", "-subj", "/CN=another-ca", cwd=where)  # a CA that signed nothing of this cluster's
    return {"ca": str(where / "ca.pem"), "cert": str(where / "node.pem"), "key": str(where / "node.key"),
            "other_ca": str(where / "other.pem")}


def test_a_sweep_over_tls_with_certificates_from_dasks_configuration(tmp_path, certificates, fake_cell):
    import dask

    ca, cert, key = certificates["ca"], certificates["cert"], certificates["key"]
    security = distributed.Security(tls_ca_file=ca, tls_scheduler_cert=cert, tls_scheduler_key=key,
                                    tls_worker_cert=cert, tls_worker_key=key, tls_client_cert=cert,
                                    tls_client_key=key, require_encryption=True)
    local = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     protocol="tls://", security=security, dashboard_address=None,
                                     scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                     resources={CELL_RESOURCE: 1}, silence_logs=50)
    try:
        address = local.scheduler_address
        assert address.startswith("tls://")
        spec = make_spec(tmp_path, SPEC.replace("depth = [1, 2, 3]", "depth = 1").replace("repeats = 2", "repeats = 1"))
        with dask.config.set({"distributed.comm.tls.ca-file": ca, "distributed.comm.tls.client.cert": cert,
                              "distributed.comm.tls.client.key": key}):
            outcome = run_sweep(spec, tmp_path / "out", progress=False, cell_command=fake_cell,
                                predictor=no_predictor, cluster=address)
        assert (outcome.ok, outcome.failed) == (4, 0)
        rows = assert_one_row_per_cell_and_repeat(spec, tmp_path / "out")
        assert all(r["worker"].startswith("tls://127.0.0.1:") for r in rows)
        # without the client's certificate the scheduler is refused before anything is written
        from memstudy.run.results.resume import SweepError

        with dask.config.set({"distributed.comm.tls.ca-file": ca, "distributed.comm.tls.client.cert": None,
                              "distributed.comm.tls.client.key": None}):
            with pytest.raises(SweepError, match="distributed.comm.tls.client.cert"):
                run_sweep(spec, tmp_path / "other", progress=False, cell_command=fake_cell, predictor=no_predictor,
                          cluster=address)
        # a certificate file that is not there: one line naming it, at once
        with dask.config.set({"distributed.comm.tls.ca-file": ca, "distributed.comm.tls.client.cert": cert + ".gone",
                              "distributed.comm.tls.client.key": key}):
            start = time.monotonic()
            with pytest.raises(SweepError, match="gone") as raised:
                run_sweep(spec, tmp_path / "other", progress=False, cell_command=fake_cell, predictor=no_predictor,
                          cluster=address)
            assert time.monotonic() - start < 5 and "\n" not in str(raised.value)
        # a CA that did not sign the scheduler's certificate: the handshake fails, and the line says so
        with dask.config.set({"distributed.comm.tls.ca-file": certificates["other_ca"],
                              "distributed.comm.tls.client.cert": cert, "distributed.comm.tls.client.key": key}):
            start = time.monotonic()
            with pytest.raises(SweepError, match="TLS handshake failed") as raised:
                run_sweep(spec, tmp_path / "other", progress=False, cell_command=fake_cell, predictor=no_predictor,
                          cluster=address)
            assert time.monotonic() - start < CONNECT_TIMEOUT_SECONDS + 2 and "\n" not in str(raised.value)
        assert not (tmp_path / "other" / "runs.csv").exists()
    finally:
        local.close()

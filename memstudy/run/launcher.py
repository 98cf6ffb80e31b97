"""The one way a cell is started: a fresh Python process, its own process group, a timeout, an optional
memory limit, JSON rows back on stdout, and one wording for every failure.

`memstudy run`, the local sweep and the distributed executor all call `launch`. A fresh process per cell
gives every measurement a clean baseline and an honest VmHWM. The process is forked by a fork server that has
imported numpy and memstudy once (forkserver.py: a forked child is a fresh process with its own heap, VmHWM and
RSS baseline, without the interpreter's start and imports, about 0.6 s a cell); MEMSTUDY_LAUNCHER=exec, a cell
command other than the default, or a platform without fork start a fresh interpreter per cell instead. The child gets MALLOC_MMAP_THRESHOLD_=65536
unless the caller set it: glibc then serves every buffer of 64 KiB or more with its own mmap and returns
it on free, so RSS follows live memory instead of glibc's adaptive threshold (which rises after a large
free and keeps later buffers resident).

Executors have the `concurrent.futures` shape: `submit(request, reserve_bytes) -> Future[CellResult]`: the
LocalExecutor (executors/local.py), and the DaskExecutor (executors/dask.py), whose tasks call `launch` on their
worker.

The address-space limit of a cell (RLIMIT_AS) depends on the host (budget.py): a request carries the cell's
own bytes (`memory_own_bytes`), and `launch` adds the baseline measured on the host it runs on. A cell
process also gets PR_SET_PDEATHSIG (Linux), so it dies with the process that started it: a killed sweep
or a lost Dask worker leaves no orphan cell running.

BLAS threads: unless the user set a count (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS in this
process's environment), a cell's BLAS gets the cores that are free as it starts (the machine's busy cores over
0.1 s, measure/load.py), at least one and at most its share of the usable cores (`cell_environment`). On 2 cores
with one kept busy by another process, two OpenBLAS threads made a CNN step 15-25x slower than one thread: a
thread that waits for a partner with no core to run on stalls the whole product. Each row records what the cell
got (`blas_threads`) and the free cores it was given them for (`free_cores`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import forkserver
from .budget import ProcessBaseline, address_space_limit

MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
MMAP_THRESHOLD_BYTES = "65536"
CELL_COMMAND = (sys.executable, "-m", "memstudy.measure.cell")
CALIBRATION_CONFIG = {"depth": 1, "width": 8, "batch_size": 4}  # the default family's tiniest cell
CALIBRATION_TIMEOUT_SECONDS = 120.0
# BLAS thread counts a cell may be given (OpenBLAS reads the first, OpenMP builds the second, MKL the third)
BLAS_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BLAS_LOAD_WINDOW_SECONDS = 0.1  # how long a cell's start looks at the machine's load (resolves 0.1 core)


class CellLost(Exception):
    """An executor lost a cell to its own infrastructure (the Dask scheduler went away), not to anything the cell
    did: the sweep writes no row for it, so that the next run of the same command runs it."""


@dataclass
class CellRequest:
    """What a cell measures: a normalized config, how many repeats, and the optional extras."""

    config: dict[str, Any]
    repeats: int = 1
    timeline_path: str | None = None
    by_layer: bool = False
    timeout_seconds: float | None = None
    memory_limit_bytes: int | None = None  # address-space limit of the cell process (None: none, or see below)
    memory_own_bytes: int | None = None  # or: the cell's own bytes; the limit is this host's baseline + these
    return_timeline: bool = False  # write the timeline to a temporary file here and return its text
    phase_seconds: bool = False  # each row carries the seconds of each phase of the cell (measure/cell.py)

    def payload(self) -> dict[str, Any]:
        """The JSON object the cell reads on stdin."""
        out = {k: v for k, v in self.config.items() if k != "repeat"}
        out["repeats"] = self.repeats
        if self.timeline_path:
            out["timeline_path"] = self.timeline_path
        if self.by_layer:
            out["by_layer"] = True
        if self.phase_seconds:
            out["phase_seconds"] = True
        return out


@dataclass
class CellResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # the rows the cell printed, in order
    error: str = ""  # empty when the cell printed one row per repeat and exited 0
    host: str = ""  # where the cell ran
    worker: str = ""  # the Dask worker that started it ("" locally)
    memory_limit_bytes: int | None = None  # the address-space limit it ran under
    timeline_csv: str | None = None  # with `return_timeline`: the timeline's text (None if none was written)


def cell_environment(base: dict[str, str] | None = None, jobs: int = 1) -> dict[str, str]:
    """The environment a cell process gets: ours, plus the allocator setting, plus memstudy importable.

    With `jobs` cells at a time and no BLAS thread count set by the user, each cell's BLAS gets at most usable cores ÷
    jobs threads (at least one): cells that each start one BLAS thread per core oversubscribe the cores (on 2 cores,
    --jobs 2 ran the default study at a third of --jobs 1's rate: results/bench, sweep_jobs2_cells_per_second);
    `launch` lowers that further to the cores free when the cell starts. Dask's nannies set one thread per worker
    process (their `pre-spawn-environ`), which counts as set by the user."""
    from .results.provenance import project_root

    env = dict(os.environ if base is None else base)
    env.setdefault(MMAP_THRESHOLD_ENV, MMAP_THRESHOLD_BYTES)
    if jobs > 1 and not any(name in env for name in BLAS_THREAD_ENV):
        threads = str(max(1, _usable_cores() // jobs))
        env.update(dict.fromkeys(BLAS_THREAD_ENV, threads))
    root = str(project_root())
    paths = env.get("PYTHONPATH", "")
    if root not in paths.split(os.pathsep):
        env["PYTHONPATH"] = root + (os.pathsep + paths if paths else "")
    return env


def _usable_cores() -> int:
    """The cores a cell may run on (provenance.usable_cores: this process's CPU affinity), at least 1."""
    from .results.provenance import usable_cores

    return usable_cores() or os.cpu_count() or 1


def user_blas_threads() -> dict[str, str]:
    """The BLAS thread counts this process's environment sets (the user's, or Dask's on its workers): never changed."""
    return {name: os.environ[name] for name in BLAS_THREAD_ENV if name in os.environ}


def blas_thread_count(free_cores: float | None, ceiling: int) -> int:
    """Threads for a cell's BLAS: the free cores rounded (half up), at least 1 and at most `ceiling`; the ceiling
    when the load is unknown."""
    if free_cores is None:
        return ceiling
    return max(1, min(ceiling, int(free_cores + 0.5)))


def _blas_ceiling(env: dict[str, str]) -> int:
    """The most threads a cell's BLAS may get: its share of the cores set by `cell_environment`, else the usable
    cores."""
    for name in BLAS_THREAD_ENV:
        if env.get(name, "").isdigit() and int(env[name]) >= 1:
            return int(env[name])
    return _usable_cores()


def free_cores(window_seconds: float = BLAS_LOAD_WINDOW_SECONDS) -> float | None:
    """The usable cores that no process kept busy over the next `window_seconds`; None where the load is unknown."""
    from ..measure.load import busy_cores

    busy = busy_cores(window_seconds)
    if busy is None:
        return None
    all_cores = os.cpu_count() or 1  # what /proc/stat's busy time is spread over
    return max(0.0, min(float(_usable_cores()), all_cores - busy))


def blas_for_cell(env: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """The environment one cell starts with, its BLAS threads set to the free cores unless the user set a count,
    and the row fields that record it: `blas_threads` (what the cell got; None if unknown) and `free_cores`."""
    free = free_cores()
    user = user_blas_threads()
    if user:
        value = next(iter(user.values()))  # in BLAS_THREAD_ENV's order: OpenBLAS reads its own variable first
        threads = int(value) if value.isdigit() else None
    else:
        threads = blas_thread_count(free, _blas_ceiling(env))
        env = {**env, **dict.fromkeys(BLAS_THREAD_ENV, str(threads))}
    return env, {"blas_threads": threads, "free_cores": None if free is None else round(free, 2)}


def blas_policy(env: dict[str, str]) -> dict[str, Any]:
    """How the cells started with `env` get their BLAS threads, for env.json (each row has its own count)."""
    user = user_blas_threads()
    if user:
        return {"set_by": "environment", "threads": user}
    return {"set_by": "memstudy", "at_most": _blas_ceiling(env),
            "rule": f"each cell: the cores free as it starts (busy cores over {BLAS_LOAD_WINDOW_SECONDS:g} s, "
                    "/proc/stat), rounded, at least 1; rows: blas_threads, free_cores"}


def describe_exit(returncode: int, stderr: str) -> str:
    """One line for a cell that did not exit 0: the signal that killed it, or its last stderr line."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"cell process killed by {name}{hint}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return f"cell exited with status {returncode}" + (f": {last}" if last else "")


class LiveCells:
    """The cell processes running now, so that an interrupt can stop every one that started."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set on an interrupt: no new cell may start

    def start(self, args: list[str], env: dict[str, str], preexec: Any) -> subprocess.Popen | None:
        """A fresh interpreter running `args`."""
        return self.start_with(lambda: subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
            start_new_session=True, preexec_fn=preexec))

    def start_with(self, spawn: Callable[[], Any]) -> Any:
        """The process `spawn()` starts (a Popen, or a forkserver.ForkedCell); None when stopping."""
        with self._lock:  # start and register atomically
            if self.stopping.is_set():
                return None
            proc = spawn()
            self._procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        self.stopping.set()
        with self._lock:
            for proc in list(self._procs):
                if proc.returncode is None:  # not yet reaped: its id is still its own
                    kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the cell and anything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


PR_SET_PDEATHSIG = forkserver.PR_SET_PDEATHSIG
_prctl = forkserver.libc_prctl


def _child_setup(limit_bytes: int | None):
    """What the child does between fork and exec: die with its parent (PR_SET_PDEATHSIG, where Linux offers
    it), and take its address-space limit. Everything it calls is bound here, in the parent: no import and no
    lookup runs in the forked child of a threaded process."""
    import resource

    prctl, setrlimit, rlimit_as = _prctl(), resource.setrlimit, resource.RLIMIT_AS
    die_signal = int(signal.SIGKILL)

    def apply() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, die_signal)
        if limit_bytes:
            setrlimit(rlimit_as, (limit_bytes, limit_bytes))

    return apply


def process_baseline(env: dict[str, str]) -> ProcessBaseline | None:
    """VmPeak and VmHWM of a tiny cell (memstudy.measure.cell, this interpreter) started with the cells'
    environment `env` on this host; None when it fails or cannot tell (not Linux). Measured once per process
    and environment: the budget's arithmetic (budget.py) takes it as given."""
    return _measured_baseline(tuple(sorted(env.items())))


@functools.lru_cache(maxsize=8)
def _measured_baseline(env_items: tuple[tuple[str, str], ...]) -> ProcessBaseline | None:
    from ..nn.models.registry import normalize

    request = CellRequest(normalize(dict(CALIBRATION_CONFIG)), 1, timeout_seconds=CALIBRATION_TIMEOUT_SECONDS)
    result = launch(request, list(CELL_COMMAND), dict(env_items), blas_cap=False)  # at the most threads a cell gets
    if result is None or result.error or not result.rows:
        return None
    row = result.rows[0]
    vm, hwm = row.get("vm_peak_bytes"), row.get("hwm_bytes")
    if not isinstance(vm, int) or not isinstance(hwm, int) or vm <= 0:
        return None
    return ProcessBaseline(vm, hwm)


def _memory_limit(request: CellRequest, env: dict[str, str]) -> int | None:
    if request.memory_limit_bytes is not None or request.memory_own_bytes is None:
        return request.memory_limit_bytes
    return address_space_limit(request.memory_own_bytes, process_baseline(env))


def launch(request: CellRequest, command: Sequence[str] | None = None, env: dict[str, str] | None = None,
           live: LiveCells | None = None, blas_cap: bool = True) -> CellResult | None:
    """Run one cell to completion; None if `live` was stopping before it could start. `blas_cap=False` leaves the
    BLAS threads as `env` has them (the budget's calibration cell measures the most threads a cell may get)."""
    live = live or LiveCells()
    env = env if env is not None else cell_environment()
    limit = _memory_limit(request, env)  # a baseline measured at the ceiling: a capped cell reserves no more
    blas: dict[str, Any] = {}
    if blas_cap:
        env, blas = blas_for_cell(env)
    scratch = None
    if request.return_timeline and not request.timeline_path:
        scratch = tempfile.TemporaryDirectory(prefix="memstudy-cell-")
        request = dataclasses.replace(request, timeline_path=os.path.join(scratch.name, "timeline.csv"))
    try:
        args = list(command or CELL_COMMAND)
        server = _fork_server(env) if args == list(CELL_COMMAND) else None
        if server is not None:
            proc = live.start_with(lambda: server.start(limit))
        else:
            proc = live.start(args, env, _child_setup(limit))
        if proc is None:
            return None
        result = _finish(request, proc, live)
        result.host, result.memory_limit_bytes = socket.gethostname(), limit
        for row in result.rows:
            row.update(blas)
        if request.return_timeline and not result.error and request.timeline_path and \
                os.path.exists(request.timeline_path):
            with open(request.timeline_path, encoding="utf-8") as fh:
                result.timeline_csv = fh.read()
        return result
    finally:
        if scratch is not None:
            scratch.cleanup()


def _fork_server(env: dict[str, str]) -> forkserver.ForkServer | None:
    """The fork server for cells with `env` (one per environment, started on first use); None where cells are exec'd
    (MEMSTUDY_LAUNCHER=exec, no fork) or the server cannot start (the cell then starts the old way)."""
    if not forkserver.wanted(env):
        return None
    try:
        return forkserver.server_for(env)
    except OSError:
        return None


def _finish(request: CellRequest, proc: subprocess.Popen, live: LiveCells) -> CellResult:
    """Feed the request, wait (up to the timeout), and read the rows back."""
    reason = None
    try:
        try:
            stdout, stderr = proc.communicate(json.dumps(request.payload()) + "\n", timeout=request.timeout_seconds)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            stdout, stderr = proc.communicate()
            reason = f"timed out after {request.timeout_seconds:g} s"
    finally:
        live.done(proc)
    rows: list[dict[str, Any]] = []
    for line in (stdout or "").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            reason = reason or f"cell printed a line that is not JSON: {line[:80]!r}"
            break
        if not isinstance(obj, dict):
            reason = reason or "cell printed JSON that is not an object"
            break
        rows.append(obj)
    if reason is None and proc.returncode != 0:
        reason = describe_exit(proc.returncode, stderr or "")
    if reason is None and len(rows) != request.repeats:
        reason = f"cell printed {len(rows)} rows for {request.repeats} repeats"
    return CellResult(rows=rows[: request.repeats], error=reason or "")

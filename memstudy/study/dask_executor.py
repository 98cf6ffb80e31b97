"""Cells on a Dask cluster, behind the same `submit(request, reserve_bytes) -> concurrent.futures.Future` as the
LocalExecutor: the sweep, runs.csv, resume and the folder lock do not know which one ran a cell.

- Each task calls `launcher.launch` on its worker: a fresh cell process on the worker's host, with the
  environment, the address-space limit (the host's measured baseline + the cell's own bytes) and the cell
  command of that host. The timeline, if asked for, comes back as text: only the client writes files.
- A task asks for the worker resource `memstudy-cell` = 1 (CELL_RESOURCE). Workers offer 1 of it and run one
  thread (`dask worker ADDRESS --nthreads 1 --resources memstudy-cell=1`; `local:N` starts them so), so a
  worker runs one cell at a time and timed cells do not share a worker's cores.
- Budget: each worker's budget is the spec's budget taken of that worker's memory (its Dask memory limit,
  else its host's available memory); a cell runs only on workers whose budget holds its need, and a cell
  too big for every worker is skipped by the sweep (`largest_budget_bytes`).
- A worker lost mid-cell: the scheduler reruns the task on another worker (Dask's `allowed-failures`, 3 by
  default); the client writes the cell's rows once, when its future completes. The lost worker's cell
  process dies with it (launcher: PR_SET_PDEATHSIG).
- `host_environments()`: every worker host's versions, BLAS, CPU and memory, for env.json.

Importing this module needs no Dask; creating a DaskExecutor does (`pip install 'memstudy[distributed]'`).
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import re
import socket
import socket
from dataclasses import dataclass
from typing import Any, Sequence

from .launcher import CellRequest, CellResult, cell_environment, launch

CELL_RESOURCE = "memstudy-cell"
CONNECT_TIMEOUT_SECONDS = 10.0  # for a scheduler to answer, and then for a first worker to join
EXTRA_HINT = "pip install 'memstudy[distributed]'"


class ClusterError(RuntimeError):
    """The cluster cannot be used (no Dask, no scheduler, no worker offering the resource); one line."""


@dataclass(frozen=True)
class WorkerInfo:
    address: str
    host: str
    memory_limit_bytes: int | None  # Dask's per-worker memory limit (None: unlimited)
    available_memory_bytes: int  # its host's, when it joined
    total_memory_bytes: int
    cells: float  # how many CELL_RESOURCE it offers

    @property
    def memory_bytes(self) -> int:
        """The memory a budget percentage is taken of."""
        if self.memory_limit_bytes:
            return min(self.memory_limit_bytes, self.available_memory_bytes)
        return self.available_memory_bytes


def _host_facts() -> dict[str, Any]:
    """Runs on each worker (client.run): where it is and how much memory its host has."""
    import psutil

    memory = psutil.virtual_memory()
    return {"host": socket.gethostname(), "available_memory_bytes": int(memory.available),
            "total_memory_bytes": int(memory.total)}


def _host_environment() -> dict[str, Any]:
    """Runs on each worker: its host's provenance (versions, BLAS, CPU, memory, the cells' environment)."""
    from .provenance import collect_env

    env = collect_env(cell_environment=cell_environment())
    return {key: env[key] for key in ("memstudy_version", "git", "python", "packages", "numpy", "machine", "os",
                                      "environment", "cell_environment")}


def run_on_worker(request: CellRequest, command: Sequence[str] | None) -> CellResult:
    """The task: one cell in a fresh process on this worker's host (launcher.launch), labelled with the worker."""
    from distributed import get_worker

    result = launch(request, command, cell_environment())
    result.worker = get_worker().address
    return result


def _check_reachable(address: str) -> None:
    """For tcp://host:port, one plain TCP connection first: a refused or unresolvable address fails at once with
    its reason, instead of after Dask's connection retries (an unanswering one still waits the timeout)."""
    match = re.fullmatch(r"(?:tcp://)?\[?([^\]/]+?)\]?(?::(\d+))?/?", address)
    if match is None:
        return  # another protocol (tls://, inproc://, ucx://): Dask decides
    host, port = match.group(1), int(match.group(2) or 8786)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(f"--cluster {address}: no Dask scheduler at {host}:{port} ({reason})") from None


def parse_local(address: str) -> int | None:
    """N for `local:N` (a LocalCluster of N workers), None for a scheduler address."""
    match = re.fullmatch(r"local:(\S*)", address)
    if match is None:
        return None
    if not match.group(1).isdigit() or int(match.group(1)) < 1:
        raise ClusterError(f"--cluster {address}: local:N needs a number of workers N >= 1")
    return int(match.group(1))


class DaskExecutor:
    """Cells on the Dask cluster at `address` (`tcp://host:8786`), or on a LocalCluster of N single-threaded
    worker processes on 127.0.0.1 (`local:N`), started here and closed by `shutdown()`."""

    def __init__(self, address: str, command: Sequence[str] | None = None):
        self.address = address
        self.command = list(command) if command is not None else None
        try:
            import distributed
        except ImportError:
            raise ClusterError(f"--cluster needs Dask's distributed package, an optional extra: {EXTRA_HINT}") from None
        self._cluster = None
        workers = parse_local(address)
        try:
            if workers is not None:
                self._cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, resources={CELL_RESOURCE: 1}, silence_logs=logging.ERROR)
                self.client = distributed.Client(self._cluster)
            else:
                _check_reachable(address)
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, ValueError) as exc:
            self._close()
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ClusterError(f"--cluster {address}: no Dask scheduler answered within "
                               f"{CONNECT_TIMEOUT_SECONDS:g} s ({reason})") from None
        self._executors: dict[tuple[str, ...], Any] = {}
        self._budgets: dict[str, int] = {}
        try:
            self.workers = self._cell_workers()
        except BaseException:
            self._close()
            raise

    def _cell_workers(self) -> dict[str, WorkerInfo]:
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_SECONDS)
        except (TimeoutError, OSError):
            raise ClusterError(f"--cluster {self.address}: the scheduler has no worker (start one: dask worker "
                               f"{self.address} --nthreads 1 --resources {CELL_RESOURCE}=1)") from None
        facts = self.client.run(_host_facts)
        infos = {}
        for address, worker in self.client.scheduler_info(n_workers=-1)["workers"].items():
            cells = float((worker.get("resources") or {}).get(CELL_RESOURCE, 0))
            if address not in facts or cells < 1:
                continue
            infos[address] = WorkerInfo(address, facts[address]["host"], worker.get("memory_limit") or None,
                                        facts[address]["available_memory_bytes"],
                                        facts[address]["total_memory_bytes"], cells)
        if not infos:
            raise ClusterError(f"--cluster {self.address}: no worker offers the resource {CELL_RESOURCE} (start "
                               f"workers with: dask worker ADDRESS --nthreads 1 --resources {CELL_RESOURCE}=1)")
        return infos

    # --- budget -----------------------------------------------------------------------------------------
    def set_budgets(self, budget_of_memory) -> dict[str, int]:
        """Each worker's budget in bytes, `budget_of_memory(memory_bytes)` (the spec's budget resolved against
        that worker's memory); kept for `submit`."""
        self._budgets = {address: int(budget_of_memory(info.memory_bytes)) for address, info in self.workers.items()}
        return dict(self._budgets)

    def largest_budget_bytes(self) -> int:
        return max(self._budgets.values())

    # --- cells ------------------------------------------------------------------------------------------
    def submit(self, request: CellRequest, reserve_bytes: int = 0) -> "cf.Future[CellResult | None]":
        """The cell on any worker offering CELL_RESOURCE, or, when some workers' budgets are too small for its
        need, only on those whose budgets hold it (a replacement of a lost worker, which has a new address,
        then gets none of those cells)."""
        fits = tuple(sorted(a for a, b in self._budgets.items() if b >= reserve_bytes))
        key = () if not fits or len(fits) == len(self._budgets) else fits
        executor = self._executors.get(key)
        if executor is None:  # one concurrent.futures executor per set of workers a cell may run on
            where = {"workers": list(key), "allow_other_workers": False} if key else {}
            executor = self.client.get_executor(pure=False, resources={CELL_RESOURCE: 1}, **where)
            self._executors[key] = executor
        return executor.submit(run_on_worker, request, self.command)

    def host_environments(self) -> dict[str, dict[str, Any]]:
        """Each worker host's provenance, by host name (workers on one host report it once)."""
        by_host: dict[str, dict[str, Any]] = {}
        for address, env in self.client.run(_host_environment).items():
            host = self.workers[address].host if address in self.workers else address
            by_host.setdefault(host, env)
        return by_host

    def worker_hosts(self) -> dict[str, str]:
        return {address: info.host for address, info in self.workers.items()}

    def stop(self) -> None:
        """An interrupt: cancel every cell not finished. A LocalCluster is closed (its workers' cells die with
        them); on a remote cluster a cell already running finishes on its worker and is discarded."""
        if self.client is not None:
            for executor in self._executors.values():
                executor.shutdown(wait=False)
        self._close()

    def shutdown(self) -> None:
        """Wait for the submitted cells, then disconnect (and close a LocalCluster). Safe after `stop`."""
        if self.client is not None:
            for executor in self._executors.values():
                executor.shutdown(wait=True)
        self._close()

    def _close(self) -> None:
        client, cluster = getattr(self, "client", None), self._cluster
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        self.client, self._cluster = None, None


__all__ = ["CELL_RESOURCE", "ClusterError", "DaskExecutor", "parse_local", "run_on_worker"]

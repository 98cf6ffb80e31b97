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
- Connecting: an address must answer Dask's handshake as a scheduler within CONNECT_TIMEOUT_SECONDS, or it is one
  error line (Dask's own client waits without a bound for the handshake: a web server's port, the scheduler's
  dashboard among them, held a sweep until the scheduler died, and one that answered made Dask allocate its
  "HTTP/1.1" as a 3 EiB frame length).
- Security: whoever reaches a scheduler on plain `tcp://` can run code on every worker. `tls://HOST:PORT` uses
  Dask's own security settings (distributed.comm.tls.ca-file, .client.cert, .client.key in Dask's configuration,
  read by `distributed.Security()`); a tls:// address without them is refused before any connection.
- The scheduler lost mid-sweep: Dask cancels every pending future; each becomes CellLost (launcher.py), which
  the sweep writes no row for, so that running the same command again runs those cells.
- `local:N` workers ignore SIGINT (`dask_setup`, their preload): a Ctrl-C in the terminal reaches the whole
  process group, and the sweep, not each worker, answers it (by closing the cluster, which ends their cells).

Importing this module needs no Dask; creating a DaskExecutor does (`pip install 'memstudy[distributed]'`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import os
import re
import signal
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from ..launcher import CellLost, CellRequest, CellResult, blas_policy, cell_environment, launch

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
    """Runs on each worker: its host's provenance (versions, BLAS, CPU, memory, the cells' environment and how they
    get their BLAS threads)."""
    from ..results.provenance import collect_env

    cells = cell_environment()
    env = collect_env(cell_environment=cells)
    return {**{key: env[key] for key in ("memstudy_version", "git", "python", "packages", "numpy", "machine", "os",
                                         "environment", "cell_environment")}, "blas_threads": blas_policy(cells)}


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run in each `local:N` worker process as it starts: ignore SIGINT. A Ctrl-C in the
    terminal reaches the whole foreground process group, and each worker printed its KeyboardInterrupt traceback;
    the sweep answers the Ctrl-C by closing the cluster, which stops the workers and their cells."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_on_worker(request: CellRequest, command: Sequence[str] | None) -> CellResult:
    """The task: one cell in a fresh process on this worker's host (launcher.launch), labelled with the worker."""
    from distributed import get_worker

    result = launch(request, command, cell_environment())
    result.worker = get_worker().address
    return result


def _check_reachable(address: str) -> None:
    """For tcp:// and tls://host:port, one plain TCP connection first: a refused or unresolvable address fails at
    once with its reason, instead of after Dask's connection retries (an unanswering one still waits the timeout)."""
    match = re.fullmatch(r"(?:tcp://|tls://)?\[?([^\]/]+?)\]?(?::(\d+))?/?", address)
    if match is None:
        return  # another protocol (inproc://, ucx://): Dask decides
    host, port = match.group(1), int(match.group(2) or 8786)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(f"--cluster {address}: no Dask scheduler at {host}:{port} ({reason})") from None


# the client's TLS settings: distributed.Security's attribute, and Dask's configuration key it is read from
TLS_SETTINGS = (("tls_ca_file", "distributed.comm.tls.ca-file"),
                ("tls_client_cert", "distributed.comm.tls.client.cert"),
                ("tls_client_key", "distributed.comm.tls.client.key"))


def _client_security(address: str, distributed: Any) -> Any:
    """The client's `distributed.Security` from Dask's configuration (distributed.comm.tls.*, require-encryption),
    checked: a tls:// address needs the CA that signed the scheduler's certificate and this client's own
    certificate (Dask's TLS is mutual), and every file named must exist."""
    try:
        security = distributed.Security()
    except (ValueError, TypeError) as exc:  # e.g. an unsupported distributed.comm.tls.min-version
        raise ClusterError(f"--cluster {address}: Dask's security configuration: {exc}") from None
    if address.startswith("tls://"):
        missing = [key for attr, key in TLS_SETTINGS[:2] if not getattr(security, attr)]
        if missing:
            raise ClusterError(
                f"--cluster {address}: no TLS certificate configured for Dask: {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} unset (Dask's configuration: ~/.config/dask/*.yaml, or "
                f"DASK_DISTRIBUTED__COMM__TLS__CA_FILE, __CLIENT__CERT, __CLIENT__KEY)")
        for attr, key in TLS_SETTINGS:
            path = getattr(security, attr)
            if path and "\n" not in path and not os.path.isfile(path):  # a PEM text itself holds newlines
                raise ClusterError(f"--cluster {address}: {key} = {path}: no such file")
    elif security.require_encryption:
        raise ClusterError(f"--cluster {address}: Dask's configuration requires encryption "
                           "(distributed.comm.require-encryption): use a tls:// address")
    return security


async def _identity(address: str, security: Any) -> Any:
    """Dask's handshake with `address`, then the `identity` request a scheduler answers with its type."""
    from distributed.comm import connect

    # Dask retries a failed connection (a refused TLS handshake too) until its timeout: half the bound, so that the
    # failure's reason, not the bound, ends the wait
    comm = await connect(address, timeout=CONNECT_TIMEOUT_SECONDS / 2, **security.get_connection_args("client"))
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _tls_reason(exc: BaseException) -> str | None:
    """OpenSSL's reason for a failed TLS handshake (CERTIFICATE_VERIFY_FAILED, TLSV1_ALERT_UNKNOWN_CA, ...) when
    `exc` or its causes carry one; Dask wraps the SSLError (in a message, or tornado's `real_error`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen.reason or str(seen)
        found = re.search(r"\[SSL: ([A-Z0-9_]+)\]", str(seen))
        if found:
            return found.group(1)
        seen = getattr(seen, "real_error", None) or seen.__cause__ or seen.__context__
    return None


def _check_scheduler(address: str, security: Any) -> None:
    """Bounded in time: the address answers Dask's handshake, as a scheduler. (In a thread of its own, with an
    event loop of its own: the caller's thread may run one already, a notebook's.)"""
    probe = asyncio.wait_for(_identity(address, security), CONNECT_TIMEOUT_SECONDS)
    try:
        with cf.ThreadPoolExecutor(1, thread_name_prefix="memstudy-probe") as pool:
            reply = pool.submit(asyncio.run, probe).result()
    except (asyncio.TimeoutError, TimeoutError):
        raise ClusterError(
            f"--cluster {address}: not a Dask scheduler: no answer to Dask's handshake within "
            f"{CONNECT_TIMEOUT_SECONDS:g} s (a dashboard's or another service's port? a scheduler listens on 8786 "
            "unless told otherwise)") from None
    except Exception as exc:  # noqa: BLE001 - whatever the other end made of it, it is one line
        tls = _tls_reason(exc)
        if tls is not None or (address.startswith("tls://") and isinstance(exc, OSError)):
            raise ClusterError(f"--cluster {address}: the TLS handshake failed ({tls or type(exc).__name__}); check "
                               "the certificates in Dask's configuration (distributed.comm.tls.*)") from None
        detail = "" if isinstance(exc, MemoryError) else f": {' '.join(str(exc).split())[:120]}"
        hint = "; a scheduler that uses TLS needs a tls:// address" if not address.startswith("tls://") else ""
        raise ClusterError(f"--cluster {address}: not a Dask scheduler: it answered, but not in Dask's protocol "
                           f"({type(exc).__name__}{detail}){hint}") from None
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind != "Scheduler":
        raise ClusterError(f"--cluster {address}: not a Dask scheduler: it answered as "
                           f"{'a Dask ' + kind if kind else 'something else'}")


def parse_local(address: str) -> int | None:
    """N for `local:N` (a LocalCluster of N workers), None for a scheduler address."""
    match = re.fullmatch(r"local:(\S*)", address)
    if match is None:
        return None
    if not match.group(1).isdigit() or int(match.group(1)) < 1:
        raise ClusterError(f"--cluster {address}: local:N needs a number of workers N >= 1")
    return int(match.group(1))


class _QuietDask:
    """Dask's log lines off while the executor is open (its StreamHandlers raised to CRITICAL, as Dask's own
    `silence_logs` does), restored on close: the sweep reports what went wrong in one line of its own, where Dask
    logged tracebacks (a client losing its scheduler, a worker closing under a running task)."""

    def __init__(self) -> None:
        self._restore: list[tuple[logging.Handler, int]] = []
        for handler in logging.getLogger("distributed").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.level < logging.CRITICAL:
                self._restore.append((handler, handler.level))
                handler.setLevel(logging.CRITICAL)

    def restore(self) -> None:
        for handler, level in self._restore:
            handler.setLevel(level)
        self._restore = []


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
        self.client = None
        self._quiet = _QuietDask()
        workers = parse_local(address)
        try:
            if workers is not None:
                # no dashboard; the scheduler's HTTP server (Dask always starts one) on a free loopback port, not
                # 8787, which is often taken and then printed a warning
                self._cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    resources={CELL_RESOURCE: 1}, silence_logs=logging.CRITICAL, preload=[__name__])
                self.client = distributed.Client(self._cluster)
            else:
                security = _client_security(address, distributed)
                _check_reachable(address)
                _check_scheduler(address, security)
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT_SECONDS, security=security)
        except ClusterError:
            self._close()
            raise
        except Exception as exc:  # noqa: BLE001 - the cluster cannot be used: one line, whatever Dask raised
            self._close()
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            what = "could not start the local cluster" if workers is not None else \
                f"could not connect to the Dask scheduler within {CONNECT_TIMEOUT_SECONDS:g} s"
            raise ClusterError(f"--cluster {address}: {what} ({reason})") from None
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
        return self._relay(executor.submit(run_on_worker, request, self.command))

    def _relay(self, inner: "cf.Future[CellResult]") -> "cf.Future[CellResult | None]":
        """The cell's future as the sweep sees it: Dask cancels every pending future when the client loses the
        scheduler, and such a cell is CellLost (no row), not a failed one."""
        outer: cf.Future = cf.Future()

        def relay(done: cf.Future) -> None:
            if done.cancelled():
                outer.set_exception(CellLost(f"--cluster {self.address}: lost the connection to the Dask scheduler "
                                             "before the cell finished"))
            elif done.exception() is not None:
                outer.set_exception(done.exception())
            else:
                outer.set_result(done.result())

        inner.add_done_callback(relay)
        return outer

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
        try:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        finally:
            self.client, self._cluster = None, None
            self._quiet.restore()


__all__ = ["CELL_RESOURCE", "CONNECT_TIMEOUT_SECONDS", "ClusterError", "DaskExecutor", "dask_setup", "parse_local",
           "run_on_worker"]

"""Cells in fresh processes on this machine, several at a time: the local executor behind `memstudy sweep --jobs N`.

It has the `concurrent.futures` shape the sweep expects of every executor (`submit(request, reserve_bytes) ->
Future`); each of its threads waits on one cell process that `launcher.launch` started.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Sequence

from ..launcher import CELL_COMMAND, CellRequest, CellResult, LiveCells, cell_environment, launch


class _MemoryGate:
    """Admit a cell while the running cells' reserved bytes sum to at most the budget (one always runs)."""

    def __init__(self, budget_bytes: int | None):
        self.budget, self.in_use, self.running = budget_bytes, 0, 0
        self.cond = threading.Condition()

    def acquire(self, need: int) -> None:
        with self.cond:
            while self.budget is not None and self.running and self.in_use + need > self.budget:
                self.cond.wait()
            self.in_use += need
            self.running += 1

    def release(self, need: int) -> None:
        with self.cond:
            self.in_use -= need
            self.running -= 1
            self.cond.notify_all()


class LocalExecutor:
    """Cells in fresh processes on this machine, `jobs` at a time (threads that wait on their subprocess).

    `budget_bytes`: cells start only while the bytes reserved by running cells (their predicted peaks) fit.
    """

    def __init__(self, jobs: int = 1, command: Sequence[str] | None = None, env: dict[str, str] | None = None,
                 budget_bytes: int | None = None):
        self.jobs = jobs
        self.command = list(command) if command is not None else list(CELL_COMMAND)
        self.env = env if env is not None else cell_environment()
        self.live = LiveCells()
        self._gate = _MemoryGate(budget_bytes)
        self._pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="memstudy-cell")

    def submit(self, request: CellRequest, reserve_bytes: int = 0) -> "cf.Future[CellResult | None]":
        return self._pool.submit(self._run, request, reserve_bytes)

    def _run(self, request: CellRequest, reserve_bytes: int) -> CellResult | None:
        self._gate.acquire(reserve_bytes)
        try:
            return launch(request, self.command, self.env, self.live)
        finally:
            self._gate.release(reserve_bytes)

    def stop(self) -> None:
        """An interrupt: cancel what has not started, kill every cell that has."""
        self.live.stop_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

"""How much CPU other processes used while we timed: the machine's busy time minus our own.

On a 2-core machine a neighbour that keeps one core busy halves what a 2-thread BLAS can do, so every
timed figure carries the average number of cores others used meanwhile (`foreign_cores`). Linux only
(/proc/stat); elsewhere the figure is None.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + (values[7] if len(values) > 7 else 0)
    return busy / TICKS


def _process_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            text = fh.read()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _own_seconds(pids: Iterable[int]) -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + sum(_process_seconds(p) for p in pids)


class ForeignLoad:
    """`start()`, ... , `cores()`: average cores busy with work not ours (this process, `helper_pids`)."""

    def __init__(self, helper_pids: Callable[[], Iterable[int]] = tuple):
        self.helper_pids = helper_pids
        self._start: tuple[float, float | None, float] | None = None

    def start(self) -> "ForeignLoad":
        self._start = (time.perf_counter(), _machine_busy_seconds(), _own_seconds(self.helper_pids()))
        return self

    def cores(self) -> float | None:
        if self._start is None:
            return None
        wall0, busy0, own0 = self._start
        busy1 = _machine_busy_seconds()
        if busy0 is None or busy1 is None:
            return None
        wall = time.perf_counter() - wall0
        if wall <= 0:
            return None
        foreign = (busy1 - busy0) - (_own_seconds(self.helper_pids()) - own0)
        return max(foreign, 0.0) / wall


def wait_until_quiet(threshold: float, max_seconds: float, probe_seconds: float = 2.0,
                     log: Callable[[str], None] | None = None) -> float | None:
    """Sleep until other processes use at most `threshold` cores over one `probe_seconds` window, or until
    `max_seconds` have passed; returns the last window's load (None where it can't be measured)."""
    deadline = time.perf_counter() + max_seconds
    told = False
    while True:
        load = ForeignLoad().start()
        time.sleep(probe_seconds)
        cores = load.cores()
        if cores is None or cores <= threshold or time.perf_counter() >= deadline:
            return cores
        if log is not None and not told:
            log(f"    waiting for other processes to quieten ({cores:.2f} cores busy; up to {max_seconds:g} s)")
            told = True

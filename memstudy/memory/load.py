"""How much CPU other processes used while we timed: the machine's busy time minus our own.

On a 2-core machine a neighbour that keeps one core busy halves what a 2-thread BLAS can do, so a timed
figure carries the average number of cores others used meanwhile (`foreign_cores`). Linux only
(/proc/stat); elsewhere the figure is None. The kernel counts CPU time in ticks (SC_CLK_TCK, usually 100
per second), so over a quarter of a second the figure resolves about 0.04 core per core.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float | None:
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


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) of another process of ours, 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            text = fh.read()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def own_seconds(pids: Iterable[int] = ()) -> float:
    """CPU seconds of this process (every thread), its reaped children and the processes `pids`."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + sum(process_seconds(p) for p in pids)


class ForeignLoad:
    """`start()`, ... , `cores()`: average cores busy with work not ours (this process, `helper_pids`)."""

    def __init__(self, helper_pids: Callable[[], Iterable[int]] = tuple):
        self.helper_pids = helper_pids
        self._start: tuple[float, float | None, float] | None = None

    def start(self) -> "ForeignLoad":
        self._start = (time.perf_counter(), machine_busy_seconds(), own_seconds(self.helper_pids()))
        return self

    def cores(self) -> float | None:
        """Other processes' CPU seconds since `start()` ÷ wall seconds (never below 0); None if unknown."""
        if self._start is None:
            return None
        wall0, busy0, own0 = self._start
        busy1 = machine_busy_seconds()
        if busy0 is None or busy1 is None:
            return None
        wall = time.perf_counter() - wall0
        if wall <= 0:
            return None
        foreign = (busy1 - busy0) - (own_seconds(self.helper_pids()) - own0)
        return max(foreign, 0.0) / wall


__all__ = ["ForeignLoad", "machine_busy_seconds", "own_seconds", "process_seconds"]

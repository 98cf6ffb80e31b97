"""How much CPU other processes used while we timed: the machine's busy time minus our own.

On a 2-core machine a neighbour that keeps one core busy halves what a 2-thread BLAS can do, so a timed
figure carries the average number of cores others used meanwhile (`foreign_cores`). Linux only
(/proc/stat); elsewhere the figure is None. The kernel counts CPU time in ticks (SC_CLK_TCK, usually 100
per second), so over a quarter of a second the figure resolves about 0.04 core per core.

`busy_cores(window)` is the machine's busy cores over a short window, whoever keeps them busy: the launcher reads
it as a cell starts, to give that cell's BLAS no more threads than there are free cores (launcher.py).
`LOADED_CORES` is where a timing stops being a quiet machine's: tables and the README flag figures above it.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Other processes' average busy cores above which a timing is flagged as taken under load: half a core is enough
# to stall a BLAS thread that waits for its partner (one busy core made a 2-thread CNN step 15-25x slower).
LOADED_CORES = 0.5


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


def busy_cores(window_seconds: float = 0.1) -> float | None:
    """How many cores the whole machine kept busy over the next `window_seconds` (this process sleeps meanwhile);
    None where /proc/stat cannot be read. At 100 ticks per second a 0.1 s window resolves 0.1 core."""
    busy0, wall0 = machine_busy_seconds(), time.perf_counter()
    if busy0 is None:
        return None
    time.sleep(window_seconds)
    busy1, wall = machine_busy_seconds(), time.perf_counter() - wall0
    if busy1 is None or wall <= 0:
        return None
    return max(busy1 - busy0, 0.0) / wall


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


__all__ = ["LOADED_CORES", "ForeignLoad", "busy_cores", "machine_busy_seconds", "own_seconds", "process_seconds"]

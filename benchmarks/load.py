"""Waiting for a quiet machine before timing. The load figure itself (`foreign_cores`: the cores other
processes kept busy meanwhile) is memstudy.measure.load.ForeignLoad, which the sweep's cells record too.
"""
from __future__ import annotations

import time
from typing import Callable

from memstudy.measure.load import ForeignLoad  # noqa: F401  (re-exported: benchmarks.run imports it from here)


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

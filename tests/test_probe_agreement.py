"""The independent probes agree with the ledger's step peak, measured in fresh cell processes.

launch starts `python -m memstudy.measure.cell` with MALLOC_MMAP_THRESHOLD_=65536, so every buffer of
64 KiB or more is its own mmap and RSS follows live memory. Every config here has a step peak of at
least 1 MB, so allocator and page granularity stay small next to it.

- tracemalloc sees every numpy buffer, plus the small temporaries the ledger cannot see (softmax's
  row maxima, the optimisers' chunks): within 5 % of the ledger, in every repeat.
- RSS (VmHWM reset) is the kernel's view. Linux keeps a process's RSS in per-CPU counters that are
  folded into the total only in batches (32 pages per CPU), and VmRSS/VmHWM read the folded total, so a
  process that moves between CPUs during a step can read a few hundred KiB off, whatever the step's
  size. Measured on 2 CPUs for train depth 8 width 256 batch 64 (step peak 2.08 MiB): RSS minus ledger
  ranged from -311 KiB (-14.6 %) to +173 KiB across repeats; pinned to one CPU (taskset -c 0) it was
  -51 KiB in every repeat. So the RSS check uses the median of three repeats; every figure is printed.
- memory_profiler samples RSS from another process: reported (printed), not asserted.
"""
from __future__ import annotations

import statistics

import pytest

from memstudy.config import normalize
from memstudy.measure import probes
from memstudy.run.launcher import CellRequest, launch

REPEATS = 3
TRACEMALLOC_TOLERANCE = 0.05
RSS_TOLERANCE = 0.15
CONFIGS = {
    "train-d8-w256-b64": dict(mode="train", depth=8, width=256, batch_size=64),
    "train-d4-w512-b256": dict(mode="train", depth=4, width=512, batch_size=256),
    "inference-d4-w512-b1024": dict(mode="inference", depth=4, width=512, batch_size=1024),
    # float32 Adam: a float64 scalar in its update once cast every chunk through a hidden ufunc buffer (+6.8%)
    "train-f32-adam-d8-w256-b64": dict(mode="train", optimizer="adam", depth=8, width=256, batch_size=64),
    # exactly 1 MiB, float64: numpy's default 64 KiB ufunc buffer for the bias add alone would be +6.25%
    "inference-f64-d2-w256-b256": dict(mode="inference", dtype="float64", depth=2, width=256, batch_size=256),
    "train-f64-adam-d2-w256-b512": dict(mode="train", dtype="float64", optimizer="adam", depth=2, width=256,
                                        batch_size=512),
}

# Checked by tracemalloc only: at exactly 1 MiB, RSS's floor of error (Linux folds per-CPU RSS counters in
# batches, so VmHWM reads up to a few hundred KiB low) is itself near 15%; measured 0.79-0.87 here.
TRACEMALLOC_ONLY = {"inference-f64-d2-w256-b256"}

# `slow` (run by `make test-all`): each cell is a fresh process of 3 repeats × 4 probes (5-10 s on the 2-core
# test machine), and what these add is covered more cheaply by the fast suite: a second large training step
# (the same code path as train-d8-w256-b64), float64 Adam (Adam's path: the float32 Adam cell; float64 against
# float32: the ledger's dtype grid), and the bias add's hidden ufunc buffer at exactly 1 MiB (in-process by
# tests/test_ufunc_buffer.py)
SLOW = {"train-d4-w512-b256", "train-f64-adam-d2-w256-b512", "inference-f64-d2-w256-b256"}


@pytest.fixture(scope="module", ids=list(CONFIGS),
                params=[pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in CONFIGS])
def cell(request):
    config = normalize(CONFIGS[request.param])
    outcome = launch(CellRequest(config, REPEATS, timeout_seconds=60))
    assert outcome.error == "", outcome.error
    assert len(outcome.rows) == REPEATS
    print(f"\n{request.param}:")
    for row in outcome.rows:
        ledger = row["step_peak_bytes"]
        figures = ", ".join(
            f"{name} {row[field]} ({row[field] / ledger:.3f})"
            for name, field in (("tracemalloc", "tracemalloc_step_peak_bytes"), ("rss", "rss_step_peak_bytes"),
                                ("mprof", "mprof_step_peak_bytes"))
            if row[field] is not None
        )
        print(f"  repeat {row['repeat']}: ledger step peak {ledger}; {figures}")
    return request.param, outcome.rows


def test_step_peak_is_at_least_1_MB(cell):
    name, rows = cell
    for row in rows:
        assert row["step_peak_bytes"] >= 1_000_000, (name, row["step_peak_bytes"])
        assert row["step_peak_bytes"] == row["predicted_step_peak_bytes"]


def test_tracemalloc_within_5_percent_of_ledger(cell):
    name, rows = cell
    for row in rows:
        ledger, traced = row["step_peak_bytes"], row["tracemalloc_step_peak_bytes"]
        assert traced is not None, f"{name}: tracemalloc unavailable"
        assert abs(traced - ledger) <= TRACEMALLOC_TOLERANCE * ledger, (name, row["repeat"], traced, ledger)


def test_rss_within_15_percent_of_ledger(cell):
    if not probes.vmhwm_resettable():
        pytest.skip("VmHWM cannot be reset here (no /proc/self/clear_refs): RSS would be sampled")
    name, rows = cell
    if name in TRACEMALLOC_ONLY:
        pytest.skip(f"{name}: a tracemalloc check; RSS's per-CPU counter error is near 15% at 1 MiB")
    ledger = rows[0]["step_peak_bytes"]
    rss = [row["rss_step_peak_bytes"] for row in rows]
    assert None not in rss, f"{name}: RSS probe unavailable"
    median = statistics.median(rss)
    assert abs(median - ledger) <= RSS_TOLERANCE * ledger, (name, rss, ledger)

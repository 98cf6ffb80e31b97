"""Budgets that hold: a cell's need covers construction, the step and the cell's own overhead; the cell runs under
an address-space limit from a measured baseline, and a cell that needs more than predicted fails with the reason
(a MemoryError under RLIMIT_AS), never the OOM killer."""
from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from memstudy.measure.predict import predict
from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import get_family, normalize
from memstudy.run.budget import cell_need
from memstudy.run.launcher import process_baseline
from memstudy.run.launcher import CellRequest, cell_environment, launch
from memstudy.run.spec import cell_id, load_spec
from memstudy.run.sweep import run_sweep
from sweep_helpers import read_rows

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RLIMIT_AS baseline needs Linux /proc")


@pytest.fixture(scope="module")
def baseline():
    measured = process_baseline(cell_environment())
    assert measured is not None and measured.vm_peak_bytes > measured.hwm_bytes > 0
    return measured


def test_building_a_model_draws_its_weights_in_their_own_dtype():
    config = normalize({"depth": 2, "width": 1024, "batch_size": 8, "dtype": "float32"})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        model = get_family("mlp").build(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    parameter_bytes = sum(p.data.nbytes for p in model.parameters())
    largest = max(p.data.nbytes for p in model.parameters())
    # a float64 detour would hold the largest weight twice over (8 bytes per element) on top
    assert peak < parameter_bytes + largest // 4, (peak, parameter_bytes)
    assert {p.data.dtype for p in model.parameters()} == {np.dtype("float32")}


@pytest.mark.parametrize("extra", [
    {}, {"mode": "inference"}, {"optimizer": "adam"}, {"policy": "half"}, {"policy": "all", "checkpoint": "sqrt"},
], ids=["sgd", "inference", "adam", "half", "all-sqrt"])
def test_real_cells_run_within_their_limit(baseline, extra):
    config = normalize({"depth": 6, "width": 512, "batch_size": 64, **extra})
    need = cell_need(config, predict(config), baseline)
    limit = need.limit_bytes(baseline)
    result = launch(CellRequest(config, 1, timeout_seconds=120, memory_limit_bytes=limit))
    assert result.error == "", result.error
    row = result.rows[0]
    assert row["mem_limit_bytes"] == limit
    assert row["vm_peak_bytes"] < limit
    assert row["hwm_bytes"] <= need.total_bytes  # resident: within what the budget counted


def test_the_limit_reads_the_cells_own_need_and_grows_with_it(baseline):
    small = normalize({"depth": 2, "width": 64, "batch_size": 8})
    big = normalize({"depth": 2, "width": 2048, "batch_size": 8})
    need_small, need_big = (cell_need(c, predict(c), baseline) for c in (small, big))
    assert need_big.limit_bytes(baseline) - need_small.limit_bytes(baseline) >= \
        predict(big)["predicted_peak_bytes"] - predict(small)["predicted_peak_bytes"]
    assert need_small.limit_bytes(None) is None


SPEC = """
[study]
name = "limits"
[grid]
depth = 2
width = [64, 4096]
batch_size = 8
[run]
repeats = 1
budget = "4GiB"
timeout_seconds = 120
"""


def test_a_cell_needing_more_than_predicted_fails_with_the_reason_and_the_sweep_goes_on(tmp_path):
    """An under-prediction (width 4096 predicted as if it were width 64): the cell's address-space limit stops it
    with a MemoryError, recorded as a failed row; the other cell is measured."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path)

    def under_predict(config):
        return predict({**config, "width": 64, "in_features": 64})

    outcome = run_sweep(spec, tmp_path / "out", progress=False, predictor=under_predict)
    assert (outcome.ok, outcome.failed, outcome.exit_status) == (1, 1, 1)
    rows = {r["width"]: r for r in read_rows(tmp_path / "out")}
    assert rows["64"]["status"] == "ok" and int(rows["64"]["mem_limit_bytes"]) > int(rows["64"]["vm_peak_bytes"])
    failed = rows["4096"]
    assert failed["status"] == "failed"
    assert ("MemoryError" in failed["error"] or "Memory allocation" in failed["error"]) and "memory limit" in \
        failed["error"], failed["error"]
    assert "SIG" not in failed["error"]  # not killed: stopped by its own limit
    assert failed["cell"] == cell_id(spec.cells()[1])


def test_a_model_too_big_for_the_budget_is_refused_in_time_that_does_not_grow_with_it(tmp_path):
    """A million layers of 64 MiB: the shape-only build stops once it has drawn the budget's worth."""
    import time

    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC.replace("depth = 2", "depth = [2, 1000000]").replace("width = [64, 4096]", "width = 4096"))
    spec = load_spec(spec_path)
    start = time.monotonic()
    outcome = run_sweep(spec, tmp_path / "out", progress=False, cell_command=[sys.executable, "-c", "pass"])
    assert time.monotonic() - start < 30
    assert outcome.skipped == 1
    (deep,) = [r for r in read_rows(tmp_path / "out") if r["depth"] == "1000000"]
    assert deep["status"] == "skipped" and "parameters and batch alone need" in deep["error"]
    assert "exceeds the budget 4.00 GiB" in deep["error"]


def test_the_shape_only_build_stops_at_its_draw_limit():
    from memstudy.autograd.meta import DrawLimitExceeded

    config = normalize({"depth": 100, "width": 1024, "batch_size": 8})
    parameter_bytes = predict(config)["parameter_bytes"]
    with pytest.raises(DrawLimitExceeded) as stopped:  # every block built: it stops within one layer's draw
        predict(config, max_drawn_bytes=parameter_bytes // 2, memoise=False)
    assert parameter_bytes // 2 < stopped.value.drawn_bytes < parameter_bytes // 2 + 2 * 1024 * 1024 * 4
    # repeated blocks built once: the block standing for 98 counts as 98 against the limit, at once
    with pytest.raises(DrawLimitExceeded) as stopped:
        predict(config, max_drawn_bytes=parameter_bytes // 2)
    assert parameter_bytes // 2 < stopped.value.drawn_bytes <= parameter_bytes
    for memoise in (True, False):
        assert predict(config, max_drawn_bytes=parameter_bytes * 2, memoise=memoise)["parameter_bytes"] == \
            parameter_bytes

"""One cell: build a model, warm it up, and measure one step with the ledger, each probe and a clock.

Run as `python -m memstudy.measure.cell` with a JSON object on stdin (the config fields plus `repeats`,
and optionally `timeline_path` and `by_layer`); it prints one JSON row per repeat. It imports no pandas,
so a fresh cell process starts fast and its memory baseline is clean.

A measured step is a steady-state step: the optimiser state exists (one warm-up step ran), gradients
are None, and the baseline is taken just before the step. The ledger and tracemalloc each measure their own
step, so that neither's bookkeeping (the ledger's events, tracemalloc's traces) inflates another's figure; RSS
(the kernel's VmHWM) and memory_profiler (a monitor process reading our RSS) watch one step together, since
neither allocates in the step (probes.rss_and_mprof_step_peak_bytes).

After the warm-up, everything alive (modules, model, optimiser state) is moved out of the garbage collector's
reach (gc.freeze): the baseline's gc.collect() before each step then scans only what the steps made, not the
~26,000 objects of the imports (30 ms a collection on the 2-core machine, five per repeat). The collection frees
exactly what it freed before: the frozen objects were alive when frozen. Asked for (`phase_seconds` in the
request), each row carries the seconds of each phase of the cell (benchmarks/cell_profile.py).
"""
from __future__ import annotations

import gc
import json
import socket
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from ..autograd.autocast import CastWeight
from ..autograd.meta import Unsupported
from ..autograd.ops.conv import Conv2d
from ..autograd.ops.emulate import EMULATION_PREFIX
from ..config import normalize
from ..parallel import rank
from . import probes
from .agreement import prediction_matches, unavailable_prediction
from .generation import generation_figures
from .load import ForeignLoad
from .workload import Workload
from .predict import predict, predicted_row
from ..run.results.fields import CONFIG_FIELDS, PARALLEL_NAMES, ROW_FIELDS
from ..run.results.provenance import model_source

MIN_TIMED_STEPS = 3
MAX_TIMED_STEPS = 20
TIMING_BUDGET_SECONDS = 0.25


class Phases:
    """Wall seconds per named phase of a cell, accumulated (`mark(name)`: the time since the last mark was `name`'s).
    Off (`enabled` False) it costs one attribute test a mark."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        if self.enabled:
            now = time.perf_counter()
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
            self._last = now


def _median_step_seconds(step: Callable[[], Any], reset: Callable[[], None]) -> float:
    timings: list[float] = []
    while len(timings) < MIN_TIMED_STEPS or (sum(timings) < TIMING_BUDGET_SECONDS and len(timings) < MAX_TIMED_STEPS):
        reset()
        start = time.perf_counter()
        step()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def _address_space_limit_bytes() -> int | None:
    """The RLIMIT_AS this process runs under (the launcher sets it), None when unlimited."""
    try:
        import resource
    except ImportError:  # not on a Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def measure(raw_config: dict[str, Any], repeats: int = 1, timeline_path: str | None = None,
            by_layer: bool = False, phases: Phases | None = None) -> list[dict[str, Any]]:
    """Rows (dicts with every ROW_FIELDS key) for `repeats` measured steps of one configuration; a step the
    shape-only arrays cannot follow is measured anyway, its rows saying why it has no prediction."""
    phases = phases or Phases()
    config = normalize(raw_config)
    try:
        prediction = predict(config)
    except Unsupported as exc:
        prediction = unavailable_prediction(str(exc))
    phases.mark("predict")
    work = Workload(config)
    phases.mark("model_build")
    return measure_workload(work, config, prediction, repeats, timeline_path, by_layer, phases=phases)


def measure_workload(work: Workload, config: dict[str, Any], prediction: dict[str, Any], repeats: int = 1,
                     timeline_path: str | None = None, by_layer: bool = False,
                     on_account: Callable[[Any], None] | None = None,
                     phases: Phases | None = None) -> list[dict[str, Any]]:
    """The measured steps of a built workload: warm-up, then per repeat the ledger, each probe and the clock.
    `on_account` receives each repeat's ledger account; `phases` the seconds of each phase."""
    phases = phases or Phases()
    # the approximate policy's gradient error, against `minimal` at the same (initial) parameters
    grad_rel_error = work.gradient_error() if work.train and config["policy"] != "minimal" else None
    # the precision's, against a float64 twin at the same parameters (asked for: it costs a float64 step)
    grad_error_vs_float64 = work.gradient_error_vs_float64() if work.train and config.get("float64_reference") \
        else None
    work.warm_up()  # optimiser state now exists (a loss scaler has backed off below overflow), caches are warm
    source = model_source(config.get("model"))  # the model file this process imported (provenance.py)
    work.reset()
    phases.mark("warm_up")
    caller_froze = gc.get_freeze_count() > 0  # the fork server froze its imports: that stays as it is
    gc.freeze()  # what is alive now stays alive: the baseline's collections need not scan it (module docstring)
    try:
        return _measure_repeats(work, config, prediction, repeats, timeline_path, by_layer, on_account, phases,
                                grad_rel_error, grad_error_vs_float64, source)
    finally:
        if not caller_froze:  # in-process (a notebook's measure_model): the collector as it was
            gc.unfreeze()


def _measure_repeats(work: Workload, config: dict[str, Any], prediction: dict[str, Any], repeats: int,
                     timeline_path: str | None, by_layer: bool, on_account: Callable[[Any], None] | None,
                     phases: Phases, grad_rel_error: float | None, grad_error_vs_float64: float | None,
                     source: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for repeat in range(repeats):
        # other processes' load over the whole repeat (probes' steps and timed steps): the timed steps of a
        # small model last milliseconds, far below the kernel's 10 ms accounting tick
        load = ForeignLoad().start()
        work.reset()
        phases.mark("reset")
        account = work.ledger_step()
        if on_account is not None:
            on_account(account)
        if timeline_path and repeat == 0:
            account.write_timeline(timeline_path)
        phases.mark("ledger_step")
        work.reset()
        phases.mark("reset")
        tracemalloc_bytes = probes.tracemalloc_step_peak_bytes(work.step)
        phases.mark("tracemalloc_step")
        work.reset()
        phases.mark("reset")
        # the process's absolute high-water mark so far (warm-up and the probes' steps included);
        # read before the RSS probe, whose VmHWM reset also clears ru_maxrss
        hwm = probes.hwm_bytes()
        rss_bytes, rss_method, mprof_bytes = probes.rss_and_mprof_step_peak_bytes(work.step, work.reset)
        phases.mark("rss_mprof_step")
        # timed steps start from gradients None; no gc.collect() in between (it costs milliseconds and is
        # not part of a step)
        step_seconds = _median_step_seconds(work.step, work.optimizer.zero_grad)
        phases.mark("timed_steps")
        foreign_cores = load.cores()
        row: dict[str, Any] = {name: config.get(name) for name in CONFIG_FIELDS + PARALLEL_NAMES}
        row.update(config)  # a user family's own fields too
        row["repeat"] = repeat
        peak = account.peak_by_category
        row.update(
            parameter_bytes=account.registered_bytes["parameter"],
            optimizer_state_bytes=account.registered_bytes["optimizer_state"],
            input_bytes=account.registered_bytes["input"],
            peak_bytes=account.peak_bytes,
            step_peak_bytes=account.step_peak_bytes,
            activation_bytes=account.activation_bytes,
            saved_tensors=account.saved_tensors,
            recomputed_ops=account.recomputed_ops,
            grad_rel_error=grad_rel_error,
            grad_error_vs_float64=grad_error_vs_float64,
            weight_copy_bytes=sum(b.nbytes for b in account.buffers if b.op == CastWeight.name),
            peak_emulation_bytes=sum(b.nbytes for b in account.live_at(account.peak_event)
                                     if b.op.rpartition(".")[2].startswith(EMULATION_PREFIX)),
            **{f"peak_{c}_bytes": peak[c] for c in peak},
            max_gradient_bytes=account.max_by_category["gradient"],
            **predicted_row(prediction),
            **generation_figures(account),
            tracemalloc_step_peak_bytes=tracemalloc_bytes,
            rss_step_peak_bytes=rss_bytes,
            mprof_step_peak_bytes=mprof_bytes,
            hwm_bytes=hwm,
            rss_method=rss_method,
            step_seconds=step_seconds,
            foreign_cores=None if foreign_cores is None else round(foreign_cores, 3),
            vm_peak_bytes=probes.vm_peak_bytes(),
            mem_limit_bytes=_address_space_limit_bytes(),
            host=socket.gethostname(),
            worker=None,  # the sweep names the Dask worker that started the cell
            blas_threads=None, free_cores=None,  # the launcher records these: it set the threads before we started
            model_source_hash=source["sha256"] if source else None,
            status="ok",
            error="",
            prediction_unavailable=prediction.get("prediction_unavailable", ""),
            # the rank the figures are (memstudy/parallel/rank.py); measured, not shape-only
            **rank.row_fields(config, shape_only=False),
            communication_bytes=sum(b for _, b in account.collective_bytes.values()),
            **conv_figures(account),
        )
        row["prediction_matches"] = prediction_matches(row)
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:  # a programming error in this module, reported like any other cell failure
            raise RuntimeError(f"the cell's row lacks {', '.join(missing)}")
        if by_layer:
            row["by_layer"] = account.by_layer()
            row["by_op"] = account.by_op()
        if phases.enabled:
            phases.mark("row")
            row["phase_seconds"] = dict(phases.seconds)  # so far: the last row's covers the whole cell
        rows.append(row)
        work.reset()
        phases.mark("reset")
    return rows


CONV_OP = Conv2d.name


def conv_figures(account: Any) -> dict[str, Any]:
    """The row's convolution columns (run/results/fields.py: CONV_ROW_FIELDS): what each convolution ran, as it
    told the ledger, and the most bytes of their workspaces alive at once; empty without a convolution."""
    labels = [label for op, _, label in account.choices if op == CONV_OP]
    if not labels:
        return {"conv_algo_ran": None, "conv_workspace_bytes": None}
    ran = labels[0] if len(set(labels)) == 1 else ",".join(labels)
    return {"conv_algo_ran": ran, "conv_workspace_bytes": account.max_live_bytes(CONV_OP + ".")}


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        repeats = int(request.pop("repeats", 1))
        timeline_path = request.pop("timeline_path", None)
        by_layer = bool(request.pop("by_layer", False))
        phases = Phases(bool(request.pop("phase_seconds", False)))
        request.pop("repeat", None)
        for row in measure(request, repeats, timeline_path, by_layer, phases):
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
    except Exception as exc:  # the parent records the last stderr line as the failure's reason
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

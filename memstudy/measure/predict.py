"""Predict a step's memory from the configuration alone: the engine itself, run on shape-only arrays.

Inside `autograd.meta.meta_mode()` the family's model and batch are built as `MetaArray`s (shape, dtype,
strides, views; no data), by the same `Workload` a measured cell uses. The step then runs as a cell runs it
(from the steady state, the optimiser's state made as its first update makes it: `Optimizer.prepare`, where a cell
takes one warm-up step; gradients None; then one step under the memory ledger): every
op, the checkpoint's recompute, the saved-tensor policy and the optimiser run their own code by numpy's
dispatch, and the ledger counts the MetaArrays' buffers as it counts real ones. So the prediction is the
ledger's account of the real step, byte for byte, and no op costs more for larger arrays (no numbers exist).

Repeated blocks are predicted once (`predict`, memoised): a family that builds its alike blocks through
`nn.repeat.Plan` is built and run inside `nn.repeat.compressing()`, where one block stands for each run of alike
ones and the ledger counts its events, forward and backward, as often as it stands for (measure/ledger.py). It is
the same engine, ledger and model code; only the number of blocks run changes, so a prediction costs the same at
any depth (a few blocks per run of checkpoint segments). `tests/test_repeat.py` checks that it equals the account
in which every block runs, field by field, over every family's grid. A family that loops plainly, or a run whose
blocks the ledger finds do not chain (`RepeatMismatch`), is predicted by running every block
(`predicted_account`, which also keeps every buffer and event for the timeline and per-layer tables).

That costs time in proportion to the depth, so before such a run `prediction_cost` times the same configuration
at two small depths and extrapolates: `predict(..., max_seconds=...)` refuses one that would take longer (PredictionTooSlow,
with the estimate), and `progress=True` shows a bar on stderr once a prediction has run a second.

`state_bytes` is what the configuration holds before its step (parameters, trainable parameters, batch): the
family's closed form when it declares one (registry.StateBytes), else counted from a shape-only build (repeated
blocks built once and counted as many). A budget
check compares it first (run/budget.py), so a size whose parameters alone exceed the budget is refused without
building anything.

What it cannot see is what the ledger cannot see either: arrays an op allocates and drops inside itself
(softmax's row maxima, numpy's ufunc buffers, the optimiser's chunk temporaries). tracemalloc sees those, so
the measured process peak sits slightly above the predicted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from ..autograd import STATE, meta
from ..autograd.precision import dtype as as_dtype, is_low
from ..config import get_family, normalize
from ..nn import repeat
from ..nn.models.registry import StateBytes
from ..parallel import rank, zero
from .generation import PREDICTED_GENERATION_COLUMNS, predicted_generation_figures
from .ledger import CATEGORIES, Ledger, StepAccount
from .workload import Workload

PREDICT_MAX_SECONDS = 10.0  # `memstudy predict`'s default --max-seconds
TRIAL_DEPTHS = (16, 64)  # depths at which a prediction is timed to estimate a deeper one
PROGRESS_AFTER_SECONDS = 1.0  # a prediction running longer than this shows a progress bar (when asked to)


class PredictionTooSlow(Exception):
    """Predicting a configuration would take longer than allowed; `estimate_seconds` says how long."""

    def __init__(self, estimate_seconds: float, max_seconds: float, depth: int):
        super().__init__(f"predicting it would take about {estimate_seconds:.0f} s, over the {max_seconds:g} s "
                         f"allowed: its family runs every one of its {depth} blocks (estimated from depths "
                         f"{TRIAL_DEPTHS[0]} and {TRIAL_DEPTHS[1]}; a family that builds its blocks through "
                         "nn.repeat.Plan is predicted at any depth in constant time)")
        self.estimate_seconds, self.max_seconds = estimate_seconds, max_seconds


def _account(config: dict[str, Any], max_drawn_bytes: int | None, compressed: bool,
             plans: list[int] | None = None) -> StepAccount:
    """One steady-state step of a normalized configuration on shape-only arrays, under the ledger; `plans` (if
    given) gets how many `nn.repeat.Plan`s the compressed build made."""
    saved_repeat = (STATE.repeat, STATE.repeat_backward)
    try:
        with meta.meta_mode(max_drawn_bytes), repeat.compressing() if compressed else contextlib.nullcontext() as c:
            work = Workload(config)
            if plans is not None:
                plans.append(c.plans if c is not None else 0)
            # the steady state the cell reaches by a warm-up step: the optimiser's state exists. A shape-only step
            # has no values to warm, so the state is made directly (half the cost of a prediction)
            if work.train:
                work.optimizer.prepare()
            # the cell's reset also runs gc.collect(), which frees nothing of a step (the engine makes no reference
            # cycles, tested with gc disabled) and costs 10-30 ms in a large process: gradients None is the baseline
            work.optimizer.zero_grad()
            return work.ledger_step()
    finally:  # an exception inside a repeated block must not leave its scope behind for the next prediction
        STATE.repeat, STATE.repeat_backward = saved_repeat


def predicted_account(config: dict[str, Any], max_drawn_bytes: int | None = None) -> StepAccount:
    """The ledger's account of one steady-state step of a (normalized) configuration, every block run: every
    buffer and event, as a measured cell's.

    `max_drawn_bytes`: stop with meta.DrawLimitExceeded as soon as the parameters and batch drawn pass it (a
    budget check's early refusal: it then costs what the budget holds, not what the model is)."""
    return _account(config, max_drawn_bytes, compressed=False)


def memoised_account(config: dict[str, Any], max_drawn_bytes: int | None = None,
                     plans: list[int] | None = None) -> StepAccount:
    """The same step's account with repeated blocks predicted once (see the module docstring): its totals (every
    field `prediction_fields` reads) equal `predicted_account`'s; its buffers and events are those of the blocks
    that ran (`repeated` says so). Falls back to running every block where the blocks do not chain, or cannot stand
    for one another (`nn.repeat.NotRepeatable`). `plans`: see `_account` (0 appended on the fallback)."""
    try:
        return _account(config, max_drawn_bytes, True, plans)
    except repeat.NotRepeatable:
        if plans is not None:
            plans[:] = [0]
        return predicted_account(config, max_drawn_bytes)


def predict(raw_config: dict[str, Any], max_drawn_bytes: int | None = None, *, memoise: bool = True,
            max_seconds: float | None = None, progress: bool = False,
            estimate_seconds: float | None = None) -> dict[str, Any]:
    """Bytes by category, the step's peak and total peak, for one configuration (labelled predicted).

    `memoise`: repeated blocks predicted once (the default; False runs every block, same figures);
    `max_drawn_bytes`: see `predicted_account`; `max_seconds`: refuse (PredictionTooSlow) a prediction estimated
    to take longer (`prediction_cost`); `progress`: a progress bar on stderr once it has run a second, against
    `estimate_seconds` when the caller has it (from `check_cost`), else against `prediction_cost`'s."""
    config = normalize(raw_config)
    if max_seconds is not None or (progress and estimate_seconds is None):
        estimate_seconds = check_cost(config, max_seconds, max_drawn_bytes)
    with _progress_bar(progress, estimate_seconds):
        account = (memoised_account if memoise else predicted_account)(config, max_drawn_bytes)
    fields = prediction_fields(account)
    if rank.is_parallel(config):  # the figures are one rank's: which one
        fields.update(rank.row_fields(config, shape_only=True), rank_notes=rank.notes(config))
    return fields


def prediction_cost(config: dict[str, Any], max_drawn_bytes: int | None = None) -> float | None:
    """Estimated seconds to predict a normalized configuration, when it may be long: the same configuration is
    timed at the depths TRIAL_DEPTHS (the faster of two runs each, so that first-call costs and a busy moment count
    less) and, if its family runs every block (it built no `nn.repeat.Plan`), extrapolated along the line through
    them. None when it costs about what the trials did: a depth no greater than 4 times the deeper trial's, or a
    family whose repeated blocks are predicted once."""
    depth = config["depth"]
    low, high = TRIAL_DEPTHS
    if depth <= 4 * high:
        return None
    seconds = []
    for trial_depth in TRIAL_DEPTHS:
        try:
            trial = normalize({**config, "depth": trial_depth})
        except ValueError:  # the family does not allow that depth: no estimate
            return None
        runs = []
        for _ in range(2):
            plans: list[int] = []
            start = time.perf_counter()
            try:
                memoised_account(trial, max_drawn_bytes, plans)
            except meta.DrawLimitExceeded:
                return None  # the full-size build stops at the same limit, sooner still
            runs.append(time.perf_counter() - start)
            if plans and plans[0]:
                return None
        seconds.append(min(runs))
    per_block = max((seconds[1] - seconds[0]) / (high - low), seconds[1] / high / 4)  # a noisy slope: bounded
    return seconds[1] + (depth - high) * per_block


def check_cost(config: dict[str, Any], max_seconds: float | None,
               max_drawn_bytes: int | None = None) -> float | None:
    """`prediction_cost`, or PredictionTooSlow when it is over `max_seconds` (None: no limit)."""
    estimate = prediction_cost(config, max_drawn_bytes)
    if max_seconds is not None and estimate is not None and estimate > max_seconds:
        raise PredictionTooSlow(estimate, max_seconds, config["depth"])
    return estimate


@contextlib.contextmanager
def _progress_bar(enabled: bool, expected_seconds: float | None) -> Iterator[None]:
    """tqdm on stderr, from a second after the start until the end: elapsed seconds against the estimate (a thread
    that only draws: the prediction itself is not interrupted)."""
    if not enabled:
        yield
        return
    done = threading.Event()

    def draw() -> None:
        if done.wait(PROGRESS_AFTER_SECONDS):
            return
        from tqdm import tqdm

        started = time.perf_counter() - PROGRESS_AFTER_SECONDS
        total = round(expected_seconds, 1) if expected_seconds else None
        form = ("{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s (estimated)" if total
                else "{desc}: {n:.1f} s")
        with tqdm(total=total, desc="predicting", file=sys.stderr, bar_format=form, leave=False) as bar:
            while not done.wait(0.2):
                elapsed = time.perf_counter() - started
                bar.update(min(elapsed, total or elapsed) - bar.n)

    thread = threading.Thread(target=draw, name="memstudy-predict-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def state_bytes(config: dict[str, Any], max_drawn_bytes: int | None = None) -> StateBytes:
    """What a normalized configuration holds before its step: the family's closed form (`Family.state_bytes`), or
    else what the ledger registers for its shape-only build (repeated blocks built once and counted as many; the
    optimiser's state counted from the trainable parameters, since it exists only after a step)."""
    # a data-parallel rank's (memstudy/parallel/zero.py) holds parts: counted from its shape-only build
    declared = None if zero.applies(config) else get_family(config["model"]).state_bytes(config)
    if declared is not None:  # a closed form counts every trainable parameter in the configuration's dtype
        if is_low(as_dtype(config["dtype"])):
            return dataclasses.replace(declared, low_trainable_bytes=declared.trainable_bytes)
        return declared
    try:
        return _built_state_bytes(config, max_drawn_bytes, True)
    except repeat.NotRepeatable:
        return _built_state_bytes(config, max_drawn_bytes, False)


def _built_state_bytes(config: dict[str, Any], max_drawn_bytes: int | None, compressed: bool) -> StateBytes:
    with meta.meta_mode(max_drawn_bytes), repeat.compressing() if compressed else contextlib.nullcontext():
        work = Workload(config)
        ledger = Ledger()
        work.register(ledger)
        copies = repeat.copies(work.model)
        if work.zero is not None:  # the rank's parts stand for as many as their parameters
            copies.update(work.zero.copies(copies))
        trainable = sum(p.data.nbytes * copies.get(id(p), 1) for p in work.optimizer.params)
        low = sum(p.data.nbytes * copies.get(id(p), 1) for p in work.optimizer.params if is_low(p.data.dtype))
        registered = ledger.finish().registered_bytes
    return StateBytes(registered["parameter"], trainable, registered["input"], low)


def prediction_fields(account: StepAccount) -> dict[str, Any]:
    """A predicted step's account as the row's predicted fields (and the baseline they rest on)."""
    registered = account.registered_bytes
    return {
        "parameter_bytes": registered["parameter"],
        "parameter_count": account.parameter_count,
        "trainable_parameter_count": account.trainable_parameter_count,
        "gradient_bytes": account.max_by_category["gradient"],
        "optimizer_state_bytes": registered["optimizer_state"],
        "input_bytes": registered["input"],
        "predicted_activation_bytes": account.activation_bytes,
        "predicted_saved_tensors": account.saved_tensors,
        "predicted_recomputed_ops": account.recomputed_ops,
        "predicted_peak_bytes": account.peak_bytes,
        "predicted_step_peak_bytes": account.step_peak_bytes,
        "predicted_peak_by_category": account.peak_by_category,
        "predicted_communication_bytes": sum(b for _, b in account.collective_bytes.values()),
        "predicted_collective_bytes": account.collective_bytes,  # per collective op: [buffers, bytes]
        "predicted_buffers": account.buffer_count,  # what the ledger's bookkeeping grows with (run/budget.py)
        **predicted_generation_figures(account),  # mode generate's cache and phase peaks (None otherwise)
    }


def predicted_row(prediction: dict[str, Any]) -> dict[str, Any]:
    """The row's predicted columns (run/results/fields.py) from `predict`'s fields; a prediction that is unavailable
    (agreement.unavailable_prediction) leaves them empty. One place for a measured cell's row and a shape-only one."""
    by_category = prediction.get("predicted_peak_by_category") or {}
    return {
        "predicted_peak_bytes": prediction.get("predicted_peak_bytes"),
        "predicted_step_peak_bytes": prediction.get("predicted_step_peak_bytes"),
        "predicted_activation_bytes": prediction.get("predicted_activation_bytes"),
        "predicted_communication_bytes": prediction.get("predicted_communication_bytes"),
        **{name: prediction.get(name) for name in PREDICTED_GENERATION_COLUMNS},
        **{f"predicted_peak_{c}_bytes": by_category.get(c) for c in CATEGORIES},
        "predicted_max_gradient_bytes": prediction.get("gradient_bytes"),
    }

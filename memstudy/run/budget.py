"""What a cell needs from the budget, and the OS limit that holds it there.

Before a cell starts, the sweep compares its need with the budget (and, with several jobs, with what the
running cells reserved):

    need = predicted total peak   the ledger's bytes of the step, model and optimiser state included, from
                                  the predictor (no arrays allocated)
         + own overhead           what the cell adds beyond the step: the probes' and the ledger's bookkeeping
                                  (Python objects per buffer: graph nodes, ledger records, tracemalloc traces;
                                  measured at about 1 KiB per ledger buffer, allowed 4 KiB, plus 32 MiB)
                                  and, under a policy other than `minimal`, the gradient check's reference
                                  gradients (one set of parameter bytes); with `float64_reference`, the float64
                                  twin's step (8 / itemsize times the predicted peak, an upper bound)
         + resident baseline      the interpreter and its libraries, resident (VmHWM of a tiny cell, ~40 MiB)

Building the model costs no more than the step's baseline: nn.init draws every parameter in its own dtype.

Before any of that, what the configuration holds throughout its step (parameters, optimiser state, batch:
`memory.predict.state_bytes`) is compared with the budget (`state_refusal`). A family that declares them in
closed form (registry.StateBytes) is refused without building anything, at any size; another is built shape-only
until the budget's worth is drawn (meta_mode's draw limit), so its refusal costs what the budget holds, not what
the model is. The prediction itself then costs the same at any depth for a family whose repeated blocks are
predicted once (memory.predict); for one that runs every block, a prediction estimated to take longer than
`max_seconds` is refused with the estimate.

The cell process runs under RLIMIT_AS (set by the launcher between fork and exec), so a cell that needs
more than its prediction stops with a MemoryError (a failed row saying so) instead of waking the machine's
OOM killer. RLIMIT_AS counts address space, not resident bytes, and numpy, OpenBLAS (about 40 MiB per
thread) and glibc's arenas reserve far more address space than they touch, and how much depends on the
host's core count. So the limit starts from a measured baseline: the address-space peak (VmPeak) of a tiny
cell run with the same interpreter and environment on the same host (the launcher measures it,
`launcher.process_baseline`, once per process, and applies it where the cell runs, so a Dask worker uses its own
host's baseline). This module is the arithmetic only: it starts no process, the baseline is passed in.

    limit = baseline VmPeak + (predicted peak + own overhead) * (1 + SLACK) + HEADROOM_BYTES
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..units import format_bytes

BOOKKEEPING_BYTES = 32 << 20  # fixed part of the probes' and ledger's bookkeeping
BYTES_PER_BUFFER = 4 << 10  # per buffer the ledger records (measured: about 1 KiB, depth 4096)
GRAD_CHECK_SCRATCH_BYTES = 4 << 20  # the gradient check's two float64 chunks (workload.GRAD_ERROR_CHUNK_ELEMENTS)
SLACK = 0.10  # on the cell's own bytes: allocator rounding, small scratch arrays the ledger does not see
HEADROOM_BYTES = 64 << 20  # address space on top: one more glibc arena (64 MiB) if a new thread allocates


@dataclass(frozen=True)
class ProcessBaseline:
    """A tiny cell process on this host: its address-space peak and its resident peak."""

    vm_peak_bytes: int
    hwm_bytes: int


def estimated_buffers(config: dict[str, Any], prediction: dict[str, Any]) -> int:
    """How many buffers the ledger records in the step: the predictor's count when it gives one, else a
    generous estimate from the saved tensors and the depth (each layer: activations, gradients, temporaries)."""
    counted = prediction.get("predicted_buffers")
    if counted is not None:
        return int(counted)
    return 3 * int(prediction.get("predicted_saved_tensors") or 0) + 4 * int(config.get("depth") or 1) + 16


def overhead_bytes(config: dict[str, Any], prediction: dict[str, Any]) -> int:
    """What a cell adds to its step's predicted peak (see the module docstring)."""
    own = BOOKKEEPING_BYTES + BYTES_PER_BUFFER * estimated_buffers(config, prediction)
    if config.get("mode") == "train" and config.get("policy", "minimal") != "minimal":
        own += int(prediction.get("parameter_bytes") or 0) + GRAD_CHECK_SCRATCH_BYTES
    if config.get("mode") == "train" and config.get("float64_reference"):  # a float64 twin's step, its bytes at
        # most 8 / itemsize times this step's (16-bit: 4x), beside this step's gradients
        from ..autograd.precision import dtype as as_dtype

        factor = 8 // as_dtype(config.get("dtype", "float32")).itemsize
        own += factor * int(prediction.get("predicted_peak_bytes") or 0) + GRAD_CHECK_SCRATCH_BYTES
    return own


@dataclass(frozen=True)
class CellNeed:
    predicted_peak_bytes: int
    overhead_bytes: int
    resident_baseline_bytes: int  # 0 when no baseline could be measured

    @property
    def total_bytes(self) -> int:
        """What the cell takes from the budget."""
        return self.predicted_peak_bytes + self.overhead_bytes + self.resident_baseline_bytes

    def describe(self) -> str:
        parts = (f"predicted peak {format_bytes(self.predicted_peak_bytes)} + overhead "
                 f"{format_bytes(self.overhead_bytes)}")
        if self.resident_baseline_bytes:
            parts += f" + process baseline {format_bytes(self.resident_baseline_bytes)}"
        return f"needs {format_bytes(self.total_bytes)} ({parts})"

    @property
    def own_bytes(self) -> int:
        """What the cell adds to a cell process's baseline: its predicted peak and its own overhead."""
        return self.predicted_peak_bytes + self.overhead_bytes

    def limit_bytes(self, baseline: ProcessBaseline | None) -> int | None:
        """The cell process's RLIMIT_AS on the host whose baseline this is, None without one."""
        return address_space_limit(self.own_bytes, baseline)


def address_space_limit(own_bytes: int, baseline: ProcessBaseline | None) -> int | None:
    """RLIMIT_AS for a cell whose own bytes are `own_bytes` on the host of `baseline` (None: no limit)."""
    if baseline is None:
        return None
    return baseline.vm_peak_bytes + int(own_bytes * (1 + SLACK)) + HEADROOM_BYTES


def cell_need(config: dict[str, Any], prediction: dict[str, Any], baseline: ProcessBaseline | None) -> CellNeed:
    return CellNeed(int(prediction.get("predicted_peak_bytes") or 0), overhead_bytes(config, prediction),
                    baseline.hwm_bytes if baseline is not None else 0)


def unpredicted_need(config: dict[str, Any], budget_bytes: int, baseline: ProcessBaseline | None) -> CellNeed:
    """A cell whose step cannot be predicted (meta.Unsupported) takes the whole budget: it runs alone, and its
    address-space limit (own bytes: the budget less its overhead and the process baseline) holds it there."""
    own = overhead_bytes(config, {})
    resident = baseline.hwm_bytes if baseline is not None else 0
    return CellNeed(max(0, budget_bytes - own - resident), own, resident)


@dataclass
class Verdict:
    """A cell checked against the budget: run it (`skip_reason` and `error` empty), skip it, or fail it."""

    predicted: dict[str, Any] | None = None  # the prediction (None: not checked, or refused before finishing it)
    need: CellNeed | None = None
    skip_reason: str = ""  # over the budget: skipped
    error: str = ""  # the prediction failed: failed (a cell is never run unchecked)


def drawn_over(exc: Any, budget: str) -> str:
    """The refusal of a model whose shape-only build passed the budget (meta.DrawLimitExceeded `exc`)."""
    return (f"its parameters and batch alone exceed {budget} (building them shape-only stopped after "
            f"{format_bytes(exc.drawn_bytes)})")


def state_refusal(config: dict[str, Any], budget_bytes: int, budget: str) -> str | None:
    """Why a (normalized) configuration is refused before predicting its step: its parameters, optimiser state
    and batch alone exceed the budget (`budget` names it). None when they fit."""
    from ..autograd.meta import DrawLimitExceeded
    from ..measure.predict import state_bytes

    try:
        held = state_bytes(config, max_drawn_bytes=budget_bytes)
    except DrawLimitExceeded as exc:
        return drawn_over(exc, budget)
    total = held.total_bytes(config)
    if total <= budget_bytes:
        return None
    optimizer = held.optimizer_state_bytes(config)
    parts = [f"parameters {format_bytes(held.parameter_bytes)}"]
    parts += [f"optimizer state {format_bytes(optimizer)}"] if optimizer else []
    parts += [f"batch {format_bytes(held.input_bytes)}"]
    what = "parameters, optimizer state and batch" if optimizer else "parameters and batch"
    return f"its {what} alone need {format_bytes(total)} ({' + '.join(parts)}): exceeds {budget}"


class BudgetCheck:
    """Checks cells against one budget: `check(config) -> Verdict`.

    `predictor`: None (no check), DEFAULT_PREDICTOR (memory.predict.predict after `state_refusal`: a model whose
    parameters, optimiser state and batch alone pass the budget is refused in time that does not grow with the
    model; one whose prediction would take over `max_seconds` is skipped with the estimate), or any callable
    config -> prediction dict. `baseline` measures the process baseline (the launcher's `process_baseline`, a tiny
    cell); it is called the first time a check needs it; `warnings` says when it could not be measured."""

    def __init__(self, budget_bytes: int, label: str, predictor: Any,
                 baseline: Callable[[], ProcessBaseline | None], max_seconds: float | None = None):
        self.budget_bytes, self.label, self.predictor, self._measure_baseline = budget_bytes, label, predictor, baseline
        self.max_seconds = max_seconds
        self.warnings: list[str] = []
        self._baseline: list[ProcessBaseline | None] = []

    @property
    def enabled(self) -> bool:
        return self.predictor is not None

    @property
    def baseline(self) -> ProcessBaseline | None:
        if not self._baseline:
            self._baseline.append(self._measure_baseline())
            if self._baseline[0] is None:
                self.warnings.append("cells run without a memory limit: a tiny cell did not report its "
                                     "address-space peak (vm_peak_bytes; Linux only)")
        return self._baseline[0]

    def check(self, config: dict[str, Any]) -> Verdict:
        if self.predictor is None:
            return Verdict()
        from ..autograd.meta import DrawLimitExceeded, Unsupported
        from ..measure.predict import PredictionTooSlow, check_cost, predict

        budget = f"the budget {format_bytes(self.budget_bytes)} ({self.label})"
        try:
            if self.predictor is not DEFAULT_PREDICTOR:
                predicted = self.predictor(config)
            else:
                check_cost(config, self.max_seconds, self.budget_bytes)
                reason = state_refusal(config, self.budget_bytes, budget)
                if reason:
                    return Verdict(skip_reason=reason)
                predicted = predict(config, max_drawn_bytes=self.budget_bytes)
        except PredictionTooSlow as exc:
            return Verdict(skip_reason=f"not checked against {budget}: {exc}")
        except DrawLimitExceeded as exc:
            return Verdict(skip_reason=drawn_over(exc, budget))
        except Unsupported:  # measured anyway (its rows say why there is no prediction), alone, within the budget
            need = unpredicted_need(config, self.budget_bytes, self.baseline)
            if need.total_bytes > self.budget_bytes:
                return Verdict(need=need, skip_reason=f"its step cannot be predicted, and its overhead alone "
                                                      f"({format_bytes(need.total_bytes)}) exceeds {budget}")
            return Verdict(need=need)
        except Exception as exc:  # a predictor bug must not stop the sweep, nor run an unchecked cell
            return Verdict(error=f"prediction failed: {type(exc).__name__}: {exc}")
        need = cell_need(config, predicted, self.baseline)
        verdict = Verdict(predicted, need)
        if need.total_bytes > self.budget_bytes:
            verdict.skip_reason = f"{need.describe()}: exceeds {budget}"
        return verdict


DEFAULT_PREDICTOR = object()  # BudgetCheck's predictor: state_refusal, then memory.predict.predict (see BudgetCheck)


def explain_memory_failure(error: str, limit_bytes: int | None) -> str:
    """A failed cell's reason, with the limit named when the cell ran out of address space under it."""
    markers = ("MemoryError", "Cannot allocate memory", "Memory allocation", "can't start new thread",
               "std::bad_alloc")  # Python, the C library, OpenBLAS ("Memory allocation still failed"), threads, C++
    if limit_bytes is None or not any(m in error for m in markers):
        return error
    return (f"{error} (stopped by the cell's memory limit, address space {format_bytes(limit_bytes)}: it needed "
            "more than its prediction allows)")


__all__ = ["BudgetCheck", "CellNeed", "address_space_limit", "DEFAULT_PREDICTOR", "ProcessBaseline", "Verdict", "cell_need",
           "drawn_over", "explain_memory_failure", "overhead_bytes", "state_refusal",
           "unpredicted_need"]

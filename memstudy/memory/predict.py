"""Predict a step's memory from the configuration alone: the engine itself, run on shape-only arrays.

Inside `autograd.meta.meta_mode()` the family's model and batch are built as `MetaArray`s (shape, dtype,
strides, views; no data), by the same `Workload` a measured cell uses. The step then runs as a cell runs it
(one warm-up step so the optimiser state exists, gradients None, then one step under the memory ledger): every
op, the checkpoint's recompute, the saved-tensor policy and the optimiser run their own code by numpy's
dispatch, and the ledger counts the MetaArrays' buffers as it counts real ones. So the prediction is the
ledger's account of the real step, byte for byte, and it costs the same whatever the sizes (no numbers exist).

What it cannot see is what the ledger cannot see either: arrays an op allocates and drops inside itself
(softmax's row maxima, numpy's ufunc buffers, the optimiser's chunk temporaries). tracemalloc sees those, so
the measured process peak sits slightly above the predicted one.
"""
from __future__ import annotations

from typing import Any

from ..autograd import meta
from ..config import normalize
from .generation import predicted_generation_figures
from .ledger import StepAccount
from .workload import Workload


def predicted_account(config: dict[str, Any], max_drawn_bytes: int | None = None) -> StepAccount:
    """The ledger's account of one steady-state step of a (normalized) configuration, on shape-only arrays.

    `max_drawn_bytes`: stop with meta.DrawLimitExceeded as soon as the parameters and batch drawn pass it (a
    budget check's early refusal: it then costs what the budget holds, not what the model is)."""
    with meta.meta_mode(max_drawn_bytes):
        work = Workload(config)
        work.step()  # warm-up, as the cell does: the optimiser state exists
        # the cell's reset also runs gc.collect(), which frees nothing of a step (the engine makes no reference
        # cycles, tested with gc disabled) and costs 10-30 ms in a large process: gradients None is the baseline
        work.optimizer.zero_grad()
        return work.ledger_step()


def predict(raw_config: dict[str, Any], max_drawn_bytes: int | None = None) -> dict[str, Any]:
    """Bytes by category, the step's peak and total peak, for one configuration (labelled predicted); see
    `predicted_account` for `max_drawn_bytes`."""
    return prediction_fields(predicted_account(normalize(raw_config), max_drawn_bytes))


def prediction_fields(account: StepAccount) -> dict[str, Any]:
    """A predicted step's account as the row's predicted fields (and the baseline they rest on)."""
    registered = account.registered_bytes
    return {
        "parameter_bytes": registered["parameter"],
        "gradient_bytes": account.max_by_category["gradient"],
        "optimizer_state_bytes": registered["optimizer_state"],
        "input_bytes": registered["input"],
        "predicted_activation_bytes": account.activation_bytes,
        "predicted_saved_tensors": account.saved_tensors,
        "predicted_recomputed_ops": account.recomputed_ops,
        "predicted_peak_bytes": account.peak_bytes,
        "predicted_step_peak_bytes": account.step_peak_bytes,
        "predicted_peak_by_category": account.peak_by_category,
        "predicted_buffers": len(account.records),  # what the ledger's bookkeeping grows with (study/budget.py)
        **predicted_generation_figures(account),  # mode generate's cache and phase peaks (None otherwise)
    }

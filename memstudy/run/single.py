"""`memstudy run` and `memstudy predict` for one configuration: check it, budget it, measure it (and show it)."""
from __future__ import annotations

import os
from typing import Any

from ..config import ConfigError, normalize
from ..measure.predict import predict
from ..units import format_bytes
from .budget import cell_need, drawn_over, state_refusal, unpredicted_need
from .results.folder import output_file, replace_atomically
from .launcher import CellRequest, launch


class RunError(Exception):
    """The measurement itself failed (not bad input)."""


def check_budget(config: dict[str, Any], budget_bytes: int,
                 max_seconds: float | None = None) -> dict[str, Any] | None:
    """The prediction, or ConfigError when the cell's need (its predicted total peak and its own overhead,
    budget.py) exceeds the budget. A model whose parameters, optimiser state and batch alone exceed it is refused
    before its step is predicted, in time that does not grow with the model (budget.state_refusal); with
    `max_seconds`, so is one whose prediction would take longer (memory.predict.PredictionTooSlow). None when the
    step cannot be predicted (meta.Unsupported): it is then measured under an address-space limit of the whole
    budget."""
    from ..autograd.meta import DrawLimitExceeded, Unsupported
    from ..measure.predict import PredictionTooSlow, check_cost

    budget = f"the budget {format_bytes(budget_bytes)} (--budget)"
    try:
        estimate = check_cost(config, max_seconds, budget_bytes)
        reason = state_refusal(config, budget_bytes, budget)
        if reason:
            raise ConfigError(reason)
        # a bar on stderr once it has run a second (0: no estimate, none computed again)
        prediction = predict(config, max_drawn_bytes=budget_bytes, progress=True, estimate_seconds=estimate or 0.0)
    except PredictionTooSlow as exc:
        raise ConfigError(str(exc)) from None
    except DrawLimitExceeded as exc:
        raise ConfigError(drawn_over(exc, budget)) from None
    except Unsupported:
        return None
    need = cell_need(config, prediction, None)
    if need.total_bytes > budget_bytes:
        raise ConfigError(f"{need.describe()}: exceeds {budget}")
    return prediction


def run_modes(config: dict[str, Any], modes: list[str], repeats: int, budget_bytes: int,
              timeline_path: str | None = None, by_layer: bool = False,
              timelines: dict[str, str] | None = None,
              max_seconds: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Measured rows per mode, each mode in its own fresh cell process; the first mode's step timeline goes to
    `timeline_path`, another mode's to its path in `timelines` (if any); `max_seconds`: see `check_budget`."""
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    target = output_file(timeline_path, "--timeline") if timeline_path is not None else None
    configs = {mode: normalize({**config, "mode": mode}) for mode in modes}
    # a cell without a prediction may use the whole budget, and its address-space limit holds it there
    own_bytes = {mode: None if check_budget(mode_config, budget_bytes, max_seconds) is not None
                 else unpredicted_need(mode_config, budget_bytes, None).own_bytes
                 for mode, mode_config in configs.items()}
    results = {}
    for index, (mode, mode_config) in enumerate(configs.items()):
        if target is not None and index == 0:  # the cell writes a temporary file, renamed once the cell is done
            with replace_atomically(target) as tmp:
                outcome = launch(CellRequest(mode_config, repeats, os.path.abspath(tmp), by_layer=by_layer,
                                             memory_own_bytes=own_bytes[mode]))
                if outcome.error:
                    raise RunError(f"the {mode} cell failed: {outcome.error}")
        else:
            scratch = (timelines or {}).get(mode)
            outcome = launch(CellRequest(mode_config, repeats, None if scratch is None else os.path.abspath(scratch),
                                         by_layer=by_layer, memory_own_bytes=own_bytes[mode]))
        if outcome.error:
            raise RunError(f"the {mode} cell failed: {outcome.error}")
        results[mode] = outcome.rows
    return results

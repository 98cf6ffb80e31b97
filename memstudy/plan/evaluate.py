"""One combination's rank, predicted: the predictor's memoised account, once per distinct rank graph.

Each admissible configuration is predicted exactly as `memstudy predict` predicts it (`measure.predict`'s
`memoised_account`: the family's model built on shape-only arrays, repeated blocks run once for many, one
steady-state step under the ledger), so the peak the plan reports for a configuration is the one `predict` prints
for the same fields (tests/test_plan.py). Configurations with the same `space.rank_key` share one prediction.

What the plan reads from the account: the peak and its split by category (the rank's largest peak when the family
accounts for several ranks), the forward's and the recompute's FLOPs (counted op by op, autograd/flops.py) and the
bytes the rank's collectives move (`communication_bytes`, when the engine has collectives).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..measure.predict import memoised_account
from .space import rank_key


@dataclass(frozen=True)
class RankResult:
    """What one rank graph's predicted step holds and does (bytes, FLOPs)."""

    peak_bytes: int
    peak_by_category: dict[str, int]
    forward_flops: int
    recomputed_flops: int
    recomputed_ops: int
    communication_bytes: int
    parameter_count: int
    trainable_parameter_count: int

    @property
    def dominant(self) -> tuple[str, int]:
        """The category holding the most bytes at the peak."""
        return max(self.peak_by_category.items(), key=lambda item: item[1])


def communication_bytes(account: Any) -> int:
    """Bytes the rank's collectives move in the step: the ledger's `communication_bytes` where the engine has
    collectives (memstudy/parallel), else 0 (one device: nothing to communicate)."""
    return int(getattr(account, "communication_bytes", 0) or 0)


def predict_rank(config: dict[str, Any]) -> RankResult:
    """The predicted step of a normalized configuration's rank (module docstring)."""
    account = memoised_account(config)
    return RankResult(
        peak_bytes=account.peak_bytes,
        peak_by_category={k: v for k, v in account.peak_by_category.items()},
        forward_flops=account.forward_flops,
        recomputed_flops=account.recomputed_flops,
        recomputed_ops=account.recomputed_ops,
        communication_bytes=communication_bytes(account),
        parameter_count=account.parameter_count,
        trainable_parameter_count=account.trainable_parameter_count,
    )


class Evaluator:
    """Predicts configurations, each distinct rank graph once (`rank_key`); `predictions` counts what ran."""

    def __init__(self) -> None:
        self._cache: dict[tuple, RankResult] = {}
        self.predictions = 0
        self.reused = 0

    def __call__(self, config: dict[str, Any]) -> RankResult:
        key = rank_key(config)
        result = self._cache.get(key)
        if result is None:
            result = self._cache[key] = predict_rank(config)
            self.predictions += 1
        else:
            self.reused += 1
        return result


__all__ = ["Evaluator", "RankResult", "communication_bytes", "predict_rank"]

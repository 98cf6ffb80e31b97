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
    """Bytes the rank's collectives take in over the step (the ledger's `collective_bytes`: per collective, its calls
    and the bytes of this rank's inputs), 0 without collectives (one device: nothing to communicate)."""
    return sum(nbytes for _, nbytes in getattr(account, "collective_bytes", {}).values())


class PredictionFailed(Exception):
    """The predictor could not run a configuration (its message names why); the plan counts it and goes on."""


def predict_rank(config: dict[str, Any]) -> RankResult:
    """The predicted step of a normalized configuration's rank (module docstring); PredictionFailed when the
    engine cannot run it (a bug there, or a shape rule shape-only arrays cannot follow)."""
    try:
        account = memoised_account(config)
    except (ArithmeticError, LookupError, TypeError, ValueError, NotImplementedError) as exc:
        raise PredictionFailed(f"{type(exc).__name__}: {exc}") from exc
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


def steady_microbatches(config: dict[str, Any]) -> int | None:
    """The microbatch count k from which each further microbatch adds what the one before added (1F1B's steady state
    after p + 2 of them for p stages; without a pipeline, gradient accumulation from the third: every later
    microbatch accumulates into the gradients as the second does, and the batch it reads adds its bytes), when the
    configuration runs more than k + 2; else None. GPipe holds every microbatch's activations: None."""
    m = config.get("microbatches") or 1
    p = config.get("pipeline_parallel") or 1
    if p > 1 and config.get("schedule", "1f1b") != "1f1b":
        return None
    k = p + 2  # one microbatch more than the first that settles, as measured on the test grid (tests/test_plan.py)
    return k if m > 3 * k + 3 else None  # three predictions of k..k+2 microbatches cost less than one of m


def with_microbatches(config: dict[str, Any], m: int) -> dict[str, Any]:
    """The same configuration running m microbatches of the same size."""
    from ..config import normalize

    micro = config["batch_size"] // config["microbatches"]
    return normalize({**config, "microbatches": m, "batch_size": micro * m})


class Evaluator:
    """Predicts configurations, each distinct rank graph once (`rank_key`); `predictions` counts what ran.

    A configuration of many microbatches is predicted at k, k + 1 and k + 2 of them (`steady_microbatches`), shared by
    every configuration that differs only in their number: when each figure (the peak, its split by category, the
    FLOPs, the recomputed ops, the communication) grows by the same amount from k to k + 1 as from k + 1 to k + 2,
    each microbatch adds the same, and the figures are extrapolated along that line to the configuration's count.
    Otherwise it is predicted as it is. tests/test_plan.py checks the extrapolation against the full prediction."""

    def __init__(self) -> None:
        self._cache: dict[tuple, RankResult] = {}
        self.predictions = 0
        self.reused = 0

    def _predict(self, config: dict[str, Any]) -> RankResult:
        key = rank_key(config)
        result = self._cache.get(key)
        if result is None:
            result = self._cache[key] = predict_rank(config)
            self.predictions += 1
        else:
            self.reused += 1
        return result

    def __call__(self, config: dict[str, Any]) -> RankResult:
        k = steady_microbatches(config)
        if k is None:
            return self._predict(config)
        points = [self._predict(with_microbatches(config, k + i)) for i in range(3)]

        def figures(r: RankResult) -> list[int]:
            return [r.peak_bytes, *r.peak_by_category.values(), r.forward_flops, r.recomputed_flops,
                    r.recomputed_ops, r.communication_bytes]

        a, b, c = (figures(r) for r in points)
        if [x - 2 * y + z for x, y, z in zip(a, b, c)] != [0] * len(a) \
                or list(points[0].peak_by_category) != list(points[2].peak_by_category):
            return self._predict(config)  # not steady yet: predicted as it is
        more = config["microbatches"] - k
        line = [x + more * (y - x) for x, y in zip(a, b)]
        categories = list(points[0].peak_by_category)
        peak, split, rest = line[0], line[1:1 + len(categories)], line[1 + len(categories):]
        return RankResult(peak, dict(zip(categories, split)), *rest, points[0].parameter_count,
                          points[0].trainable_parameter_count)


__all__ = ["Evaluator", "PredictionFailed", "RankResult", "communication_bytes", "predict_rank", "steady_microbatches",
           "with_microbatches"]

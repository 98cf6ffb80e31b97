"""The search: every admissible combination predicted (each rank graph once), those that fit ranked by cost.

A combination fits when its rank's predicted peak is at most the device memory minus the reserve. The search walks
each group of combinations that differ only in the micro-batch from the smallest micro-batch up and stops the
group at the first one that does not fit: a larger micro-batch holds every buffer the smaller one does, at least as
large (activations, inputs and logits grow with it; nothing shrinks), so it cannot fit either. Those are counted
as "over (a smaller micro-batch was)", not predicted.

What the prediction does not hold is what the reserve stands for (`NOT_MODELLED`, printed under every plan).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..nn.models.registry import Family
from .cost import Cost, CostModel, step_cost
from .evaluate import Evaluator, PredictionFailed, RankResult, predict_rank
from .space import Choices, Machines, PlanError, Space, enumerate_space, iter_groups

GiB = 2 ** 30
CUDA_CONTEXT_BYTES = GiB  # the PyTorch forum's "GPU memory floor": 723 MiB after the first CUDA call, rounded up
FRAGMENTATION_SHARE = 0.05  # of the device: blocks the caching allocator holds but cannot hand out (stated)

NOT_MODELLED = (
    ("allocator fragmentation and caching", "PyTorch's caching allocator keeps freed blocks and splits them; a "
     "request can fail with enough free bytes in total (E. Yang, \"When does fragmentation occur in the CUDA "
     "caching allocator?\", PyTorch dev-log 2026): 5 % of the device in the default reserve"),
    ("the CUDA context", "the driver's and kernels' memory on each device, from the first CUDA call: 723 MiB "
     "reported on the PyTorch forum (\"What is the reason for pytorch's GPU memory floor?\"); 1 GiB in the reserve"),
    ("NCCL's buffers", "each communicator's channels hold NCCL_BUFFSIZE (4 MiB by default, NCCL's docs) per peer "
     "and channel; not in the ledger (its `communication` buffers are the collectives' own arrays): in the reserve"),
    ("activation offloading", "moving saved activations to host memory is not one of the strategies searched: a "
     "configuration that fits only with it is not found"),
)


def default_reserve_bytes(device_memory_bytes: int) -> int:
    """The CUDA context (1 GiB) and 5 % of the device for fragmentation (see NOT_MODELLED)."""
    return CUDA_CONTEXT_BYTES + int(FRAGMENTATION_SHARE * device_memory_bytes)


@dataclass
class Candidate:
    """One admissible combination: its configuration, its rank's prediction and (if it fits) its cost."""

    config: dict[str, Any]
    result: RankResult
    cost: Cost
    fits: bool


@dataclass
class PlanResult:
    family: Family
    machines: Machines
    global_batch: int
    space: Space
    cost_model: CostModel
    ranked: list[Candidate]  # the fitting ones, cheapest first
    over: list[Candidate]  # predicted and over the memory
    skipped_larger: int  # not predicted: a smaller micro-batch of the same combination was over already
    predictions: int  # distinct rank graphs predicted
    reused: int  # combinations that shared a rank graph predicted for another
    seconds: float
    failed: dict[str, int] = field(default_factory=dict)  # the predictor's error -> configurations it stopped

    @property
    def smallest(self) -> Candidate | None:
        """The over-the-memory combination with the smallest peak (what the error names when nothing fits)."""
        return min(self.over, key=lambda c: c.result.peak_bytes, default=None)


def _stages(config: dict[str, Any]) -> tuple[int, int]:
    return config.get("pipeline_parallel") or 1, config.get("microbatches") or 1


def search(family: Family, base: dict[str, Any], machines: Machines, global_batch: int, choices: Choices,
           cost_model: CostModel | None = None, progress: bool = False,
           on_progress: Callable[[int], None] | None = None) -> PlanResult:
    """Every admissible combination of `choices` for `family` (fields `base`) on `machines` (module docstring)."""
    if machines.usable_bytes <= 0:
        raise PlanError(f"the reserve ({machines.reserve_bytes:,} B) leaves nothing of the device memory "
                        f"({machines.device_memory_bytes:,} B): give a smaller --reserve")
    started = time.perf_counter()
    cost_model = cost_model or CostModel.for_machines(machines.devices, machines.devices_per_node)
    space = enumerate_space(family, base, machines, global_batch, choices)
    if not space.configs:
        reason = max(space.refused, key=space.refused.get) if space.refused else "no combination of the choices"
        raise PlanError(f"no admissible configuration among {space.considered}: {reason}")
    evaluate = Evaluator()
    ranked, over, skipped = [], [], 0
    failed: dict[str, int] = {}  # the predictor's error -> how many configurations it stopped
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(space.configs), desc="plan", unit="config", file=sys.stderr, leave=False)
    try:
        for group in iter_groups(space.configs):
            for index, config in enumerate(group):
                try:
                    result = evaluate(config)
                except PredictionFailed as exc:
                    failed[str(exc)[:200]] = failed.get(str(exc)[:200], 0) + 1
                    if bar is not None:
                        bar.update(1)
                    continue
                fits = result.peak_bytes <= machines.usable_bytes
                candidate = Candidate(config, result, step_cost(result, *_stages(config), cost_model), fits)
                (ranked if fits else over).append(candidate)
                if bar is not None:
                    bar.update(1)
                if on_progress is not None:
                    on_progress(1)
                if not fits:
                    rest = len(group) - index - 1
                    skipped += rest
                    if bar is not None:
                        bar.update(rest)
                    break
    finally:
        if bar is not None:
            bar.close()
    ranked.sort(key=lambda c: (c.cost.step_seconds, c.result.peak_bytes))
    if ranked:  # the chosen one as `memstudy predict` predicts it (not extrapolated over its microbatches)
        best = ranked[0]
        exact = predict_rank(best.config)
        ranked[0] = Candidate(best.config, exact, step_cost(exact, *_stages(best.config), cost_model),
                              exact.peak_bytes <= machines.usable_bytes)
    return PlanResult(family, machines, global_batch, space, cost_model, ranked, over, skipped,
                      evaluate.predictions, evaluate.reused, time.perf_counter() - started, failed=failed)


__all__ = ["CUDA_CONTEXT_BYTES", "Candidate", "FRAGMENTATION_SHARE", "NOT_MODELLED", "PlanResult",
           "default_reserve_bytes", "search"]

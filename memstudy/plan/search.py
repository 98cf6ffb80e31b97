"""The search: every admissible combination predicted (each rank graph once), those that fit ranked by cost.

A combination fits when its rank's predicted peak is at most the device memory minus the reserve. The search walks
each group of combinations that differ only in the micro-batch from the smallest micro-batch up and stops the
group at the first one that does not fit: a larger micro-batch holds every buffer the smaller one does, at least as
large (activations, inputs and logits grow with it; nothing shrinks), so it cannot fit either. Those are counted
as "over (a smaller micro-batch was)", not predicted.

What the prediction does not hold is what the reserve stands for (`NOT_MODELLED`, printed under every plan).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

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


# --- walking the groups, in this process or in several ------------------------------------------------------------
Walked = list[tuple[int, "RankResult | str"]]  # (index in the group, its prediction or why the predictor failed)
_EVALUATOR: Evaluator | None = None  # a worker process's: each rank graph predicted once per process


def _walk(evaluate: Evaluator, group: list[dict[str, Any]], usable_bytes: int) -> Walked:
    """The group's configurations by ascending micro-batch, up to the first one over the memory (module docstring)."""
    walked: Walked = []
    for index, config in enumerate(group):
        try:
            result = evaluate(config)
        except PredictionFailed as exc:
            walked.append((index, str(exc)[:200]))
            continue
        walked.append((index, result))
        if result.peak_bytes > usable_bytes:
            break
    return walked


def _walk_in_worker(task: tuple[list[dict[str, Any]], int]) -> tuple[Walked, int, int]:
    global _EVALUATOR
    if _EVALUATOR is None:
        _EVALUATOR = Evaluator()
    before = _EVALUATOR.predictions, _EVALUATOR.reused
    walked = _walk(_EVALUATOR, *task)
    return walked, _EVALUATOR.predictions - before[0], _EVALUATOR.reused - before[1]


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity)."""
    return max(1, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


def _walk_groups(groups: list[list[dict[str, Any]]], usable_bytes: int,
                 jobs: int | None) -> Iterator[tuple[Walked, int, int]]:
    """Each group's walk with its counts (predicted, reused), in the groups' order. The groups are independent (each
    stops on its own), so several processes may walk them: forked from this one, which has imported everything, each
    keeps its own evaluator. The plan's figures do not depend on `jobs` (tests/test_plan.py)."""
    jobs = min(default_jobs() if jobs is None else jobs, len(groups))
    if jobs <= 1:
        evaluate = Evaluator()
        for group in groups:
            before = evaluate.predictions, evaluate.reused
            walked = _walk(evaluate, group, usable_bytes)
            yield walked, evaluate.predictions - before[0], evaluate.reused - before[1]
        return
    import multiprocessing

    # fork: the workers start in milliseconds with every module imported (shape-only predictions use no BLAS and
    # no threads, so nothing a fork could break); imap keeps the groups' order, chunksize 1 balances their sizes
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_walk_in_worker, ((group, usable_bytes) for group in groups), chunksize=1)


def search(family: Family, base: dict[str, Any], machines: Machines, global_batch: int, choices: Choices,
           cost_model: CostModel | None = None, progress: bool = False,
           on_progress: Callable[[int], None] | None = None, jobs: int | None = None) -> PlanResult:
    """Every admissible combination of `choices` for `family` (fields `base`) on `machines` (module docstring);
    the groups walked by `jobs` processes (default: the cores this process may use)."""
    if machines.usable_bytes <= 0:
        raise PlanError(f"the reserve ({machines.reserve_bytes:,} B) leaves nothing of the device memory "
                        f"({machines.device_memory_bytes:,} B): give a smaller --reserve")
    started = time.perf_counter()
    cost_model = cost_model or CostModel.for_machines(machines.devices, machines.devices_per_node)
    space = enumerate_space(family, base, machines, global_batch, choices)
    if not space.configs:
        reason = max(space.refused, key=space.refused.get) if space.refused else "no combination of the choices"
        raise PlanError(f"no admissible configuration among {space.considered}: {reason}")
    ranked, over, skipped = [], [], 0
    failed: dict[str, int] = {}  # the predictor's error -> how many configurations it stopped
    counts = [0, 0]  # rank graphs predicted, configurations that reused one
    groups = list(iter_groups(space.configs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(space.configs), desc="plan", unit="config", file=sys.stderr, leave=False)
    try:
        for group, (walked, predicted, reused) in zip(groups, _walk_groups(groups, machines.usable_bytes, jobs)):
            counts[0] += predicted
            counts[1] += reused
            for index, outcome in walked:
                if isinstance(outcome, str):
                    failed[outcome] = failed.get(outcome, 0) + 1
                    continue
                fits = outcome.peak_bytes <= machines.usable_bytes
                candidate = Candidate(group[index], outcome, step_cost(outcome, *_stages(group[index]), cost_model),
                                      fits)
                (ranked if fits else over).append(candidate)
                if on_progress is not None:
                    on_progress(1)
            skipped += len(group) - len(walked)
            if bar is not None:
                bar.update(len(group))
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
                      counts[0], counts[1], time.perf_counter() - started, failed=failed)


__all__ = ["CUDA_CONTEXT_BYTES", "Candidate", "default_jobs", "FRAGMENTATION_SHARE", "NOT_MODELLED", "PlanResult",
           "default_reserve_bytes", "search"]

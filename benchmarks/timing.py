"""Side-by-side timing in interleaved blocks: A block, B block, C block, A block, ...

Every variant runs the same number of steps per block, the blocks rotate `rounds` times, and each
step time is the median over all of a variant's steps (after warm-up). A ratio of two variants is
measured side by side: each round gives the ratio of the two variants' block medians (blocks that ran
seconds apart), and the figure is the median of those per-round ratios, so a shift of the machine's
speed during the run (CPU frequency, a neighbour's load: on a shared 2-core VM, step times were seen to
jump by 30 % between two rounds) cancels within a round instead of biasing one variant. The lowest
and highest per-round ratio show how stable the figure is.

A variant that runs in another process (PyTorch) is preceded and followed by a pause: BLAS and OpenMP
worker threads spin for a while after their last job before they sleep, and spinning threads of one
process would steal the cores of the other.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

StepsRunner = Callable[[int], list[float]]  # run n steps, return each step's seconds


@dataclass
class Variant:
    name: str
    run: StepsRunner
    before: Callable[[], None] | None = None  # untimed, before each block (e.g. tracemalloc.start)
    after: Callable[[], None] | None = None  # untimed, after each block
    external: bool = False  # runs in another process: settle before and after its blocks
    faults: Callable[[], int] | None = None  # the process's minor page faults so far (read around each block)


@dataclass
class Timings:
    steps_per_block: int
    rounds: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    block_medians: dict[str, list[float]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)  # minor page faults over the timed blocks

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def faults_per_step(self, name: str) -> float | None:
        """Minor page faults per timed step, or None when the variant has no fault counter."""
        if name not in self.faults:
            return None
        return self.faults[name] / max(len(self.samples[name]), 1)

    def ratio(self, measured: str, reference: str) -> tuple[float, float, float]:
        """(median over rounds of the ratio of block medians, its lowest and highest round)."""
        per_round = [a / b for a, b in zip(self.block_medians[measured], self.block_medians[reference])]
        return statistics.median(per_round), min(per_round), max(per_round)


def timed(step: Callable[[], object]) -> StepsRunner:
    """A runner that times `step()` n times (the call's return value is dropped inside the timing)."""
    clock = time.perf_counter

    def run(n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = clock()
            step()
            out.append(clock() - start)
        return out

    return run


def steps_for(seconds_per_step: float, block_seconds: float, lowest: int, highest: int) -> int:
    if seconds_per_step <= 0:
        return highest
    return max(lowest, min(highest, math.ceil(block_seconds / seconds_per_step)))


def interleave(variants: list[Variant], rounds: int, steps: int, warmup_steps: int = 3,
               settle_seconds: float = 0.25) -> Timings:
    """Warm every variant up, then run `rounds` rotations of one block of `steps` steps per variant."""
    result = Timings(steps, rounds, {v.name: [] for v in variants}, {v.name: [] for v in variants})
    for v in variants:  # warm-up: caches, allocator, BLAS threads, lazily built state
        _block(v, warmup_steps, settle_seconds)
    for _ in range(rounds):
        for v in variants:
            before = v.faults() if v.faults is not None else None
            seconds = _block(v, steps, settle_seconds)
            if before is not None:
                result.faults[v.name] = result.faults.get(v.name, 0) + v.faults() - before
            result.samples[v.name].extend(seconds)
            result.block_medians[v.name].append(statistics.median(seconds))
    return result


def _block(v: Variant, steps: int, settle_seconds: float) -> list[float]:
    gc.collect()  # no collection of an earlier block's garbage lands inside this block
    if v.external:
        time.sleep(settle_seconds)
    if v.before is not None:
        v.before()
    try:
        return v.run(steps)
    finally:
        if v.after is not None:
            v.after()
        if v.external:
            time.sleep(settle_seconds)

"""The fused-attention benchmark: a memstudy GPT training step with `attention = "flash"` against the same step with
the eager attention ops, side by side (interleaved blocks, benchmarks.timing).

The fused op (memstudy/autograd/ops/flash.py) keeps no scores and recomputes them in backward, tile by tile of 128
keys, in numpy: it trades the eager path's a·s²·b saved bytes for a second score computation and per-tile Python
loops. FlashAttention on a GPU is faster than eager attention because it saves memory traffic; numpy on a CPU has no
such gain, so this figure says what the memory saving costs here, with no target.
Figures (bench.csv rows):
  flash_step_vs_eager_gpt   GPT step (the GPT benchmark's size, dropout 0), attention flash ÷ eager, float32
Each row carries the load (`foreign_cores`) it was timed under.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable

from memstudy.config import normalize
from memstudy.measure.workload import Workload

from .gpt_bench import GPT_SIZE, QUICK_SIZE
from .heap import minor_faults
from .load import ForeignLoad, wait_until_quiet
from .precision_bench import _step
from .timing import Variant, interleave, steps_for, timed

FIGURES = ("flash_step_vs_eager_gpt",)
ATTENTIONS = ("eager", "flash")


def flash_rows(make_row: Callable[..., dict[str, Any]], rounds: int, block_seconds: float, min_steps: int,
               max_steps: int, log: Callable[[str], None], quick: bool = False, quiet_cores: float = 0.15,
               max_wait: float = 0.0) -> list[dict[str, Any]]:
    gpt = QUICK_SIZE if quick else GPT_SIZE
    base = {"model": "gpt", **gpt, "dropout": 0.0, "optimizer": "sgd", "dtype": "float32"}
    works = {a: Workload(normalize({**base, "attention": a})) for a in ATTENTIONS}
    variants = [Variant(a, timed(_step(w)), faults=minor_faults) for a, w in works.items()]
    probe = timed(_step(works["flash"]))(2)
    steps = steps_for(statistics.median(probe), block_seconds, min_steps, max_steps)
    log(f"  timing attention (gpt): {len(variants)} variants x {rounds} rounds x {steps} steps")
    if max_wait > 0:
        wait_until_quiet(quiet_cores, max_wait, log=log)
    load = ForeignLoad().start()
    t = interleave(variants, rounds, steps)
    foreign = load.cores()
    ratio, low, high = t.ratio("flash", "eager")
    note = ", ".join(f"{k} {v}" for k, v in base.items() if k not in ("depth", "width", "batch_size"))
    return [make_row("flash_step_vs_eager_gpt", ratio, "ratio", size=(gpt["depth"], gpt["width"], gpt["batch_size"]),
                     dtype="float32", measured=t.median("flash"), reference=t.median("eager"),
                     measured_label="memstudy gpt step s, attention flash",
                     reference_label="memstudy gpt step s, attention eager", round_min=low, round_max=high,
                     samples=rounds * steps, foreign_cores=foreign, measured_faults_per_step=t.faults_per_step("flash"),
                     reference_faults_per_step=t.faults_per_step("eager"), note=note)]

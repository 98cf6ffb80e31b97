"""The 16-bit benchmark: a memstudy training step in bfloat16 (and float16, and under autocast) against the same
step in float32, side by side (interleaved blocks, benchmarks.timing).

numpy has no 16-bit BLAS or fused 16-bit loops: memstudy emulates them (memstudy/autograd/ops/emulate.py: matrix
products in float32 tiles, element-wise chains in float32 blocks, each result rounded once), so a 16-bit step pays
for its conversions. The issue's target: a bfloat16 step costs at most 2× the float32 step.
Figures (bench.csv rows):
  bf16_step_vs_float32_gpt   GPT step, dtype bfloat16 ÷ float32 (the GPT benchmark's size), target ≤ 2
  bf16_step_vs_float32_mlp   MLP step (depth 4, width 512, batch 256), bfloat16 ÷ float32, target ≤ 2
  bf16_mixed_step_vs_float32_gpt, fp16_step_vs_float32_gpt   autocast bfloat16, and float16 (numpy's own slow float16
                             conversions), ÷ float32: no target, reported
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
from .timing import Variant, interleave, steps_for, timed

MLP_SIZE = (4, 512, 256)  # (depth, width, batch): the speed section's largest
QUICK_MLP_SIZE = (4, 64, 32)
FIGURES = ("bf16_step_vs_float32_gpt", "bf16_step_vs_float32_mlp", "bf16_mixed_step_vs_float32_gpt",
           "fp16_step_vs_float32_gpt")
TARGET = 2.0


def _step(work: Workload) -> Callable[[], None]:
    def step() -> None:
        work.optimizer.zero_grad()
        work.step()
    return step


def precision_rows(make_row: Callable[..., dict[str, Any]], rounds: int, block_seconds: float, min_steps: int,
                   max_steps: int, log: Callable[[str], None], quick: bool = False, quiet_cores: float = 0.15,
                   max_wait: float = 0.0) -> list[dict[str, Any]]:
    gpt = QUICK_SIZE if quick else GPT_SIZE
    mlp_size = QUICK_MLP_SIZE if quick else MLP_SIZE
    depth, width, batch = mlp_size
    groups = [
        ("gpt", {"model": "gpt", **gpt, "dropout": 0.0, "optimizer": "sgd"},
         (gpt["depth"], gpt["width"], gpt["batch_size"]),
         {"bf16_step_vs_float32_gpt": "bf16-true", "bf16_mixed_step_vs_float32_gpt": "bf16-mixed",
          "fp16_step_vs_float32_gpt": "16-true"}),
        ("mlp", {"model": "mlp", "depth": depth, "width": width, "batch_size": batch, "optimizer": "sgd"},
         mlp_size, {"bf16_step_vs_float32_mlp": "bf16-true"}),
    ]
    rows = []
    for name, base, size, figures in groups:
        works = {p: Workload(normalize({**base, "precision": p})) for p in ["32-true", *figures.values()]}
        variants = [Variant(p, timed(_step(w)), faults=minor_faults) for p, w in works.items()]
        probe = timed(_step(works["bf16-true"]))(2)
        steps = steps_for(statistics.median(probe), block_seconds, min_steps, max_steps)
        log(f"  timing precisions ({name}): {len(variants)} variants x {rounds} rounds x {steps} steps")
        if max_wait > 0:
            wait_until_quiet(quiet_cores, max_wait, log=log)
        load = ForeignLoad().start()
        t = interleave(variants, rounds, steps)
        foreign = load.cores()
        note = ", ".join(f"{k} {v}" for k, v in base.items() if k not in ("depth", "width", "batch_size"))
        for figure, precision in figures.items():
            ratio, low, high = t.ratio(precision, "32-true")
            row = make_row(figure, ratio, "ratio", size=size, dtype=works[precision].config["dtype"],
                           measured=t.median(precision), reference=t.median("32-true"),
                           measured_label=f"memstudy {name} step s, {precision}",
                           reference_label=f"memstudy {name} step s, 32-true", round_min=low, round_max=high,
                           samples=rounds * steps, foreign_cores=foreign,
                           measured_faults_per_step=t.faults_per_step(precision),
                           reference_faults_per_step=t.faults_per_step("32-true"), note=note)
            rows.append(row)
    return rows

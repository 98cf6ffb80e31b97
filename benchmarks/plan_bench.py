"""`python -m benchmarks.plan_bench`: what `memstudy plan` costs over Llama-3-8B on 8 devices (issue 27 item 2).

The plan searches experiments/configs/llama-3-8b.json at 4096 tokens, global batch 64, 8 × 80 GB with the CLI's
defaults (`memstudy plan`'s must-show command: two precisions, three checkpoint strategies, flash attention, Adam,
tensor parallel 1/2/4/8 with and without sequence parallelism, data parallel over the rest, ZeRO 0-3, micro-batches
1/2/4/8): 528 admissible configurations. Target: under 60 s on this machine (the issue's), in-process, after a first
small plan that is not timed (imports), with the CLI's default processes (`--jobs`: the cores this process may use).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from memstudy.plan import Choices, Machines, plan
from memstudy.plan.search import default_jobs, default_reserve_bytes

LLAMA_8B = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "llama-3-8b.json"
DEVICE_BYTES = 80 * 10 ** 9
TARGET_SECONDS = 60.0
CHOICES = Choices()  # the CLI's defaults


def measure(choices: Choices = CHOICES) -> dict[str, Any]:
    """Seconds of one plan (after an untimed small one), and its counts."""
    machines = Machines(8, DEVICE_BYTES, default_reserve_bytes(DEVICE_BYTES))
    plan(None, str(LLAMA_8B), 128, 8, machines, Choices(precision=("bf16-true",), checkpoint=("none",)))  # warm
    start = time.perf_counter()
    result = plan(None, str(LLAMA_8B), 4096, 64, machines, choices)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "configurations": len(result.space.configs), "considered": result.space.considered,
            "predictions": result.predictions, "reused": result.reused, "skipped": result.skipped_larger,
            "fitting": len(result.ranked), "jobs": default_jobs()}


def main() -> int:
    import os

    result = measure()
    load = os.getloadavg()
    print(f"plan_llama8b_seconds: {result['seconds']:.1f} s for {result['configurations']} admissible configurations "
          f"({result['considered']} combinations; {result['predictions']} rank graphs predicted, {result['reused']} "
          f"shared, {result['skipped']} skipped as larger than a micro-batch over the memory; {result['fitting']} "
          f"fit; {result['jobs']} processes); target {TARGET_SECONDS:g} s; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

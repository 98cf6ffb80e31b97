"""The block "will-it-fit" of docs/will-it-fit.md: three decisions `memstudy plan` makes, run here.

Each decision is the plan's own document (memstudy/plan/output.py) rendered as Markdown under its command line, or,
when nothing fits, the one line the command prints. Slow to render (three searches): a slow block.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from memstudy.plan import Choices, Machines, PlanError, plan
from memstudy.plan.output import nothing_fits, plan_document
from memstudy.plan.search import default_reserve_bytes
from memstudy.report.markdown import render
from memstudy.units import parse_bytes

TOP = 5  # rows of each ranked table


@dataclass(frozen=True)
class Decision:
    title: str
    why: str
    hf_config: str
    seq_len: int
    global_batch: int
    devices: int
    device_memory: str
    reserve: str | None = None  # None: the default (a GPU's CUDA context and fragmentation)
    flags: tuple[str, ...] = ()  # the command line's extra flags, as the CLI takes them
    choices: tuple[tuple[str, Any], ...] = ()  # the same, for the plan's API: (axis, values) pairs (hashable)


DECISIONS = (
    Decision("Llama-3-8B, full fine-tune, 8 × 80 GB",
             "The CLI's defaults: bf16-mixed and bf16-master, no, selective and every-layer checkpointing, flash "
             "attention, Adam, tensor parallel 1-8 with and without sequence parallelism, data parallel over the "
             "other devices, ZeRO 0-3, micro-batches 1-8; the global batch of 64 sequences of 4096 tokens.",
             "experiments/configs/llama-3-8b.json", 4096, 64, 8, "80GB"),
    Decision("Llama-3-8B, LoRA r = 16 on q_proj and v_proj, one 24 GB card",
             "peft's default targets for Llama; the base weights frozen in their 16-bit or 32-bit dtype.",
             "experiments/configs/llama-3-8b.json", 2048, 1, 1, "24GB", flags=("--lora-rank 16",),
             choices=(("lora_rank", (16,)),)),
    Decision("GPT-2 small, a laptop CPU with 16 GB",
             "No CUDA context on a CPU: the reserve is what the operating system, a desktop and the Python process "
             "keep (4 GiB, a stated guess), not the GPU default. GPT-2 trains with dropout 0.1, which the fused "
             "attention does not take: eager attention is searched too.",
             "experiments/configs/gpt2.json", 1024, 8, 1, "16GB", reserve="4GiB",
             flags=("--reserve 4GiB", "--attention eager,flash"), choices=(("attention", ("eager", "flash")),)),
)


def command(decision: Decision) -> str:
    return " ".join(["memstudy plan", f"--hf-config {decision.hf_config}", f"--seq-len {decision.seq_len}",
                     f"--global-batch {decision.global_batch}", f"--devices {decision.devices}",
                     f"--device-memory {decision.device_memory}", *decision.flags])


@functools.lru_cache(maxsize=None)  # a block rendered again in one process (the --readme tests) is planned once
def decision_lines(decision: Decision) -> list[str]:
    memory = parse_bytes(decision.device_memory)
    reserve = default_reserve_bytes(memory) if decision.reserve is None else parse_bytes(decision.reserve)
    machines = Machines(decision.devices, memory, reserve)
    result = plan(None, decision.hf_config, decision.seq_len, decision.global_batch, machines,
                  Choices(**dict(decision.choices)))
    lines = [f"### {decision.title}", "", decision.why, "", f"    {command(decision)}", ""]
    if not result.ranked:
        error: PlanError = nothing_fits(result)
        return lines + [f"    error: {error}", ""]
    document = plan_document(result, TOP, f"--hf-config {decision.hf_config}", "", timed=False)
    body = render(document).split("\n", 2)[2]  # without the (empty) title
    return lines + [body.rstrip(), ""]


def will_it_fit_block(results: Any) -> list[str]:
    lines: list[str] = []
    for decision in DECISIONS:
        lines += decision_lines(decision)
    return lines


__all__ = ["DECISIONS", "command", "decision_lines", "will_it_fit_block"]

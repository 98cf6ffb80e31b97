"""The GPT benchmark: memstudy's GPT training step against the numpy floor and against PyTorch CPU.

One size (issue 14): depth 2, width 256, heads 4, seq_len 256, batch 8, vocab 512, float32, dropout 0, SGD.
Figures (bench.csv rows; depth, width and batch_size in their columns, heads, seq_len and vocab in the note):
  gpt_engine_vs_numpy   memstudy step / the same step by hand in numpy (benchmarks.gpt_reference), target ≤ 1.15
  gpt_engine_vs_torch   memstudy step / PyTorch's (benchmarks.torch_gpt: the same explicit attention), no target
  gpt_floor_vs_torch    the numpy floor's step / PyTorch's: what numpy allows at all, beside the engine's figure
  gpt_ops_memstudy, gpt_ops_torch   where a step's time goes, op by op (each op's share in the note)
  gpt_checkpoint_selective, gpt_checkpoint_sqrt, gpt_checkpoint_every:1   the step with that checkpointing ÷ without
                        (interleaved like the rest, so a busy machine's drift cancels), activation bytes in the note
Ratios are measured side by side in interleaved blocks (benchmarks.timing), torch in its own process.
The op-by-op figures come from separate, untimed profiling steps: memstudy's by timing each op's forward and
backward (the ops' methods wrapped in this process only, then restored), PyTorch's from torch.profiler.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from memstudy.autograd import Function
from memstudy.autograd import ops
from memstudy.config import normalize
from memstudy.measure.workload import Workload

from .gpt_reference import NumpyGPT
from .harness import Settings, engine_variant, time_variants, torch_missing_row

GPT_SIZE = {"depth": 2, "width": 256, "heads": 4, "seq_len": 256, "batch_size": 8, "vocab": 512}
QUICK_SIZE = {"depth": 1, "width": 64, "heads": 2, "seq_len": 64, "batch_size": 2, "vocab": 128}
CHECKPOINTS = ("selective", "sqrt", "every:1")  # each timed against no checkpointing, side by side
FIGURES = ("gpt_engine_vs_numpy", "gpt_engine_vs_torch", "gpt_floor_vs_torch", "gpt_ops_memstudy", "gpt_ops_torch",
           *(f"gpt_checkpoint_{c}" for c in CHECKPOINTS))
STEP_LABELS = {"memstudy": "memstudy GPT step s", "numpy": "numpy GPT step s", "torch": "torch GPT step s",
               **{c: f"memstudy GPT step s, checkpoint {c}" for c in CHECKPOINTS}}


def gpt_config(size: dict[str, int], dtype: str = "float32", checkpoint: str = "none") -> dict[str, Any]:
    return normalize({"model": "gpt", **size, "dtype": dtype, "dropout": 0.0, "optimizer": "sgd", "seed": 0,
                      "checkpoint": checkpoint})


def _stepper(work: Workload) -> Callable[[], None]:
    def step() -> None:
        work.optimizer.zero_grad()
        work.step()
    return step


def describe(size: dict[str, int]) -> str:
    return f"heads {size['heads']}, seq_len {size['seq_len']}, vocab {size['vocab']}, dropout 0"


def _op_classes() -> list[type]:
    found = [getattr(ops, name) for name in ops.__all__]
    return [c for c in found if isinstance(c, type) and issubclass(c, Function)]  # none nests another


def memstudy_op_seconds(step: Callable[[], Any], steps: int) -> tuple[dict[str, float], float]:
    """({op forward|backward: seconds per step}, step seconds) over `steps` untimed-elsewhere steps, each op's
    forward and backward wrapped in a timer for the duration (the rest of a step is the engine's own work)."""
    clock = time.perf_counter
    totals: dict[str, float] = {}
    originals = []

    def wrap(cls: type, kind: str) -> None:
        original = cls.__dict__[kind].__func__
        key = f"{cls.name} {kind}"

        def timed_method(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                totals[key] = totals.get(key, 0.0) + clock() - start

        originals.append((cls, kind, cls.__dict__[kind]))
        setattr(cls, kind, staticmethod(timed_method))

    for cls in _op_classes():
        for kind in ("forward", "backward"):
            if kind in cls.__dict__:
                wrap(cls, kind)
    try:
        start = clock()
        for _ in range(steps):
            step()
        elapsed = (clock() - start) / steps
    finally:
        for cls, kind, method in originals:
            setattr(cls, kind, method)
    return {k: v / steps for k, v in totals.items()}, elapsed


def breakdown_note(shares: list[tuple[str, float]], total: float, top: int = 8) -> str:
    parts = [f"{name} {100 * seconds / total:.0f}%" for name, seconds in shares[:top] if total > 0]
    return "; ".join(parts)


def speed_rows(worker: Any, make_row: Callable[..., dict[str, Any]], settings: Settings,
               quick: bool = False) -> list[dict[str, Any]]:
    """The GPT figures (see the module docstring); `worker` is run.py's TorchWorker or None."""
    size = QUICK_SIZE if quick else GPT_SIZE
    config = gpt_config(size)
    work = Workload(config)
    floor = NumpyGPT.from_memstudy(work.model)
    idx, targets = work.inputs.data, work.labels
    engine_step = _stepper(work)
    variants = [engine_variant("memstudy", engine_step),
                engine_variant("numpy", lambda: floor.step(idx, targets))]
    checkpointed = {c: Workload(gpt_config(size, checkpoint=c)) for c in CHECKPOINTS}
    variants += [engine_variant(name, _stepper(other)) for name, other in checkpointed.items()]
    key = f"gpt-{size}"
    run = time_variants(f"GPT ({describe(size)})", variants, settings, engine_step, 2, worker, {"key": key, **config})
    foreign = run.foreign_cores
    gpt_size = (size["depth"], size["width"], size["batch_size"])
    common = dict(size=gpt_size, dtype=config["dtype"])
    note = describe(size)

    def ratio_row(figure: str, measured: str, reference: str, extra: str = "") -> dict[str, Any]:
        return run.ratio_row(make_row, STEP_LABELS, figure, measured, reference,
                             note=note + (f"; {extra}" if extra else ""), **common)

    rows = [ratio_row("gpt_engine_vs_numpy", "memstudy", "numpy")]
    plain_bytes = work.ledger_step().activation_bytes
    work.reset()
    for name, other in checkpointed.items():
        held = other.ledger_step().activation_bytes
        other.reset()
        row = ratio_row(f"gpt_checkpoint_{name}", name, "memstudy",
                        f"activation bytes {held:,} B against {plain_bytes:,} B without checkpointing "
                        f"({held / plain_bytes:.3f}×)")
        row["reference_label"] = "memstudy GPT step s, no checkpointing"
        rows.append(row)
    torch_ok = run.torch_ok
    if torch_ok:
        rows.append(ratio_row("gpt_engine_vs_torch", "memstudy", "torch",
                              f"torch {worker.info.get('torch')} with {worker.info.get('threads')} threads"))
        rows.append(ratio_row("gpt_floor_vs_torch", "numpy", "torch"))
    else:
        rows.append(torch_missing_row(make_row, run, "gpt_engine_vs_torch", STEP_LABELS["memstudy"], worker,
                                      f"{note}; torch not available", **common))

    profile_steps = max(2, min(run.samples // settings.rounds, 5))
    per_op, step_seconds = memstudy_op_seconds(engine_step, profile_steps)
    shares = sorted(per_op.items(), key=lambda kv: -kv[1])
    engine_rest = step_seconds - sum(per_op.values())
    shares.append(("engine and optimiser (outside the ops)", engine_rest))
    rows.append(make_row("gpt_ops_memstudy", step_seconds, "s", measured=sum(per_op.values()),
                         measured_label="time inside ops s", reference=step_seconds,
                         reference_label="profiled step s", samples=profile_steps, foreign_cores=foreign,
                         size=gpt_size, dtype=config["dtype"],
                         note=f"{note}; " + breakdown_note(sorted(shares, key=lambda kv: -kv[1]), step_seconds)))
    if torch_ok:
        try:
            ops_torch = worker.request(cmd="profile", key=key, steps=profile_steps)["ops"]
            total = sum(o["seconds"] for o in ops_torch)
            rows.append(make_row("gpt_ops_torch", total, "s", measured=total, measured_label="profiled self CPU s",
                                 samples=profile_steps, foreign_cores=foreign, size=gpt_size, dtype=config["dtype"],
                                 note=f"{note}; " + breakdown_note([(o["op"], o["seconds"]) for o in ops_torch],
                                                                    total)))
        except (RuntimeError, OSError, ValueError) as exc:
            worker.fail(exc)
    return rows

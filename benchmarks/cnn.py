"""The CNN's speed figures: memstudy's CNN training step against the same step by hand in numpy (the floor,
benchmarks.cnn_reference) and against PyTorch CPU (its own process, benchmarks.torch_worker).

  cnn_engine_vs_numpy   memstudy CNN step / the hand-written numpy step (target ≤ 1.15)
  cnn_engine_vs_torch   memstudy CNN step / PyTorch's, same threads
  cnn_floor_vs_torch    the numpy floor / PyTorch's (no target: what numpy allows against torch's kernels)

The size is the issue's: depth 3, width 16 (channels 16, 32, 64), 32×32 RGB images, batch 32, batch norm on,
`conv_save = input`, float32. A timed step is what the MLP's is: gradients None, forward, cross-entropy,
backward, SGD (lr 0.01).
"""
from __future__ import annotations

import statistics
from typing import Any, Callable

from memstudy.config import normalize
from memstudy.measure.workload import Workload

from .cnn_reference import NumpyCNN
from .heap import minor_faults
from .load import ForeignLoad, wait_until_quiet
from .timing import Variant, interleave, steps_for, timed

CNN_SIZE = (3, 16, 32)  # (depth, width, batch)
CNN_IMAGE = 32
CNN_LABELS = {"memstudy": "memstudy CNN step s", "numpy": "numpy CNN step s", "torch": "torch CNN step s"}


def cnn_config(dtype: str = "float32") -> dict[str, Any]:
    depth, width, batch = CNN_SIZE
    return normalize({"model": "cnn", "depth": depth, "width": width, "batch_size": batch, "image_size": CNN_IMAGE,
                      "in_channels": 3, "classes": 10, "batch_norm": True, "conv_save": "input", "dtype": dtype,
                      "mode": "train", "optimizer": "sgd", "seed": 0})


def cnn_speed_rows(dtype: str, worker: Any, rounds: int, block_seconds: float, min_steps: int, max_steps: int,
                   log: Callable[[str], None], make_row: Callable[..., dict[str, Any]], torch_note: Callable,
                   retries: int = 0, quiet_cores: float = 0.15, max_wait: float = 0.0) -> list[dict[str, Any]]:
    """The CNN figures at the issue's size; like the MLP's, an attempt disturbed by other processes (more than
    `quiet_cores` cores busy) is repeated up to `retries` times and the quietest one kept."""
    config = cnn_config(dtype)
    work = Workload(config)
    floor = NumpyCNN(work.model)
    x, labels = work.inputs.data, work.labels
    optimizer = work.optimizer

    def engine_step() -> None:
        optimizer.zero_grad()
        work.step()

    variants = [Variant("memstudy", timed(engine_step), faults=minor_faults),
                Variant("numpy", timed(lambda: floor.step(x, labels)), faults=minor_faults)]
    torch_ok = worker is not None and worker.available
    key = f"cnn-{dtype}"
    if torch_ok:
        try:
            worker.request(cmd="setup", key=key, **config)
        except (RuntimeError, OSError, ValueError) as exc:
            worker.fail(exc)
            torch_ok = False
    if torch_ok:
        variants.append(Variant("torch", lambda n: worker.request(cmd="time", key=key, steps=n)["seconds"],
                                external=True, faults=lambda: worker.minor_faults))
    steps = steps_for(statistics.median(timed(engine_step)(3)), block_seconds, min_steps, max_steps)
    best = None  # (foreign cores, timings)
    for attempt in range(1 + retries):
        log(f"  timing CNN {CNN_SIZE} image {CNN_IMAGE} {dtype}: {len(variants)} variants x {rounds} rounds x "
            f"{steps} steps" + (f" (attempt {attempt + 1})" if attempt else ""))
        if max_wait > 0:
            wait_until_quiet(quiet_cores, max_wait, log=log)
        load = ForeignLoad(lambda: [worker.proc.pid] if torch_ok else []).start()
        try:
            t = interleave(variants, rounds, steps)
        except (RuntimeError, OSError, ValueError) as exc:
            if not torch_ok:
                raise
            worker.fail(exc)
            torch_ok = False
            variants = variants[:2]
            best = None
            continue
        foreign = load.cores()
        if best is None or (foreign is not None and best[0] is not None and foreign < best[0]):
            best = (foreign, t)
        if foreign is None or foreign <= quiet_cores:
            break
        log(f"    other processes used {foreign:.2f} cores meanwhile (more than {quiet_cores:g})")
    if best is None:
        best = (None, interleave(variants, rounds, steps))
    foreign, t = best
    note = f"image {CNN_IMAGE}x{CNN_IMAGE}x3, batch norm, conv_save input"
    common = dict(size=CNN_SIZE, dtype=dtype, activation="relu", bias=False, samples=rounds * steps,
                  foreign_cores=foreign)

    def ratio_row(figure: str, measured: str, reference: str, extra: str = "") -> dict[str, Any]:
        ratio, low, high = t.ratio(measured, reference)
        return make_row(figure, ratio, "ratio", measured=t.median(measured), reference=t.median(reference),
                        measured_label=CNN_LABELS[measured], reference_label=CNN_LABELS[reference],
                        round_min=low, round_max=high, measured_faults_per_step=t.faults_per_step(measured),
                        reference_faults_per_step=t.faults_per_step(reference),
                        note=note + (f"; {extra}" if extra else ""), **common)

    rows = [ratio_row("cnn_engine_vs_numpy", "memstudy", "numpy")]
    if torch_ok:
        threads = f"torch {worker.info.get('torch')} with {worker.info.get('threads')} threads"
        rows.append(ratio_row("cnn_engine_vs_torch", "memstudy", "torch", threads))
        rows.append(ratio_row("cnn_floor_vs_torch", "numpy", "torch", threads))
    else:
        status = "failed" if worker is not None and worker.failed else "skipped"
        rows.append(make_row("cnn_engine_vs_torch", None, "ratio", measured=t.median("memstudy"),
                             measured_label=CNN_LABELS["memstudy"], status=status, note=torch_note(worker),
                             **{**common, "samples": ""}))
    return rows

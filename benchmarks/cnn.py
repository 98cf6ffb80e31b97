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

from typing import Any, Callable

from memstudy.config import normalize
from memstudy.measure.workload import Workload

from .cnn_reference import NumpyCNN
from .harness import Settings, engine_variant, time_variants, torch_missing_row

CNN_SIZE = (3, 16, 32)  # (depth, width, batch)
CNN_IMAGE = 32
CNN_LABELS = {"memstudy": "memstudy CNN step s", "numpy": "numpy CNN step s", "torch": "torch CNN step s"}


def cnn_config(dtype: str = "float32") -> dict[str, Any]:
    depth, width, batch = CNN_SIZE
    return normalize({"model": "cnn", "depth": depth, "width": width, "batch_size": batch, "image_size": CNN_IMAGE,
                      "in_channels": 3, "classes": 10, "batch_norm": True, "conv_save": "input", "dtype": dtype,
                      "mode": "train", "optimizer": "sgd", "seed": 0})


def cnn_speed_rows(dtype: str, worker: Any, settings: Settings, make_row: Callable[..., dict[str, Any]],
                   torch_note: Callable[[Any], str]) -> list[dict[str, Any]]:
    """The CNN figures at the issue's size (benchmarks.harness: retries, quiet check, ratio rows)."""
    config = cnn_config(dtype)
    work = Workload(config)
    floor = NumpyCNN(work.model)
    x, labels = work.inputs.data, work.labels
    optimizer = work.optimizer

    def engine_step() -> None:
        optimizer.zero_grad()
        work.step()

    variants = [engine_variant("memstudy", engine_step), engine_variant("numpy", lambda: floor.step(x, labels))]
    run = time_variants(f"CNN {CNN_SIZE} image {CNN_IMAGE} {dtype}", variants, settings, engine_step, 3, worker,
                        {"key": f"cnn-{dtype}", **config})
    note = f"image {CNN_IMAGE}x{CNN_IMAGE}x3, batch norm, conv_save input"
    common = dict(size=CNN_SIZE, dtype=dtype, activation="relu", bias=False)

    def ratio_row(figure: str, measured: str, reference: str, extra: str = "") -> dict[str, Any]:
        return run.ratio_row(make_row, CNN_LABELS, figure, measured, reference,
                             note=note + (f"; {extra}" if extra else ""), **common)

    rows = [ratio_row("cnn_engine_vs_numpy", "memstudy", "numpy")]
    if run.torch_ok:
        threads = f"torch {worker.info.get('torch')} with {worker.info.get('threads')} threads"
        rows.append(ratio_row("cnn_engine_vs_torch", "memstudy", "torch", threads))
        rows.append(ratio_row("cnn_floor_vs_torch", "numpy", "torch", threads))
    else:
        rows.append(torch_missing_row(make_row, run, "cnn_engine_vs_torch", CNN_LABELS["memstudy"], worker,
                                      torch_note(worker), **common))
    return rows

"""The CNN's speed figures: memstudy's CNN training step, once per convolution algorithm (`conv_algo`), against the
same step by hand in numpy (the floor, benchmarks.cnn_reference) and against PyTorch CPU (its own process,
benchmarks.torch_worker), all timed side by side in one run.

  cnn_engine_vs_numpy        memstudy CNN step (conv_algo per_example, the default) / the hand-written numpy step,
                             whose convolution is the same algorithm (target ≤ 1.15: the engine's own cost)
  cnn_engine_vs_torch        memstudy CNN step (per_example) / PyTorch's, same threads (target ≤ 1.3)
  cnn_batched_vs_torch       the same with conv_algo batched (one GEMM for the whole batch)
  cnn_auto_vs_torch          the same with conv_algo auto under conv_workspace = CNN_AUTO_WORKSPACE (blocks of examples)
  cnn_floor_vs_torch         the numpy floor / PyTorch's (no target: what numpy allows against torch's kernels)

Each memstudy row's note gives its convolutions' workspace (the ledger's most live conv2d.* bytes) and what ran.
The size is the issue's: depth 3, width 16 (channels 16, 32, 64), 32×32 RGB images, batch 32, batch norm on,
`conv_save = input`, float32. A timed step is what the MLP's is: gradients None, forward, cross-entropy,
backward, SGD (lr 0.01).
"""
from __future__ import annotations

from typing import Any, Callable

from memstudy.config import normalize
from memstudy.measure.cell import conv_figures
from memstudy.measure.workload import Workload
from memstudy.units import format_bytes

from .cnn_reference import NumpyCNN
from .harness import Settings, engine_variant, time_variants, torch_missing_row

CNN_SIZE = (3, 16, 32)  # (depth, width, batch)
CNN_IMAGE = 32
CNN_AUTO_WORKSPACE = "1MiB"  # auto's limit: below batched's whole-batch workspace at this size, so blocks are used
CNN_ALGOS = {"memstudy": "per_example", "batched": "batched", "auto": "auto"}  # variant -> conv_algo
CNN_LABELS = {"memstudy": "memstudy CNN step s", "batched": "memstudy CNN step s (batched)",
              "auto": f"memstudy CNN step s (auto, {CNN_AUTO_WORKSPACE})", "numpy": "numpy CNN step s",
              "torch": "torch CNN step s"}


def cnn_config(dtype: str = "float32", conv_algo: str = "per_example") -> dict[str, Any]:
    depth, width, batch = CNN_SIZE
    extra = {"conv_workspace": CNN_AUTO_WORKSPACE} if conv_algo == "auto" else {}
    return normalize({"model": "cnn", "depth": depth, "width": width, "batch_size": batch, "image_size": CNN_IMAGE,
                      "in_channels": 3, "classes": 10, "batch_norm": True, "conv_save": "input", "dtype": dtype,
                      "mode": "train", "optimizer": "sgd", "seed": 0, "conv_algo": conv_algo, **extra})


def conv_workspace_note(work: Workload) -> str:
    """What the step's convolutions ran and their workspace, from one ledger step (then the step is reset)."""
    figures = conv_figures(work.ledger_step())
    work.reset()
    return f"conv_algo ran {figures['conv_algo_ran']}, conv workspace {format_bytes(figures['conv_workspace_bytes'])}"


def cnn_speed_rows(dtype: str, worker: Any, settings: Settings, make_row: Callable[..., dict[str, Any]],
                   torch_note: Callable[[Any], str]) -> list[dict[str, Any]]:
    """The CNN figures at the issue's size, one memstudy variant per conv_algo (benchmarks.harness: retries, quiet
    check, ratio rows)."""
    works = {name: Workload(cnn_config(dtype, algo)) for name, algo in CNN_ALGOS.items()}
    notes = {name: conv_workspace_note(work) for name, work in works.items()}
    main = works["memstudy"]
    floor = NumpyCNN(main.model)
    x, labels = main.inputs.data, main.labels

    def engine_step(work: Workload) -> Callable[[], None]:
        def step() -> None:
            work.optimizer.zero_grad()
            work.step()
        return step

    variants = [engine_variant(name, engine_step(work)) for name, work in works.items()]
    variants.append(engine_variant("numpy", lambda: floor.step(x, labels)))
    run = time_variants(f"CNN {CNN_SIZE} image {CNN_IMAGE} {dtype}", variants, settings, engine_step(main), 3, worker,
                        {"key": f"cnn-{dtype}", **cnn_config(dtype)})
    note = f"image {CNN_IMAGE}x{CNN_IMAGE}x3, batch norm, conv_save input"
    common = dict(size=CNN_SIZE, dtype=dtype, activation="relu", bias=False)

    def ratio_row(figure: str, measured: str, reference: str, extra: str = "") -> dict[str, Any]:
        parts = [note] + ([notes[measured]] if measured in notes else []) + ([extra] if extra else [])
        return run.ratio_row(make_row, CNN_LABELS, figure, measured, reference, note="; ".join(parts), **common)

    rows = [ratio_row("cnn_engine_vs_numpy", "memstudy", "numpy")]
    if run.torch_ok:
        threads = f"torch {worker.info.get('torch')} with {worker.info.get('threads')} threads"
        rows.append(ratio_row("cnn_engine_vs_torch", "memstudy", "torch", threads))
        rows.append(ratio_row("cnn_batched_vs_torch", "batched", "torch", threads))
        rows.append(ratio_row("cnn_auto_vs_torch", "auto", "torch", threads))
        rows.append(ratio_row("cnn_floor_vs_torch", "numpy", "torch", threads))
    else:
        rows.append(torch_missing_row(make_row, run, "cnn_engine_vs_torch", CNN_LABELS["memstudy"], worker,
                                      torch_note(worker), **common))
    return rows

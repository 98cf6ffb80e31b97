"""Tensor- and pipeline-parallel steps for real: a process per rank on this machine, the collectives and the stages'
sends through torch.distributed (gloo over loopback; torch works on copies of the arrays). Needs torch (the `hf`
extra).

`run_tensor_parallel(raw)` starts one process per rank; each builds its rank's workload, copies its parts of the
one-device model's parameters into it (`tensor.shard`), takes one step from them beside the one-device step and
reports how far its updated parts are from the one-device step's parts (the largest absolute difference); then it measures a steady-state step under
the ledger and compares that account with its own prediction (the same rank's graph on shape-only arrays, in the
same process), buffer by buffer and event by event.
"""
from __future__ import annotations

import multiprocessing
import os
import socket
from typing import Any

import numpy as np

from .tensor import Group, shard, use_group

ONE_DEVICE_FIELDS = ("tensor_parallel", "sequence_parallel", "rank")


class TorchGroup(Group):
    """The whole torch.distributed world as one tensor-parallel group. torch works on copies of the arrays the ledger
    watches (were it to hold one of them, gloo's work objects could keep it alive past its death in the step); gloo
    has no reduce-scatter: an all-reduce of a copy, then this rank's part. The copies are the transport's, outside
    the ledger, as NCCL's own buffers would be."""

    def all_reduce(self, array: np.ndarray) -> None:
        if type(array) is np.ndarray:
            import torch
            import torch.distributed as dist

            summed = torch.from_numpy(np.array(array))  # a copy: torch never holds a buffer the ledger watches
            dist.all_reduce(summed)
            array[...] = summed.numpy()

    def all_gather(self, shard_: np.ndarray, out: np.ndarray, axis: int) -> None:
        if type(out) is not np.ndarray:
            return
        import torch
        import torch.distributed as dist

        source = torch.from_numpy(np.array(shard_))  # a copy (see all_reduce)
        parts = [torch.empty_like(source) for _ in range(self.size)]
        dist.all_gather(parts, source)
        n = shard_.shape[axis]
        for r, part in enumerate(parts):
            out[(slice(None),) * axis + (slice(r * n, (r + 1) * n),)] = part.numpy()

    def reduce_scatter(self, full: np.ndarray, out: np.ndarray, axis: int) -> None:
        if type(out) is not np.ndarray:
            return
        import torch
        import torch.distributed as dist

        summed = np.array(full)
        dist.all_reduce(torch.from_numpy(summed))
        out[...] = self.part(summed, axis)


class TorchPipeTransport:
    """Stages as torch.distributed ranks (rank = stage): blocking receives, sends started at once and completed at
    the step's end (`finish`), on copies (see TorchGroup); the tied word embedding's gradient summed over the first and
    last stages (Megatron-LM's embedding group)."""

    def __init__(self, stages: int):
        import torch.distributed as dist

        self.stages, self.pending = stages, []
        self.embedding_group = dist.new_group([0, stages - 1]) if stages > 1 else None

    def receive(self, out: np.ndarray, source: int, seed: int) -> None:
        import torch
        import torch.distributed as dist

        buffer = torch.from_numpy(np.empty_like(out))
        dist.recv(buffer, src=source)
        out[...] = buffer.numpy()

    def send(self, array: np.ndarray, destination: int) -> None:
        import torch
        import torch.distributed as dist

        self.pending.append(dist.isend(torch.from_numpy(np.array(array)), dst=destination))

    def reduce_tied(self, model: Any) -> None:
        import torch
        import torch.distributed as dist

        wte = getattr(getattr(model, "transformer", None), "wte", None)  # the GPT's tied embedding, on both ends
        if self.embedding_group is None or wte is None or wte.weight.grad is None:
            return
        summed = torch.from_numpy(np.array(wte.weight.grad))
        dist.all_reduce(summed, group=self.embedding_group)
        wte.weight.grad[...] = summed.numpy()

    def finish(self) -> None:
        for request in self.pending:
            request.wait()
        self.pending = []


def _stage_name(name: str, offset: int) -> str:
    """A stage's parameter name → the one-device model's (its blocks numbered from `offset`)."""
    parts = name.split(".")
    for i in range(2, len(parts)):
        if parts[i - 2:i] in (["transformer", "h"], ["model", "layers"]) and parts[i].isdigit():
            parts[i] = str(int(parts[i]) + offset)
    return ".".join(parts)


def pipeline_rank_step(raw: dict[str, Any], rank: int) -> dict[str, Any]:
    """A pipeline stage's checks (as `rank_step`'s), rank = stage."""
    from ..config import normalize
    from ..measure.predict import predicted_account
    from ..measure.workload import Workload
    from .pipeline import use_transport

    config = normalize({**raw, "rank": rank})
    p = config["pipeline_parallel"]
    single = Workload(normalize({k: v for k, v in raw.items()
                                 if k not in ("pipeline_parallel", "microbatches", "schedule", "rank")}))
    work = Workload(config)
    offset = rank * config["depth"] // p
    full = dict(single.model.named_parameters())
    for name, param in work.model.named_parameters():
        param.data[...] = full[_stage_name(name, offset)].data
    transport = TorchPipeTransport(p)
    with use_transport(transport):
        work.step()
    single.step()
    error = max(float(np.max(np.abs(param.data - full[_stage_name(name, offset)].data)))
                for name, param in work.model.named_parameters())
    work.reset()
    with use_transport(transport):
        measured = work.ledger_step()
    predicted = predicted_account(config)
    return {"rank": rank, "max_abs_error": error, "same_buffers": measured.buffers == predicted.buffers,
            "same_events": measured.raw_events == predicted.raw_events, "peak_bytes": measured.peak_bytes,
            "predicted_peak_bytes": predicted.peak_bytes,
            "communication_bytes": measured.max_by_category.get("communication", 0)}


def rank_step(raw: dict[str, Any], rank: int) -> dict[str, Any]:
    """One rank's checks (see the module docstring), inside an initialised process group: the largest absolute
    difference of its updated parts from the one-device step's, and whether its measured account is its prediction."""
    from ..config import normalize
    from ..measure.predict import predicted_account
    from ..measure.workload import Workload

    t = raw["tensor_parallel"]
    config = normalize({**raw, "rank": rank})
    single = Workload(normalize({k: v for k, v in raw.items() if k not in ONE_DEVICE_FIELDS}))
    work = Workload(config)
    full = dict(single.model.named_parameters())
    for name, p in work.model.named_parameters():
        p.data[...] = shard(name, full[name].data, t, rank)
    group = TorchGroup(t, rank)
    with use_group(group):
        work.step()
    single.step()
    error = 0.0
    for name, p in work.model.named_parameters():
        expected = shard(name, full[name].data, t, rank)
        error = max(error, float(np.max(np.abs(p.data - expected))))
    work.reset()
    with use_group(group):
        measured = work.ledger_step()
    predicted = predicted_account(config)
    return {"rank": rank, "max_abs_error": error, "same_buffers": measured.buffers == predicted.buffers,
            "same_events": measured.raw_events == predicted.raw_events, "peak_bytes": measured.peak_bytes,
            "predicted_peak_bytes": predicted.peak_bytes,
            "communication_bytes": measured.max_by_category.get("communication", 0)}


def _rank_main(rank: int, world: int, port: int, raw: dict[str, Any], results: Any, pipeline: bool = False) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results.put((pipeline_rank_step if pipeline else rank_step)(raw, rank))
    except Exception as error:  # the parent reports it: one line per failed rank
        results.put({"rank": rank, "error": f"{type(error).__name__}: {error}"})
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pipeline_parallel(raw: dict[str, Any], timeout_seconds: float = 120.0) -> list[dict[str, Any]]:
    """Each stage's checks of the pipeline configuration `raw` (its `pipeline_parallel` stages as processes)."""
    return run_tensor_parallel(raw, timeout_seconds, pipeline=True)


def run_tensor_parallel(raw: dict[str, Any], timeout_seconds: float = 120.0,
                        pipeline: bool = False) -> list[dict[str, Any]]:
    """Each rank's checks of the tensor-parallel configuration `raw` (its `tensor_parallel` ranks as processes)."""
    world = raw["pipeline_parallel"] if pipeline else raw["tensor_parallel"]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_rank_main, args=(r, world, port, raw, results, pipeline)) for r in range(world)]
    for process in processes:
        process.start()
    try:
        found = [results.get(timeout=timeout_seconds) for _ in range(world)]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return sorted(found, key=lambda r: r["rank"])


__all__ = ["TorchGroup", "TorchPipeTransport", "pipeline_rank_step", "rank_step", "run_pipeline_parallel",
           "run_tensor_parallel"]

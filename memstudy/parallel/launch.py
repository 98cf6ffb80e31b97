"""Real ranks at small sizes: N processes on this machine, collectives through torch.distributed (gloo, loopback).

`TorchDistributed` is a `collectives.Backend` over an initialised gloo process group: each collective reads the
numpy buffers the ledger counts through zero-copy views (`torch.from_numpy`; bfloat16 through an int16 view) into
torch-side copies, runs on those, and writes the result back through views (gloo may hold the tensors it is given
after a call returns, which would move a numpy buffer's death). gloo has no reduce-scatter: it is an all-reduce of
which the rank keeps its part. torch's buffers are outside numpy: neither the ledger nor the prediction counts them.

`run_ranks(config, world_size)` starts the ranks (multiprocessing, spawn) and returns what each reports
(`rank_step`): its ledger account against its own prediction, and its parameters after one step. An optional
extra: it needs torch (`pip install memstudy[collectives]`).
"""
from __future__ import annotations

import socket
from typing import Any

import numpy as np

from .collectives import Backend


def _torch_view(array: np.ndarray) -> Any:
    import torch

    if str(array.dtype) == "bfloat16":  # ml_dtypes' type: torch reads its bits
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class TorchDistributed(Backend):
    """Collectives through an initialised torch.distributed process group (gloo)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()

    # gloo's work objects may hold the tensors they were given after the call returns (and free them on another
    # thread), which would move a numpy buffer's death: each collective works on torch-side copies, and only the
    # main thread's short-lived zero-copy views touch the numpy buffers
    def all_reduce(self, array: np.ndarray) -> None:
        view = _torch_view(array)
        total = view.clone()
        self.dist.all_reduce(total)
        view.copy_(total)

    def all_gather(self, shard: np.ndarray, out: np.ndarray) -> None:
        n = shard.shape[0]
        mine = _torch_view(np.ascontiguousarray(shard)).clone()
        parts = [mine.clone() for _ in range(self.world_size)]
        self.dist.all_gather(parts, mine)
        for r, part in enumerate(parts):
            _torch_view(out[r * n:(r + 1) * n]).copy_(part)

    def reduce_scatter(self, full: np.ndarray, out: np.ndarray) -> None:
        total = _torch_view(full).clone()
        self.dist.all_reduce(total)
        n = out.shape[0]
        _torch_view(out).copy_(total[self.rank * n:(self.rank + 1) * n])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_step(config: dict[str, Any], rank: int, world_size: int, port: int, batch: Any) -> dict[str, Any]:
    """One rank's process: its prediction (simulated rank), then a real step (the parameters after it), then a
    ledger step compared with the prediction, buffer by buffer. `batch`: the global (inputs, labels); the rank takes
    its slice."""
    import torch.distributed as dist

    from ..autograd import Tensor
    from ..config import normalize
    from ..measure.predict import predicted_account
    from ..measure.workload import Workload
    from . import collectives as C

    config = normalize({**config, "rank": rank})
    with C.use_backend(C.Simulated(world_size, rank)):
        predicted = predicted_account(config)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        with C.use_backend(TorchDistributed()):
            work = Workload(config)
            inputs, labels = batch
            b = inputs.shape[0] // world_size
            work.inputs = Tensor(inputs[rank * b:(rank + 1) * b].copy())  # its own buffers, as the prediction's
            work.labels = labels[rank * b:(rank + 1) * b].copy()
            work.step()  # the warm-up step: the one compared with a single device's
            after = {name: p.data.copy() for name, p in work.model.named_parameters()}
            work.optimizer.zero_grad()
            measured = work.ledger_step()
        same = (predicted.buffers == measured.buffers and predicted.raw_events == measured.raw_events
                and predicted.peak_bytes == measured.peak_bytes
                and predicted.max_by_category == measured.max_by_category
                and predicted.collective_bytes == measured.collective_bytes)
        diff = next((f"predicted {a} measured {b}" for a, b in zip(predicted.buffers, measured.buffers) if a != b),
                    None)
        return {"rank": rank, "same": same, "first_difference": diff, "peak_bytes": measured.peak_bytes,
                "predicted_peak_bytes": predicted.peak_bytes, "parameters": after}
    finally:
        dist.destroy_process_group()


def _worker(config: dict[str, Any], rank: int, world_size: int, port: int, batch: Any, queue: Any) -> None:
    try:
        queue.put(rank_step(config, rank, world_size, port, batch))
    except BaseException as exc:  # the parent reports it
        queue.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}"})


def run_ranks(config: dict[str, Any], world_size: int, batch: Any, timeout_seconds: float = 120.0
              ) -> list[dict[str, Any]]:
    """Each rank's `rank_step` report, in rank order (RuntimeError naming a rank that failed)."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_worker, args=(config, r, world_size, port, batch, queue))
                 for r in range(world_size)]
    for p in processes:
        p.start()
    import queue as queues
    import time

    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_seconds
    try:
        while len(reports) < world_size:
            try:
                reports.append(queue.get(timeout=0.5))
            except queues.Empty:
                dead = [r for r, p in enumerate(processes) if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    why = f"exited with status {processes[dead[0]].exitcode}" if dead else "timed out"
                    raise RuntimeError(f"rank {dead[0] if dead else '?'} {why}") from None
    finally:
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    failed = [r for r in reports if "error" in r]
    if failed:
        raise RuntimeError(f"rank {failed[0]['rank']} failed: {failed[0]['error']}")
    return sorted(reports, key=lambda r: r["rank"])


def gathered(reports: list[dict[str, Any]], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The whole parameters from every rank's: a whole one as rank 0 holds it, a stage-3 part concatenated over
    the ranks and trimmed to the parameter's shape."""
    out = {}
    for name, shape in shapes.items():
        first = reports[0]["parameters"][name]
        if first.shape == shape:
            out[name] = first
        else:
            flat = np.concatenate([r["parameters"][name] for r in reports])
            out[name] = flat[:int(np.prod(shape))].reshape(shape)
    return out

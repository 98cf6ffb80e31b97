"""Pipeline parallelism: one stage's step, its m microbatches run in the schedule's order.

With p stages a rank holds depth/p consecutive blocks (the embeddings on the first stage, the final norm, head and
loss on the last: `Family.build` builds the stage, see `stage_fields`). The batch is split into m microbatches
(views along the batch axis). The schedule orders the stage's forwards (F i) and backwards (B i):

- `gpipe` (Huang et al. 2019): every forward, then every backward: the stage holds m microbatches' saved tensors;
- `1f1b` (PipeDream-Flush, Narayanan et al. 2021; Megatron-LM's default): stage k runs min(p − k − 1, m) warm-up
  forwards, then one forward and one backward in turn, then the remaining backwards: the first stage holds p
  microbatches at once (Korthikanti et al. 2022: L layers' worth in total), the last one.

Each microbatch's saved tensors are held until its backward. Between stages the hidden states and their gradients
move point to point: a later stage receives its input (and each stage the gradient of its output) into a new
`communication` buffer; what a stage sends is its own buffer, which it lets go once sent (the stage keeps the
output's graph node only, as Megatron-LM's `deallocate_output_tensor` does). A microbatch's loss is scaled by 1/m
so the gradients add up to the batch's.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from ..autograd import STATE, Tensor, autocast, backward_to_inputs, phase_scope, saved_tensors_policy
from ..autograd.meta import MetaArray
from .collectives import COMMUNICATION

SCHEDULES = ("1f1b", "gpipe")


def stages(config: dict[str, Any]) -> int:
    return config.get("pipeline_parallel") or 1


def applies(config: dict[str, Any]) -> bool:
    """Whether the step runs as a pipeline stage (more than one stage, or more than one microbatch)."""
    return stages(config) > 1 or (config.get("microbatches") or 1) > 1


def stage_of(config: dict[str, Any]) -> int:
    """The pipeline stage of the accounted rank: Megatron-LM's rank order (tensor-parallel fastest, then data-parallel,
    then pipeline) from the config's `rank`, or else the first stage (under 1F1B the one holding p microbatches)."""
    rank = config.get("rank")
    if rank is None:
        return 0
    return rank // ((config.get("data_parallel") or 1) * (config.get("tensor_parallel") or 1))


def stage_fields(config: dict[str, Any]) -> dict[str, Any]:
    """What a family's builder needs for the stage: depth/p blocks, whether it is the first or the last."""
    p, k = stages(config), stage_of(config)
    return {"depth": config["depth"] // p, "first": k == 0, "last": k == p - 1}


def check(config: dict[str, Any]) -> str | None:
    """The line saying why a pipeline configuration cannot run, else None."""
    p, m = stages(config), config.get("microbatches") or 1
    if p == 1 and m == 1:
        return None
    if config["depth"] % p:
        return f"pipeline_parallel {p} must divide depth ({config['depth']})"
    if config.get("mode", "train") != "train":
        return f"pipeline_parallel {p} with microbatches {m}: a pipeline schedules training steps (mode train)"
    if config.get("schedule", "1f1b") == "1f1b" and m < p:
        return f"microbatches {m} < pipeline_parallel {p}: the 1f1b schedule needs at least p microbatches"
    if config["batch_size"] % m:
        return f"microbatches {m} must divide batch_size ({config['batch_size']})"
    return None


def order(p: int, k: int, m: int, schedule: str) -> list[tuple[str, int]]:
    """Stage k's ("F" | "B", microbatch) steps under the schedule."""
    if schedule == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    warm = min(p - k - 1, m)
    steps = [("F", i) for i in range(warm)]
    for j in range(m - warm):
        steps += [("F", warm + j), ("B", j)]
    return steps + [("B", i) for i in range(m - warm, m)]


class Transport:
    """How stages exchange arrays. This one stands for every other stage in one process: what it receives are small
    deterministic values, what it sends goes nowhere (a real run's transport: multiprocess.TorchPipeTransport)."""

    def receive(self, out: np.ndarray, source: int, seed: int) -> None:
        """Fill `out` with what stage `source` sent."""
        out[...] = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype) * 0.1

    def send(self, array: np.ndarray, destination: int) -> None:
        """Send `array` to stage `destination` (the caller lets it go afterwards)."""

    def reduce_tied(self, model: Any) -> None:
        """After backward: sum the tied word embedding's gradient over the first and last stages (each holds a copy)."""

    def finish(self) -> None:
        """After the step: every send completed."""


_TRANSPORT: list[Transport] = [Transport()]


def transport() -> Transport:
    return _TRANSPORT[-1]


@contextlib.contextmanager
def use_transport(chosen: Transport) -> Iterator[Transport]:
    """Stages exchange through `chosen` inside (a real run's)."""
    _TRANSPORT.append(chosen)
    try:
        yield chosen
    finally:
        _TRANSPORT.pop()


def _receive(like: Any, shape: tuple[int, ...], dtype: Any, op: str, source: int, seed: int) -> np.ndarray:
    """A new buffer for what a neighbouring stage sends, reported as `communication`, filled by the transport."""
    out = np.empty(shape, dtype=dtype, like=like)
    instrument = STATE.instrument
    if instrument is not None:
        instrument.on_new(out, op, None, category=COMMUNICATION)
    if type(out) is not MetaArray:
        transport().receive(out, source, seed)
    return out


class Pipeline:
    """Stage k of p: runs the m microbatches of a workload's batch in the schedule's order (`forward_backward`)."""

    def __init__(self, config: dict[str, Any], model: Any, loss: Any):
        self.p, self.k = stages(config), stage_of(config)
        self.m, self.schedule = config.get("microbatches") or 1, config.get("schedule") or "1f1b"
        self.model, self._loss = model, loss
        self.first, self.last = self.k == 0, self.k == self.p - 1
        t = config.get("tensor_parallel") or 1
        tokens = config["seq_len"] // t if config.get("sequence_parallel") and t > 1 else config["seq_len"]
        self.hidden_shape = (config["batch_size"] // self.m, tokens, config["width"])  # what crosses a stage boundary
        self.dtype = model.dtype

    def forward_backward(self, work: Any, scale: float | None = None) -> Any:
        """The stage's forwards and backwards of every microbatch; returns the last microbatch's loss on the last
        stage (None elsewhere). `scale`: the loss scale (dynamic loss scaling), applied to each microbatch's loss."""
        inputs = work.inputs.data
        n = inputs.shape[0] // self.m
        held: dict[int, tuple] = {}  # microbatch -> (its received input, the graph node of what it sent or its loss)
        loss = None
        for kind, i in order(self.p, self.k, self.m, self.schedule):
            if kind == "F":
                x = (Tensor(inputs[i * n:(i + 1) * n]) if self.first else
                     Tensor(_receive(inputs, self.hidden_shape, self.dtype, "recv_forward", self.k - 1, i),
                            requires_grad=True))
                with saved_tensors_policy(work.policy), autocast(work.autocast):
                    out = self.model(x)
                    if self.last:
                        labels = work.labels[i * n:(i + 1) * n]
                        out = self._loss(out, labels) * (1.0 / self.m)
                        if scale is not None:
                            out = out * scale
                        loss = out
                held[i] = (None if self.first else x, out._node, out.data.shape, out.data.dtype)
                if not self.last and type(out.data) is not MetaArray:
                    transport().send(out.data, self.k + 1)
                out = x = None  # what was sent is let go; its node stays for the backward
                if not self.last:
                    loss = None
            else:
                x, node, shape, dtype = held.pop(i)
                with phase_scope("backward"):
                    if self.last:
                        grad = np.ones(shape, dtype=dtype, like=inputs)
                        if STATE.instrument is not None:
                            STATE.instrument.on_new(grad, "backward_seed", None)
                    else:
                        grad = _receive(inputs, shape, dtype, "recv_backward", self.k + 1, self.m + i)
                    grads = backward_to_inputs(node, grad, () if x is None else (x,))
                    del grad, node
                    if x is not None and type(grads[0]) is not MetaArray:
                        transport().send(grads[0], self.k - 1)
                    grads = None  # the input's gradient is sent to the previous stage, then let go
                x = None
        if type(inputs) is not MetaArray:
            transport().reduce_tied(self.model)
            transport().finish()
        return loss


def loss_on_outputs(loss: Any) -> Any:
    """A workload's loss(model, inputs, labels) as a function of the head's outputs and the labels."""
    class _Outputs:
        def __init__(self, out: Any):
            self.out = out

        def __call__(self, _: Any) -> Any:
            return self.out

    return lambda out, labels: loss(_Outputs(out), None, labels)


__all__ = ["Pipeline", "SCHEDULES", "check", "order", "stage_fields", "stage_of", "stages"]

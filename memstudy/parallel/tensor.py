"""Tensor and sequence parallelism as Megatron-LM builds them (Shoeybi et al. 2019; Korthikanti et al. 2022).

A tensor-parallel group of t ranks splits each transformer block's attention heads and the MLP's hidden units t
ways. A *column-parallel* Linear keeps out_features/t rows of the weight (and of the bias); a *row-parallel* one
in_features/t columns, its partial products summed over the group, its bias (whole, on every rank) added after the
sum. Around them Megatron-LM's conjugate ops:

- f (`CopyToTensorParallel`): identity forward (a view: nothing new), all-reduce of the gradient backward, before a
  column-parallel Linear (so the Linear saves the very buffer the layer norm made: replicated, 2sbh bytes);
- g (`ReduceFromTensorParallel`): all-reduce forward, in place on the row-parallel product (NCCL's in-place
  all-reduce: no new buffer), identity backward.

Sequence parallelism (Korthikanti et al. 2022, section 4.2.2) keeps the residual stream, the layer norms and the
dropouts on s/t tokens (the sequence axis, axis 1 of memstudy's (b, s, h) activations):

- `SequenceParallelLinear`: a column-parallel Linear whose input is this rank's s/t tokens: it all-gathers them
  (a `communication` buffer that lives only while the product is made), saves only the local shard for backward,
  and in backward gathers again for the weight's gradient and reduce-scatters the input's gradient (Megatron-LM's
  `LinearWithGradAccumulationAndAsyncCommunication`);
- `ReduceScatterToSequence` (ḡ): after a row-parallel Linear, the sum over the group of each rank's partial product,
  this rank's s/t tokens of it; backward: all-gather;
- `ScatterToSequence` / `GatherFromSequence`: into and out of the sequence-parallel region around the blocks (the
  embeddings' output split, the last layer norm's output gathered for a head every rank holds whole).

Every buffer a collective writes is filed `communication` (collectives.report, or the op's `output_category`). The
collectives run through a `Group` of the t ranks: shape-only arrays move nothing; real arrays move through the
group's backend (the simulated one stands for a group whose every rank holds what this one holds).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from ..autograd import Tensor, apply
from ..autograd.engine import STATE, Function, Node
from ..autograd.meta import MetaArray
from ..autograd.ops import linalg
from .collectives import COMMUNICATION

SEQUENCE_AXIS = 1  # memstudy's activations are (batch, sequence, hidden)


class Group:
    """A tensor-parallel group: `size` ranks, this process standing for `rank`. Simulated: every rank holds what
    this one holds (an all-reduce multiplies by the size, a gather repeats the shard); a subclass moves real data
    (`TorchGroup` in launch code). Shape-only arrays move nothing either way."""

    def __init__(self, size: int, rank: int = 0):
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"rank {rank} of a tensor-parallel group of {size}")
        self.size, self.rank = size, rank

    def all_reduce(self, array: np.ndarray) -> None:
        """Sum over the group, in place."""
        if type(array) is np.ndarray and self.size > 1:
            array *= self.size

    def all_gather(self, shard: np.ndarray, out: np.ndarray, axis: int) -> None:
        """out = every rank's shard along `axis`, in rank order."""
        if type(out) is np.ndarray:
            n = shard.shape[axis]
            for r in range(self.size):
                out[(slice(None),) * axis + (slice(r * n, (r + 1) * n),)] = shard

    def reduce_scatter(self, full: np.ndarray, out: np.ndarray, axis: int) -> None:
        """out = this rank's part along `axis` of the sum over the group of `full`."""
        if type(out) is np.ndarray:
            n = out.shape[axis]
            part = full[(slice(None),) * axis + (slice(self.rank * n, (self.rank + 1) * n),)]
            np.multiply(part, self.size, out=out)

    def part(self, full: np.ndarray, axis: int) -> np.ndarray:
        """This rank's part of `full` along `axis` (a view)."""
        n = full.shape[axis] // self.size
        return full[(slice(None),) * axis + (slice(self.rank * n, (self.rank + 1) * n),)]


_GROUPS: list[Group] = []


def group(size: int) -> Group:
    """The tensor-parallel group of `size` ranks collectives run through now: the one `use_group` installed, or a
    simulated group standing for rank 0."""
    for chosen in reversed(_GROUPS):
        if chosen.size == size:
            return chosen
    return Group(size, 0)


@contextlib.contextmanager
def use_group(chosen: Group) -> Iterator[Group]:
    """Tensor-parallel collectives of `chosen.size` ranks inside run through `chosen` (a real run's group)."""
    _GROUPS.append(chosen)
    try:
        yield chosen
    finally:
        _GROUPS.pop()


def report(ctx: Node, array: np.ndarray, op: str) -> np.ndarray:
    """Tell the instrument (the ledger) that `array` is a collective's buffer made by `op` in `ctx`'s layer (in
    backward too, where no layer scope is open). Returns it."""
    instrument = STATE.instrument
    if instrument is not None:
        instrument.on_new(array, op, ctx.layer, category=COMMUNICATION)
    return array


def _gathered(ctx: Node, shard: np.ndarray, size: int, op: str) -> np.ndarray:
    """A new (b, size·s, ...) buffer holding every rank's (b, s, ...) shard, reported as `communication`."""
    shape = shard.shape[:SEQUENCE_AXIS] + (shard.shape[SEQUENCE_AXIS] * size,) + shard.shape[SEQUENCE_AXIS + 1:]
    out = report(ctx, np.empty(shape, dtype=shard.dtype, like=shard), op)
    group(size).all_gather(shard, out, SEQUENCE_AXIS)
    return out


def _scattered(ctx: Node, full: np.ndarray, size: int, op: str) -> np.ndarray:
    """This rank's (b, s/size, ...) part of the sum over the group of `full`, a new buffer (`communication`)."""
    n = full.shape[SEQUENCE_AXIS]
    if n % size:
        raise ValueError(f"{op}: sequence length {n} is not divisible by {size} tensor-parallel ranks")
    shape = full.shape[:SEQUENCE_AXIS] + (n // size,) + full.shape[SEQUENCE_AXIS + 1:]
    out = report(ctx, np.empty(shape, dtype=full.dtype, like=full), op)
    group(size).reduce_scatter(full, out, SEQUENCE_AXIS)
    return out


# --- tensor parallelism: f and g ---------------------------------------------------------------------------------
class CopyToTensorParallel(Function):
    """Megatron-LM's f: identity forward (a view), the gradient all-reduced over the group backward (into a new
    buffer: backward never writes into its incoming gradient)."""

    name = "copy_to_tensor_parallel"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, size: int) -> np.ndarray:
        ctx.size = size
        return x.view()

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        out = report(ctx, np.empty_like(grad), "all_reduce")
        np.copyto(out, grad)
        group(ctx.size).all_reduce(out)
        return (out,)


class ReduceFromTensorParallel(Function):
    """Megatron-LM's g: the row-parallel partial products summed over the group in place (the product is fresh and
    no op holds it), returned as a view; identity backward."""

    name = "reduce_from_tensor_parallel"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, size: int) -> np.ndarray:
        group(size).all_reduce(x)
        return x.view()

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (grad,)


# --- sequence parallelism ----------------------------------------------------------------------------------------
class ScatterToSequence(Function):
    """Into the sequence-parallel region: this rank's s/t tokens of a replicated (b, s, h) activation (a copy, as
    Megatron-LM's split makes it contiguous); backward: the gradients of every rank's tokens all-gathered."""

    name = "scatter_to_sequence"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, size: int) -> np.ndarray:
        if x.shape[SEQUENCE_AXIS] % size:
            raise ValueError(f"sequence length {x.shape[SEQUENCE_AXIS]} is not divisible by {size} tensor-parallel "
                             "ranks")
        ctx.size = size
        return np.ascontiguousarray(group(size).part(x, SEQUENCE_AXIS), like=x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (_gathered(ctx, np.ascontiguousarray(grad, like=grad), ctx.size, "all_gather"),)


class GatherFromSequence(Function):
    """Out of the sequence-parallel region, for a layer every rank holds whole (the head): every rank's tokens
    all-gathered into a new (b, s, h) buffer; backward: this rank's tokens of the gradient (each rank computed the
    whole gradient alike), a copy."""

    name = "gather_from_sequence"
    output_category = COMMUNICATION

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, size: int) -> np.ndarray:
        ctx.size, ctx.role = size, "all_gather"
        shape = x.shape[:SEQUENCE_AXIS] + (x.shape[SEQUENCE_AXIS] * size,) + x.shape[SEQUENCE_AXIS + 1:]
        out = np.empty(shape, dtype=x.dtype, like=x)
        group(size).all_gather(np.ascontiguousarray(x, like=x), out, SEQUENCE_AXIS)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (np.ascontiguousarray(group(ctx.size).part(grad, SEQUENCE_AXIS), like=grad),)


class ReduceScatterToSequence(Function):
    """ḡ: after a row-parallel Linear, this rank's s/t tokens of the sum over the group (a new buffer);
    backward: the gradient's tokens all-gathered from every rank."""

    name = "reduce_scatter_to_sequence"
    output_category = COMMUNICATION

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, size: int) -> np.ndarray:
        ctx.size, ctx.role = size, "reduce_scatter"
        n = x.shape[SEQUENCE_AXIS]
        if n % size:
            raise ValueError(f"sequence length {n} is not divisible by {size} tensor-parallel ranks")
        out = np.empty(x.shape[:SEQUENCE_AXIS] + (n // size,) + x.shape[SEQUENCE_AXIS + 1:], dtype=x.dtype, like=x)
        group(size).reduce_scatter(x, out, SEQUENCE_AXIS)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (_gathered(ctx, np.ascontiguousarray(grad, like=grad), ctx.size, "all_gather"),)


class SequenceParallelLinear(Function):
    """A column-parallel Linear on this rank's s/t tokens: all-gather them into a `communication` buffer, multiply,
    keep only the local shard for backward; backward gathers again for the weight's gradient and reduce-scatters the
    input's (the whole-sequence input gradient is a workspace that dies with the scatter). The product itself is
    `ops.Linear`'s (its 16-bit emulation included)."""

    name = "sequence_parallel_linear"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                size: int) -> np.ndarray:
        ctx.size = size
        total = _gathered(ctx, x, size, "all_gather")
        out = ctx.result(linalg.Linear.forward(ctx, total, weight, bias))  # seen beside the gathered input
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save(x=x if need_w else None, weight=weight if need_x else None)  # the local tokens, not the gathered
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, weight = ctx.saved_tensors
        total = _gathered(ctx, x, ctx.size, "all_gather_backward") if x is not None else None
        ctx.saved_tensors = (total, weight)
        grads = linalg.Linear.backward(ctx, grad)
        ctx.saved_tensors = (x, weight)
        total = None
        grad_total = grads[0]
        if grad_total is None:
            return grads
        ctx.workspace(grad_total, "grad_input_all_tokens")
        return (_scattered(ctx, np.ascontiguousarray(grad_total, like=grad_total), ctx.size, "reduce_scatter_backward"),) + grads[1:]


# --- the layers --------------------------------------------------------------------------------------------------
class TensorParallel:
    """How one rank runs a block's Linears: `size` t (1: one device, the plain ops) and `sequence` (sequence
    parallelism). Models call `column`, `row` and the region crossings; at t = 1 every one is the plain op."""

    def __init__(self, size: int = 1, sequence: bool = False):
        self.size, self.sequence = int(size), bool(sequence) and size > 1

    @property
    def on(self) -> bool:
        return self.size > 1

    def enter(self, x: Any) -> Any:
        """Into a column-parallel Linear (f), or nothing under sequence parallelism (the Linear gathers)."""
        if not self.on or self.sequence:
            return x
        return apply(CopyToTensorParallel, x, size=self.size)

    def column(self, layer: Any, x: Any) -> Tensor:
        """A column-parallel Linear (its weight out_features/t rows) on x (after `enter`)."""
        if not self.sequence:
            return layer(x)
        return layer(x, product=self._sequence_column)

    def row(self, layer: Any, x: Any) -> Tensor:
        """A row-parallel Linear (its weight in_features/t columns): the partial product summed over the group (g,
        or under sequence parallelism the reduce-scatter to this rank's tokens), then the bias (whole) added."""
        if not self.on:
            return layer(x)
        return layer(x, product=self._row)

    # the products run inside the layer's forward (`product=`), never beside it: ZeRO wraps that forward
    def _sequence_column(self, x: Any, weight: Any, bias: Any) -> Tensor:
        if bias is None:
            return apply(SequenceParallelLinear, x, weight, size=self.size)
        return apply(SequenceParallelLinear, x, weight, bias, size=self.size)

    def _row(self, x: Any, weight: Any, bias: Any) -> Tensor:
        out = apply(linalg.Linear, x, weight)
        out = apply(ReduceScatterToSequence if self.sequence else ReduceFromTensorParallel, out, size=self.size)
        return out if bias is None else out + bias

    def scatter(self, x: Any) -> Any:
        """Into the sequence-parallel region (the embeddings' output), or nothing without it."""
        return apply(ScatterToSequence, x, size=self.size) if self.sequence else x

    def gather(self, x: Any) -> Any:
        """Out of the sequence-parallel region (before the head), or nothing without it."""
        return apply(GatherFromSequence, x, size=self.size) if self.sequence else x


# --- which parameter is split how (Megatron-LM's layout, by transformers' and nanoGPT's names) ---------------------
COLUMN_PARALLEL = ("c_attn", "c_fc", "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # out_features/t
ROW_PARALLEL = ("attn.c_proj", "mlp.c_proj", "o_proj", "down_proj")  # in_features/t, bias whole
FUSED_CHUNKS = {"c_attn": 3}  # nanoGPT's c_attn is [q; k; v]: each rank holds its heads' rows of each


def _layer_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def shard(name: str, full: np.ndarray, size: int, rank: int) -> np.ndarray:
    """This rank's part of the one-device parameter `name` (a view; the whole array where every rank holds it)."""
    layer = _layer_of(name)
    leaf = layer.rsplit(".", 1)[-1]
    if leaf in COLUMN_PARALLEL:
        chunks = FUSED_CHUNKS.get(leaf, 1)
        parts = np.split(full, chunks, axis=0)
        return np.concatenate([np.split(part, size, axis=0)[rank] for part in parts], axis=0) if chunks > 1 \
            else np.split(full, size, axis=0)[rank]
    if any(layer.endswith(r) for r in ROW_PARALLEL) and name.endswith("weight"):
        return np.split(full, size, axis=1)[rank]
    return full


def sequence_partial(name: str) -> bool:
    """Whether, under sequence parallelism, each rank's gradient of `name` covers only its own tokens (the norms'
    parameters and the row-parallel biases: they act on s/t tokens), so the group sums it (Megatron-LM's
    all-reduce of the sequence-parallel parameters' gradients)."""
    layer = _layer_of(name)
    leaf = layer.rsplit(".", 1)[-1]
    norm = "ln" in leaf or "norm" in leaf
    return norm or (name.endswith("bias") and any(layer.endswith(r) for r in ROW_PARALLEL))


def reduce_sequence_parallel_grads(model: Any, size: int) -> None:
    """After backward, under sequence parallelism: sum over the group, in place (no new buffer), the gradients that
    cover the rank's tokens only (`sequence_partial`)."""
    chosen = group(size)
    for name, p in model.named_parameters():
        if p.grad is not None and sequence_partial(name):
            chosen.all_reduce(p.grad)


def check_divides(size: int, **counts: int) -> str | None:
    """The line naming the first count (heads, kv_heads, the MLP's hidden size) t does not divide, else None."""
    for name, count in counts.items():
        if count % size:
            return f"tensor_parallel {size} must divide {name} ({count})"
    return None


def is_shape_only(array: Any) -> bool:
    return type(array) is MetaArray


__all__ = ["COLUMN_PARALLEL", "ROW_PARALLEL", "reduce_sequence_parallel_grads", "sequence_partial", "shard",
           "CopyToTensorParallel", "GatherFromSequence", "Group", "ReduceFromTensorParallel",
           "ReduceScatterToSequence", "ScatterToSequence", "SequenceParallelLinear", "TensorParallel",
           "check_divides", "group", "use_group"]

"""Collectives as the ledger sees them: every buffer a collective makes is a `communication` buffer.

Two levels, one backend:
- buffer level (`all_reduce_`, `all_gather_into`, `reduce_scatter_into`, `communication_buffer`): what ZeRO's
  bucketed gradient reduction and parameter gathering call on raw arrays, outside the graph;
- ops (`AllReduce`, `AllGather`, `ReduceScatter`, and Megatron-LM's conjugates `CopyToParallel` (f: identity
  forward, all-reduce backward) and `ReduceFromParallel` (g: all-reduce forward, identity backward)), applied to
  Tensors through `apply`, whose outputs the ledger files as `communication` (`Function.output_category`).
Gathers and scatters work along axis 0 of an array (a flat parameter shard, or a sequence-parallel activation's
token axis); a reduction sums over the ranks.

The backend does the moving (`use_backend`): `Simulated` (one process standing for rank `rank` of `world_size`:
on shape-only arrays it moves nothing, which is all a prediction needs; on real arrays it behaves as if every rank
held this rank's values, so a single-process ledger run has the same buffers as a real rank), or `TorchDistributed`
(`torch.distributed`, gloo over loopback, the numpy arrays shared zero-copy with torch: memstudy/parallel/launch.py
starts the processes). The ledger tallies each collective's calls and the bytes of this rank's inputs
(`StepAccount.collective_bytes`), so a planner can sum a step's communication.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from ..autograd import STATE
from ..autograd.engine import Function, Node
from ..autograd.meta import MetaArray

COMMUNICATION = "communication"  # the ledger's category of every buffer a collective makes


class Backend:
    """How ranks exchange arrays. Every method works in place on numpy arrays (1-d views along axis 0)."""

    world_size: int = 1
    rank: int = 0

    def all_reduce(self, array: np.ndarray) -> None:  # pragma: no cover - interface
        """Sum over the ranks, in place."""
        raise NotImplementedError

    def all_gather(self, shard: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - interface
        """out (world_size·len(shard) along axis 0) = every rank's shard, in rank order."""
        raise NotImplementedError

    def reduce_scatter(self, full: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - interface
        """out = this rank's part (axis 0) of the sum over the ranks of `full`."""
        raise NotImplementedError


class Simulated(Backend):
    """One process standing for `rank` of `world_size` ranks that all hold what this one holds."""

    def __init__(self, world_size: int = 1, rank: int = 0):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of {world_size} ranks")
        self.world_size, self.rank = world_size, rank

    def all_reduce(self, array: np.ndarray) -> None:
        if type(array) is np.ndarray and self.world_size > 1:
            array *= self.world_size

    def all_gather(self, shard: np.ndarray, out: np.ndarray) -> None:
        if type(out) is np.ndarray:
            n = shard.shape[0]
            for r in range(self.world_size):
                out[r * n:(r + 1) * n] = shard

    def reduce_scatter(self, full: np.ndarray, out: np.ndarray) -> None:
        if type(out) is np.ndarray:
            n = out.shape[0]
            np.multiply(full[self.rank * n:(self.rank + 1) * n], self.world_size, out=out)


_BACKEND: list[Backend] = [Simulated()]


def backend() -> Backend:
    """The backend collectives run through now (default: one simulated rank)."""
    return _BACKEND[-1]


@contextlib.contextmanager
def use_backend(chosen: Backend) -> Iterator[Backend]:
    """Collectives inside run through `chosen`."""
    _BACKEND.append(chosen)
    try:
        yield chosen
    finally:
        _BACKEND.pop()


# --- buffer level ----------------------------------------------------------------------------------------------
def report(array: np.ndarray, op: str) -> np.ndarray:
    """Tell the instrument (the ledger) that `array` is a collective's buffer, made by `op`. Returns it."""
    instrument = STATE.instrument
    if instrument is not None:
        instrument.on_new(array, op, STATE.layer, category=COMMUNICATION)
    return array


def communication_buffer(shape: tuple[int, ...], dtype: Any, like: np.ndarray, op: str) -> np.ndarray:
    """A new (uninitialised) buffer for a collective, shape-only when `like` is, reported as `communication`."""
    return report(np.empty(shape, dtype=dtype, like=like), op)


def _tell(name: str, nbytes: int) -> None:
    """The ledger tallies each collective's calls and bytes (StepAccount.collective_bytes)."""
    instrument = STATE.instrument
    if instrument is not None:
        instrument.on_collective(name, nbytes)


def all_reduce_(array: np.ndarray) -> np.ndarray:
    """Sum over the ranks in place. Returns `array`."""
    _tell("all_reduce", array.nbytes)
    backend().all_reduce(array)
    return array


def all_gather_into(shard: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` = every rank's `shard` along axis 0. Returns `out`."""
    _tell("all_gather", shard.nbytes)
    backend().all_gather(shard, out)
    return out


def reduce_scatter_into(full: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` = this rank's part of the sum of `full` over the ranks. Returns `out`."""
    _tell("reduce_scatter", full.nbytes)
    backend().reduce_scatter(full, out)
    return out


def _contiguous(array: np.ndarray) -> bool:
    return array.flags.c_contiguous if type(array) is np.ndarray or type(array) is MetaArray else False


# --- ops -------------------------------------------------------------------------------------------------------
class _Collective(Function):
    output_category = COMMUNICATION


class AllReduce(_Collective):
    """Sum over the ranks into a new buffer; backward: the gradient is every rank's (an all-reduce of it)."""

    name = "all_reduce"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.role = "all_reduce"
        out = np.empty_like(x)
        np.copyto(out, x)
        return all_reduce_(out)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        out = report(np.empty_like(grad), "all_reduce_backward")
        np.copyto(out, grad)
        return (all_reduce_(out),)


class AllGather(_Collective):
    """(n, ...) on each rank → (world·n, ...), every rank's along axis 0; backward: reduce-scatter."""

    name = "all_gather"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.role = "all_gather"
        world = backend().world_size
        out = np.empty((world * x.shape[0],) + x.shape[1:], dtype=x.dtype, like=x)
        return all_gather_into(x, out)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        world = backend().world_size
        if not _contiguous(grad):  # the collective reads one contiguous buffer
            grad = report(np.ascontiguousarray(grad), "reduce_scatter_backward.copy")
        out = report(np.empty((grad.shape[0] // world,) + grad.shape[1:], dtype=grad.dtype, like=grad),
                     "reduce_scatter_backward")
        return (reduce_scatter_into(grad, out),)


class ReduceScatter(_Collective):
    """(world·n, ...) on each rank → (n, ...), this rank's part of the sum; backward: all-gather."""

    name = "reduce_scatter"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.role = "reduce_scatter"
        world = backend().world_size
        if x.shape[0] % world:
            raise ValueError(f"reduce_scatter: axis 0 ({x.shape[0]}) is not divisible by {world} ranks")
        if not _contiguous(x):
            x = report(np.ascontiguousarray(x), "reduce_scatter.copy")
        out = np.empty((x.shape[0] // world,) + x.shape[1:], dtype=x.dtype, like=x)
        return reduce_scatter_into(x, out)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        world = backend().world_size
        out = report(np.empty((world * grad.shape[0],) + grad.shape[1:], dtype=grad.dtype, like=grad),
                     "all_gather_backward")
        return (all_gather_into(np.ascontiguousarray(grad), out),)


class CopyToParallel(Function):
    """Megatron-LM's f: identity forward (the same buffer), all-reduce of the gradient backward."""

    name = "copy_to_parallel"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        return x.view()

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        out = report(np.empty_like(grad), "copy_to_parallel_backward")
        np.copyto(out, grad)
        return (all_reduce_(out),)


class ReduceFromParallel(AllReduce):
    """Megatron-LM's g: all-reduce forward (a new buffer), identity backward."""

    name = "reduce_from_parallel"

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (grad,)


def all_reduce(x: Any) -> Any:
    """The op on a Tensor (see the classes)."""
    from ..autograd import apply
    return apply(AllReduce, x)


def all_gather(x: Any) -> Any:
    from ..autograd import apply
    return apply(AllGather, x)


def reduce_scatter(x: Any) -> Any:
    from ..autograd import apply
    return apply(ReduceScatter, x)


def copy_to_parallel(x: Any) -> Any:
    from ..autograd import apply
    return apply(CopyToParallel, x)


def reduce_from_parallel(x: Any) -> Any:
    from ..autograd import apply
    return apply(ReduceFromParallel, x)

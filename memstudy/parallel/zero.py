"""ZeRO (Rajbhandari et al. 2020) in one rank's graph: what rank `r` of N data-parallel ranks holds, step by step.

Each trainable parameter of n elements is split into N equal parts of s = ⌈n/N⌉ elements (the last padded, as
DeepSpeed pads its flat partitions); rank r owns elements [r·s, (r+1)·s). Per stage:
- 0 (plain data parallelism, N > 1): every rank holds everything; each gradient is all-reduced as backward makes it;
- 1: the optimiser (its fp32 master weights and moments too) updates only the rank's part of each parameter (a view
  of it, so its state is s elements); gradients are full (all-reduced); after the step each rank's updated part is
  all-gathered back into the full parameters;
- 2: gradients sharded too: as backward makes a parameter's gradient it is reduce-scattered (a contiguous padded
  copy, N·s elements, the bucket) and the rank keeps its s elements only; parameters are all-gathered after the step;
- 3: parameters sharded too: the model holds each parameter's s-element part; a module that owns parameters
  gathers them (N·s elements, a communication buffer) just before its forward and frees them after it (the ops that
  saved a gathered parameter for backward let it go), and gathers them again just before its backward; its
  gradient is reduce-scattered as in stage 2. Parameters with fewer than `param_persistence_threshold` elements stay
  whole on every rank (DeepSpeed's persistent parameters), their gradients sharded as in stage 2.
With 16-bit parameters and fp32 master weights with Adam, the model states per rank are then ZeRO's Table 1:
2Ψ + 2Ψ + 12Ψ/N, 2Ψ + 14Ψ/N and 16Ψ/N bytes (Ψ parameters, up to the padding).

Every collective runs in the graph a module runs (its forward, its backward), so a stack of alike blocks stays
alike block by block, and the predictor's repeated blocks (nn/repeat.py) stand for the others: there is no bucket
state carried from one block to the next. A bucket here is one parameter's gradient (DeepSpeed fills buckets of up
to `reduce_bucket_size` elements across parameters; docs/parallel.md says what that changes); parameters with
more than `allgather_bucket_size` elements are still gathered whole.

Frozen parameters (LoRA's base weights) are left whole on every rank. The collectives run through the backend of
`collectives.py`: a simulated rank (prediction, and single-process ledger runs), or torch.distributed.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Any

import numpy as np

from ..autograd import STATE, Tensor, apply
from ..autograd.engine import Function, Node, repeat_scope
from ..nn import repeat
from ..autograd.graph import base_buffer
from . import collectives as C
from .rank import data_parallel_rank


def shard_elements(numel: int, ranks: int) -> int:
    """Elements of each rank's part: ⌈numel / ranks⌉."""
    return -(-numel // ranks)


def applies(config: dict[str, Any]) -> bool:
    """Whether a configuration's step is a data-parallel rank's (N > 1, training)."""
    return (config.get("data_parallel") or 1) > 1 and config.get("mode") == "train"


def _padded_copy(grad: np.ndarray, total: int, op: str) -> np.ndarray:
    """The gradient flattened into a new contiguous buffer of `total` elements (the padding zeroed): the bucket a
    reduce-scatter reads, a communication buffer."""
    flat = C.communication_buffer((total,), grad.dtype, grad, op)
    n = grad.size
    np.copyto(flat[:n].reshape(grad.shape), grad)
    if total > n:
        flat[n:] = 0
    return flat


def _reduce_scatter_grad(grad: np.ndarray, shard_size: int, keep: int) -> np.ndarray:
    """This rank's `keep` elements (≤ shard_size) of the sum over the ranks of `grad`: a new buffer."""
    world = C.backend().world_size
    bucket = _padded_copy(grad, world * shard_size, "zero_reduce_scatter")
    out = np.empty(shard_size, dtype=grad.dtype, like=grad)
    C.reduce_scatter_into(bucket, out)
    del bucket
    out /= world  # the mean over the ranks
    return out if keep == shard_size else out[:keep].copy()


class AllReducedGrad(Function):
    """Stages 0 and 1: the full parameter itself forward; backward, the gradient copied and all-reduced (the copy
    becomes the parameter's .grad)."""

    name = "zero_all_reduce"

    @staticmethod
    def forward(ctx: Node, param: np.ndarray) -> np.ndarray:
        return param

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        out = np.empty(grad.shape, dtype=grad.dtype, like=grad)
        np.copyto(out, grad)
        C.all_reduce_(out)
        out /= C.backend().world_size  # the mean over the ranks, as DDP and DeepSpeed average gradients
        return (out,)


class ShardedGrad(Function):
    """Stage 2 (and stage 3's persistent parameters): forward, the full parameter (`full`, which every rank holds;
    the input is the rank's part of it, a view); backward, the gradient reduce-scattered: the rank's part only."""

    name = "zero_reduce_scatter"

    @staticmethod
    def forward(ctx: Node, part: np.ndarray, *, full: np.ndarray, shard_size: int) -> np.ndarray:
        ctx.shard_size = shard_size
        return full

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        keep = ctx.parents[0].data.shape[0]
        return (_reduce_scatter_grad(grad, ctx.shard_size, keep),)


class GatherParameter(Function):
    """Stage 3: the rank's part (s elements) → the whole parameter, all-gathered into a communication buffer of
    N·s elements (a view of its first n, in the parameter's shape); backward, the gradient reduce-scattered."""

    name = "zero_all_gather"
    output_category = C.COMMUNICATION

    @staticmethod
    def forward(ctx: Node, part: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
        ctx.role = "parameter"
        return gather(part, shape)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        shard_size = ctx.parents[0].data.shape[0]
        return (_reduce_scatter_grad(grad, shard_size, shard_size),)


def gather(part: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The whole parameter from every rank's part: a view (in `shape`) of a new N·s-element buffer."""
    world = C.backend().world_size
    buffer = np.empty(world * part.shape[0], dtype=part.dtype, like=part)
    C.all_gather_into(part, buffer)
    n = int(np.prod(shape, dtype=np.int64))
    return buffer[:n].reshape(shape)


class Regather(Function):
    """Stage 3, at a module's output: forward, the output itself; backward (before the module's own backward), its
    parameters gathered again, each into the places of the module's ops that had saved the gathered parameter (they
    let go of it after the forward: `_release`)."""

    name = "zero_regather"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, places: list, shards: list) -> np.ndarray:
        ctx.places, ctx.shards = places, shards  # (node, index, shard number) and (shard tensor, shape)
        return x

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        instrument = STATE.instrument
        gathered = []
        for shard, shape in ctx.shards:
            view = gather(shard.data, shape)
            if instrument is not None:
                instrument.on_new(view, "zero_regather", ctx.layer, category=C.COMMUNICATION)
            gathered.append(view)
        for node, index, which in ctx.places:
            saved = list(node.saved)
            saved[index] = gathered[which]
            node.saved = node.saved_tensors = tuple(saved)
        ctx.places = ctx.shards = ()
        return (grad,)


class Zero:
    """ZeRO stage `zero` over `data_parallel` ranks, applied to a built model (see the module docstring)."""

    def __init__(self, config: dict[str, Any], model: Any):
        self.stage = config.get("zero") or 0
        self.world = config["data_parallel"]
        rank = data_parallel_rank(config)  # of the data-parallel group (config["rank"] counts every rank)
        current = C.backend()
        self.backend = current if current.world_size == self.world else C.Simulated(self.world, rank)
        self.rank = self.backend.rank
        self.persistence = config.get("param_persistence_threshold", 100_000)
        self.model = model
        self.source: dict[int, Tensor] = {}  # id(optimised tensor) -> the model's parameter it stands for
        self.optimizer_params: list[Tensor] = []
        self._views: list[tuple[Tensor, Tensor, int]] = []  # stage 1-2: (full parameter, the rank's part, s)
        self._copies: dict[int, int] | None = None
        self._setup()

    # --- building the rank's model -------------------------------------------------------------------------
    def _owners(self) -> list[tuple[Any, list[tuple[str, Tensor]]]]:
        """Each module that holds trainable parameters itself, with (attribute, parameter) of each."""
        out = []
        for _, module in self.model.named_modules():
            own = [(attr, value) for attr, value in vars(module).items()
                   if isinstance(value, Tensor) and value.is_leaf and value.requires_grad]
            if own:
                out.append((module, own))
        return out

    def _part(self, param: Tensor) -> tuple[Tensor, int]:
        """A view of the rank's part of a parameter (fewer than s elements for a last rank, or none)."""
        n = param.data.size
        s = shard_elements(n, self.world)
        lo, hi = min(self.rank * s, n), min((self.rank + 1) * s, n)
        data = param.data
        if not data.flags.c_contiguous:
            raise ValueError("ZeRO shards C-contiguous parameters")
        view = Tensor(data.reshape(-1)[lo:hi], requires_grad=True, name=param.name)
        return view, s

    def _setup(self) -> None:
        shards: dict[int, Tensor] = {}  # id(parameter) -> its stage-3 shard (a tied weight is sharded once)
        for module, own in self._owners():
            plan = []  # (attribute, kind, tensor, extra)
            for attr, param in own:
                if self.stage == 0:
                    plan.append((attr, "all_reduce", param, None))
                    if id(param) not in self.source:  # a tied weight is optimised once
                        self._optimise(param, param)
                elif self.stage in (1,) or (self.stage == 3 and param.data.size < self.persistence) \
                        or self.stage == 2:
                    if id(param) not in shards:
                        part, s = self._part(param)
                        shards[id(param)] = part
                        self._views.append((param, part, s))
                        if part.data.size:
                            self._optimise(part, param)
                    part = shards[id(param)]
                    kind = "all_reduce" if self.stage == 1 else "reduce_scatter"
                    plan.append((attr, kind, param, part))
                else:  # stage 3: the module holds its part, padded to s elements
                    if id(param) not in shards:
                        n = param.data.size
                        s = shard_elements(n, self.world)
                        data = np.zeros(s, dtype=param.data.dtype, like=param.data)
                        lo, hi = min(self.rank * s, n), min((self.rank + 1) * s, n)
                        if hi > lo:
                            data[:hi - lo] = param.data.reshape(-1)[lo:hi]
                        shard = Tensor(data, requires_grad=True, name=param.name)
                        shards[id(param)] = shard
                        self._optimise(shard, param)
                    shard = shards[id(param)]
                    setattr(module, attr, shard)
                    plan.append((attr, "gather", shard, param.data.shape))
            self._wrap(module, plan)

    def _optimise(self, tensor: Tensor, param: Tensor) -> None:
        self.optimizer_params.append(tensor)
        self.source[id(tensor)] = param

    def _wrap(self, module: Any, plan: list) -> None:
        """The module's forward, with its parameters handed in through the stage's ops."""
        forward = type(module).forward  # the class's: a bound method here would make a reference cycle
        owner = weakref.ref(module)

        def zero_forward(*args: Any, **kwargs: Any) -> Any:
            module = owner()
            saved = {}
            gathered = []  # (shard tensor, shape, gathered tensor)
            for attr, kind, tensor, extra in plan:
                saved[attr] = getattr(module, attr)
                if kind == "all_reduce":
                    value = apply(AllReducedGrad, tensor)
                elif kind == "reduce_scatter":
                    value = apply(ShardedGrad, extra, full=tensor.data,
                                  shard_size=shard_elements(tensor.data.size, self.world))
                else:
                    value = apply(GatherParameter, tensor, shape=extra)
                    gathered.append((tensor, extra, value))
                setattr(module, attr, value)
            try:
                out = forward(module, *args, **kwargs)
            finally:
                for attr, value in saved.items():
                    setattr(module, attr, value)
            if gathered and isinstance(out, Tensor) and out._node is not None:
                out = self._release(out, gathered)
            return out

        module.forward = zero_forward

    def _release(self, out: Tensor, gathered: list) -> Tensor:
        """Stage 3 after a module's forward: the ops it ran let go of the gathered parameters (they are gathered again
        before its backward, `Regather`), so each gathered buffer dies now."""
        first = min(t._node.sequence for _, _, t in gathered)
        bases = {id(base_buffer(t.data)): k for k, (_, _, t) in enumerate(gathered)}
        places = []
        stack, seen = [out._node], set()
        while stack:
            node = stack.pop()
            if id(node) in seen or node.sequence <= first:
                continue
            seen.add(id(node))
            for index, array in enumerate(node.saved):
                if array is not None and id(base_buffer(array)) in bases:
                    which = bases[id(base_buffer(array))]
                    if array.shape != gathered[which][1]:
                        raise ValueError(f"zero 3: {node.fn.name} saved a reshaped view of a gathered parameter")
                    places.append((node, index, which))
            stack += [p for p in node.parents if type(p) is Node]
        for node, index, _ in places:
            saved = list(node.saved)
            saved[index] = None
            node.saved = node.saved_tensors = tuple(saved)
        shards = [(shard, shape) for shard, shape, _ in gathered]
        gathered.clear()
        return apply(Regather, out, places=places, shards=shards)

    # --- the step ----------------------------------------------------------------------------------------------
    def after_backward(self) -> None:
        """Stage 1: the rank's part of each (all-reduced) gradient, a view, for the optimiser."""
        if self.stage == 1:
            for param, part, _ in self._views:
                if param.grad is not None and part.data.size:
                    n = part.data.size
                    s = shard_elements(param.data.size, self.world)
                    lo = min(self.rank * s, param.data.size)
                    part.grad = param.grad.reshape(-1)[lo:lo + n]

    def after_step(self) -> None:
        """Stages 1 and 2: every rank's updated part gathered back into the full parameters (a bucket per
        parameter: the rank's part copied into a buffer of s elements, gathered into a buffer of N·s, copied in)."""
        if self.stage not in (1, 2):
            return
        if self._copies is None:  # a repeated block's parameter stands for that many (nn/repeat.py): so does its gather
            self._copies = repeat.copies(self.model)
        for param, part, s in self._views:
            n = self._copies.get(id(param), 1)
            with repeat_scope(n) if n > 1 else contextlib.nullcontext():
                self._gather_back(param, part, s)

    def _gather_back(self, param: Tensor, part: Tensor, s: int) -> None:
        """One parameter's parts from every rank: the rank's part into a bucket of s elements, gathered into N·s."""
        bucket = C.communication_buffer((s,), param.data.dtype, param.data, "zero_all_gather_params")
        n = part.data.size
        if n:
            np.copyto(bucket[:n], part.data)
        if n < s:
            bucket[n:] = 0
        whole = C.communication_buffer((self.world * s,), param.data.dtype, param.data,
                                       "zero_all_gather_params")
        C.all_gather_into(bucket, whole)
        del bucket
        np.copyto(param.data.reshape(-1), whole[:param.data.size])
        del whole

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None
        for p in self.optimizer_params:
            p.grad = None

    def copies(self, model_copies: dict[int, int]) -> dict[int, int]:
        """id(optimised tensor) -> how many alike it stands for (a repeated block's, nn/repeat.py)."""
        return {ident: model_copies[id(param)] for ident, param in self.source.items() if id(param) in model_copies}

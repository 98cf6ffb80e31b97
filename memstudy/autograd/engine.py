"""The engine's core: `Node` (an op's context), `backward` (the one way out); `apply` (the one door in) is in
tensor.py, beside the `Tensor` it wraps results in.

Memory rules this file enforces:
- a node holds edges to its inputs (their nodes, or leaf tensors), never the output tensor nor the
  inputs' arrays, so an intermediate that no op saved dies as soon as Python drops it;
- everything backward needs is stored by `Node.save`, the one door the ledger and `saved_buffers` read;
- after a node's backward its saved arrays are released (unless `retain_graph=True`);
- an instrument (the memory ledger), when attached, is called from here only, never from an op.

Saved-tensor policies (`saved_tensors_policy`, an engine setting like `no_grad`) act at this one door, never
inside an op:
- `minimal` (default): a node holds what its op saved, nothing else;
- `all`: `apply` also keeps each recorded op's output, as the textbook's forward pass "computes and stores"
  every intermediate variable (z, h, o, L: the pre-activations too);
- `half`: `apply` replaces each saved floating-point array by a float16 copy (one copy per saved buffer
  within the policy's scope, so ReLU's output that the next Linear also saves is one float16 buffer), and
  the engine casts it back to the compute dtype for backward (`Node.unpack`). Caller-owned arrays (leaf tensors
  such as parameters and the network input, and plain arrays) are never cast: saving them costs nothing.
Backward reads what its op saved through `Node.saved_tensors` only. A large buffer an op makes and drops within
its own forward or backward (a convolution's column matrix) is reported through `Node.workspace`, so the
instrument sees it too, and a result made while such a buffer lives through `Node.result`, so the instrument
sees the two together.

Shape-only arrays (`meta.MetaArray`) run through the same code: wherever the engine checks for an ndarray it
accepts a MetaArray too (`type(x) is np.ndarray or type(x) is MetaArray`: the ndarray test comes first, so real
arrays pay nothing), which is how the predictor runs the engine itself under the ledger.
"""
from __future__ import annotations

import itertools

from heapq import heappop, heappush
from typing import Any, Iterator

import numpy as np

from .meta import MetaArray

POLICIES = ("minimal", "all", "half")
HALF = np.dtype(np.float16)


class _State:
    """Process-wide engine state; plain attributes so the hot path reads them cheaply."""

    grad_enabled: bool = True
    instrument: Any = None  # the memory ledger while one is attached, else None
    layer: int | None = None  # layer index set by models through `layer_scope`
    phase: str = "forward"  # forward | backward | recompute | optimizer
    policy: str = "minimal"  # the saved-tensor policy (see the module docstring)
    half_cache: dict | None = None  # per policy scope: float16 copies and caller-owned buffers (weak refs)
    autocast: np.dtype | None = None  # inside `autocast.autocast(dtype)`: the 16-bit type of its lower-precision ops
    autocast_cache: dict | None = None  # the outermost autocast scope's weight casts (see autocast.py)
    small_ufunc_buffer: bool = False  # inside ops.small_ufunc_buffer: numpy's bufsize is already small
    # the repeated-block scope events belong to (`repeat_scope`; None whenever every block runs, as in measuring)
    # and its backward counterpart, which a node made now carries into backward (`Node.repeat`)
    repeat: tuple | None = None
    repeat_backward: tuple | None = None


STATE = _State()


def _base(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, (np.ndarray, MetaArray)):
        array = array.base
    return array


def _data_address(array: np.ndarray) -> int:
    """Where the array's first element lives (a MetaArray's fake address: views keep their offsets)."""
    return array.address if type(array) is MetaArray else array.__array_interface__["data"][0]


_SEQUENCE = itertools.count()


class Node:
    """One recorded op: its function, edges to its inputs, and what it saved for backward.

    Plain numbers (axes, shapes, scalars) go on the node as attributes; arrays go through `save`.
    """

    __slots__ = ("fn", "parents", "needs_input_grad", "layer", "sequence", "saved", "saved_roles", "saved_tensors",
                 "released", "stored_dtypes", "caller_owned", "grad_dtypes", "repeat", "__dict__")

    def __init__(self, fn: type, parents: tuple | None, needs_input_grad: tuple[bool, ...], layer: int | None):
        self.fn = fn
        self.parents = parents  # None when no graph is recorded (no_grad or no input needs grad)
        self.needs_input_grad = needs_input_grad
        self.layer = layer
        self.sequence = next(_SEQUENCE)  # creation order: every consumer of a node comes after it
        self.repeat = STATE.repeat_backward  # the repeated-block scope its backward's events belong to
        self.saved: tuple = ()  # what the node holds for backward: the graph's memory (the ledger reads this)
        self.saved_roles: tuple[str, ...] = ()
        # what the op's backward reads: the op's own saves, in the compute dtype. The same arrays as `saved` except
        # under `all` (whose extra outputs no backward reads) and `half` (empty until `unpack` casts back)
        self.saved_tensors: tuple = ()
        self.released = False
        self.stored_dtypes: tuple | None = None  # under `half`: the compute dtype of each float16-stored array
        # id() of the base buffer of each input that is a leaf tensor needing no grad that no op made (a frozen
        # weight, the batch): caller-owned, never an activation. Ints only, set by `apply` when it records: an id
        # is matched only against what this node saved, which keeps that buffer (so the id is still its own)
        self.caller_owned: tuple[int, ...] = ()
        # set by `apply` when an input that needs a gradient has another dtype than the output (autocast's residual
        # add: float32 + bfloat16): each input's dtype, to which backward casts its gradient (as PyTorch's engine
        # casts a gradient to its input's dtype)
        self.grad_dtypes: tuple | None = None

    def save(self, **arrays: np.ndarray | None) -> None:
        """The one door for saved state: keyword = role, value = array (None if not needed)."""
        if self.parents is None:  # nothing is saved when no graph is recorded
            return
        self.saved_roles = tuple(arrays)
        self.saved = self.saved_tensors = tuple(arrays.values())

    def workspace(self, array: np.ndarray, role: str = "workspace") -> np.ndarray:
        """Report a transient buffer the op makes and drops inside its forward or backward (im2col's columns).

        Such a buffer is neither an output, a saved array nor a gradient, so the instrument would not see it;
        reported here, the ledger counts it (as `<op>.<role>`, a temporary) from now until Python frees it.
        Returns `array` unchanged.
        """
        instrument = STATE.instrument
        if instrument is not None:
            instrument.on_new(array, f"{self.fn.name}.{role}", self.layer)
        return array

    def choice(self, label: str) -> None:
        """Report which of its algorithms the op runs (a convolution's `batched:8`): the ledger lists each op's choice
        in order, so a row can say what ran and a prediction says what would."""
        instrument = STATE.instrument
        on_choice = getattr(instrument, "on_choice", None)
        if on_choice is not None:
            on_choice(self.fn.name, label, self.layer)

    def result(self, array: np.ndarray) -> np.ndarray:
        """Report a buffer the op returns or saves at the moment it is made, while a workspace is alive beside it.

        The engine reports an op's output and gradients only when the op returns, after its workspaces have died;
        a result made while a workspace lived (the convolution's output, made from its columns) is reported here
        so the ledger sees the two live together, as they were. The engine's later report of the same buffer
        finds it already counted (the ledger counts each base buffer once). Returns `array` unchanged.
        """
        instrument = STATE.instrument
        if instrument is not None:
            backward = STATE.phase == "backward"
            instrument.on_new(array, self.fn.name + "_backward" if backward else self.fn.name, self.layer)
        return array

    def unpack(self) -> None:
        """Under `half`, before this node's backward: `saved_tensors` becomes the float16-stored arrays cast back to
        the compute dtype. Each cast-back copy is a new buffer, reported to the instrument; the engine drops them
        once it has recorded the backward's gradients (so the ledger sees them live alongside those)."""
        out = []
        instrument = STATE.instrument
        for array, dtype in zip(self.saved, self.stored_dtypes):
            if dtype is not None and array is not None:
                array = array.astype(dtype)
                if instrument is not None:
                    instrument.on_new(array, "unpack", self.layer)
            out.append(array)
        self.saved_tensors = tuple(out)

    def __repr__(self) -> str:
        return f"<Node {self.fn.name} layer={self.layer}>"


class Function:
    """Base of every primitive: `forward(ctx, *arrays, **consts)` and `backward(ctx, grad)` on raw ndarrays.

    `backward` returns one gradient (or None) per positional input, and never writes into `grad`.
    `output_category`: the ledger category the output's buffer has whatever its life (the KV cache's ops say
    "kv_cache", and set `ctx.role`); None: the ledger decides from the buffer's life.
    """

    name = "function"
    output_category: str | None = None

    @staticmethod
    def forward(ctx: Node, *args: Any, **kwargs: Any) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:  # pragma: no cover - interface
        raise NotImplementedError


def _as_array(value: Any) -> np.ndarray:
    """numpy arithmetic on 0-d arrays returns numpy scalars; the instrument and tensors get ndarrays."""
    return value if type(value) is np.ndarray or type(value) is MetaArray else np.asarray(value)


def topological_order(root: Node) -> list[Node]:
    """Nodes reachable from `root`, root first, each after every node that consumes it.

    Iterative depth-first post-order (no recursion limit), parents visited in input order, so the
    order is deterministic for a given graph.
    """
    order: list[Node] = []
    visited: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in reversed(node.parents):
            if type(parent) is Node and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def _accumulate_leaf(leaf: Any, grad: np.ndarray) -> None:
    """Add `grad` into a leaf's `.grad`; a leaf's gradient always owns a writeable buffer of its dtype."""
    if leaf.grad is None:
        if grad.base is not None or not grad.flags.writeable or grad.dtype != leaf.data.dtype:
            grad = grad.astype(leaf.data.dtype)  # a copy (order K, as np.array): never a view of another buffer
        leaf.grad = grad
    else:
        leaf.grad = leaf.grad + grad  # not in place: the old buffer may be shared with the caller
    instrument = STATE.instrument
    if instrument is not None:
        instrument.on_leaf_grad(leaf, leaf.grad)


def backward(root: Any, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
    """Reverse-mode pass from `root`; gradients accumulate into the `.grad` of leaves that require grad."""
    if not root.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad")
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError("backward() without a gradient needs a single-element output")
        seed = np.ones_like(root.data)
    else:
        seed = np.asarray(grad, dtype=root.data.dtype, like=root.data)
        if seed.shape != root.data.shape:
            raise ValueError(f"gradient shape {seed.shape} does not match output shape {root.data.shape}")
    instrument = STATE.instrument
    previous_phase, previous_repeat = STATE.phase, (STATE.repeat, STATE.repeat_backward)
    STATE.phase = "backward"
    try:
        if instrument is not None:
            instrument.on_new(seed, "backward_seed", None)
        root_node = root._node
        if root_node is None:
            _accumulate_leaf(root, seed)
            return
        pending = {id(root_node): seed}  # gradients waiting for their node, popped once used
        del seed
        _run_backward(root_node, pending, retain_graph, instrument)
    finally:
        STATE.phase = previous_phase
        STATE.repeat, STATE.repeat_backward = previous_repeat


def _run_backward(root_node: Node, pending: dict[int, np.ndarray], retain_graph: bool, instrument: Any,
                  capture: dict[int, list] | None = None) -> None:
    """The reverse pass. `capture` (id(leaf) -> [leaf, grad]) collects the gradients of those leaves instead of
    accumulating them into `.grad` (the checkpoint's recomputed segment hands its input's gradient back this way).
    """
    # Nodes run newest first (by creation sequence, as PyTorch orders its backward): a node is created after
    # every node it consumes, so when it is the newest one holding a gradient, all its consumers have run and
    # that gradient is complete. Only nodes a gradient reaches are queued.
    queue = [(-root_node.sequence, root_node)]
    while queue:
        node = heappop(queue)[1]
        STATE.repeat = STATE.repeat_backward = node.repeat  # its events count as often as its forward's did
        grad = pending.pop(id(node))
        if node.released:
            raise RuntimeError(
                "backward through a graph whose saved arrays were released; use backward(retain_graph=True)"
            )
        if node.stored_dtypes is not None:  # `half`: the float16 copies cast back for this backward only
            node.unpack()
        input_grads = node.fn.backward(node, grad)
        for g in input_grads:
            if g is not None and type(g) is not np.ndarray and type(g) is not MetaArray:  # a numpy scalar
                input_grads = tuple(None if g is None else _as_array(g) for g in input_grads)
                break
        if instrument is not None:  # before `del grad`: the new gradients were made while it lived
            instrument.on_backward(node, input_grads)
        if node.grad_dtypes is not None:
            input_grads = _cast_grads(node, input_grads, instrument)
        if node.stored_dtypes is not None:
            node.saved_tensors = ()  # the cast-back copies die now, after the gradients made from them
        del grad  # the incoming gradient dies here unless an input grad aliases it
        if not retain_graph:  # release what the node saved (inline: this loop is the engine's hot path)
            node.saved = node.saved_tensors = ()
            node.released = True
        for parent, input_grad in zip(node.parents, input_grads):
            if parent is None or input_grad is None:
                continue
            if type(parent) is Node:
                key = id(parent)
                previous = pending.get(key)
                if previous is None:
                    pending[key] = input_grad
                    heappush(queue, (-parent.sequence, parent))
                else:
                    total = _as_array(previous + input_grad)  # a value that fed several ops: gradients add up
                    del previous
                    if instrument is not None:
                        instrument.on_new(total, "accumulate", parent.layer)
                    pending[key] = total
                    del total
            elif capture is not None and id(parent) in capture:
                entry = capture[id(parent)]
                if entry[1] is None:
                    entry[1] = input_grad
                else:
                    entry[1] = _as_array(entry[1] + input_grad)
                    if instrument is not None:
                        instrument.on_new(entry[1], "accumulate", node.layer)
            else:
                _accumulate_leaf(parent, input_grad)
        # drop this iteration's references now, or they would outlive their use by one node
        input_grads = input_grad = parent = None


def _cast_grads(node: Node, grads: tuple, instrument: Any) -> tuple:
    """Each input's gradient in that input's dtype (`Node.grad_dtypes`); a cast is a new buffer, reported."""
    out = []
    for g, dtype in zip(grads, node.grad_dtypes):
        if g is not None and dtype is not None and g.dtype != dtype:
            with np.errstate(over="ignore"):  # a float16 overflow is an inf, as it is on hardware (loss scaling)
                g = g.astype(dtype)
            if instrument is not None:
                instrument.on_new(g, node.fn.name + "_backward", node.layer)
        out.append(g)
    return tuple(out)


class no_grad:
    """Context manager (and decorator-free): inside it no graph is recorded and nothing is saved."""

    def __enter__(self) -> "no_grad":
        self._previous = STATE.grad_enabled
        STATE.grad_enabled = False
        return self

    def __exit__(self, *exc: Any) -> None:
        STATE.grad_enabled = self._previous


def backward_to_inputs(node: Node | None, grad: np.ndarray, inputs: tuple) -> tuple:
    """Backward from `node` (a recorded output's node) with incoming gradient `grad`; returns the gradients of
    `inputs` (leaf tensors) instead of accumulating them into `.grad`; other leaves (parameters) accumulate as
    usual. Runs in the current phase: a checkpoint's backward runs it inside the outer backward.
    """
    capture = {id(x): [x, None] for x in inputs}
    if node is not None:
        pending = {id(node): grad}
        del grad
        previous_repeat = (STATE.repeat, STATE.repeat_backward)
        try:
            _run_backward(node, pending, False, STATE.instrument, capture)
        finally:
            STATE.repeat, STATE.repeat_backward = previous_repeat
    return tuple(capture[id(x)][1] for x in inputs)


class saved_tensors_policy:
    """Context manager: the saved-tensor policy (minimal | all | half) of the ops applied inside it.

    Each scope has its own float16 cache (weak references only, so it keeps no buffer alive).
    """

    __slots__ = ("policy", "_previous")

    def __init__(self, policy: str):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy

    def __enter__(self) -> "saved_tensors_policy":
        self._previous = (STATE.policy, STATE.half_cache)
        STATE.policy = self.policy
        STATE.half_cache = {} if self.policy == "half" else None
        return self

    def __exit__(self, *exc: Any) -> None:
        STATE.policy, STATE.half_cache = self._previous


class enable_grad(no_grad):
    def __enter__(self) -> "enable_grad":
        self._previous = STATE.grad_enabled
        STATE.grad_enabled = True
        return self


class layer_scope:
    """Tags the nodes created inside it with a layer index (read by the ledger and by `saved_buffers`)."""

    __slots__ = ("layer", "_previous")

    def __init__(self, layer: int | None):
        self.layer = layer

    def __enter__(self) -> None:
        self._previous = STATE.layer
        STATE.layer = self.layer

    def __exit__(self, *exc: Any) -> None:
        STATE.layer = self._previous


_REPEAT_IDS = itertools.count(1)


class NotRepeatable(ValueError):
    """What ran inside repeat scopes cannot stand for the runs it was counted as (blocks that do not chain, a LoRA
    target naming one block by its index): the predictor runs every block instead."""


class repeat_scope:
    """What runs inside it stands for `copies` identical runs, one after the other (`nn.repeat`: the predictor runs
    one block of a stack of identical ones): the ledger counts its events that many times, and those of the backward
    of the nodes made inside it too. Scopes nest (a block inside a repeated checkpoint segment): counts multiply.

    A scope is a path of (id, copies) pairs, one per enclosing scope; an entered scope gets a new positive id, and
    its backward counterpart the same id negated, so a block's forward and backward events are told apart even
    when nothing happens between them."""

    __slots__ = ("copies", "_previous")

    def __init__(self, copies: int):
        if copies < 1:
            raise ValueError(f"a repeat scope stands for at least one run, got {copies}")
        self.copies = copies

    def __enter__(self) -> None:
        self._previous = (STATE.repeat, STATE.repeat_backward)
        path = (STATE.repeat or ()) + ((next(_REPEAT_IDS), self.copies),)
        STATE.repeat = path
        STATE.repeat_backward = tuple((-abs(ident), copies) for ident, copies in path)

    def __exit__(self, *exc: Any) -> None:
        STATE.repeat, STATE.repeat_backward = self._previous


class phase_scope:
    """Names the phase (forward, recompute, optimizer, ...) that ledger events are attributed to."""

    __slots__ = ("phase", "_previous")

    def __init__(self, phase: str):
        self.phase = phase

    def __enter__(self) -> None:
        self._previous = STATE.phase
        STATE.phase = self.phase

    def __exit__(self, *exc: Any) -> None:
        STATE.phase = self._previous


def walk(root: Any) -> Iterator[Node]:
    """Every node of the graph behind a tensor, in backward order."""
    if root._node is None:
        return iter(())
    return iter(topological_order(root._node))

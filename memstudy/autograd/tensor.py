"""`Tensor` (an ndarray, its gradient, and the node that produced it, if a graph was recorded) and `apply`, the
one door through which every op runs: it records a node when an input requires grad and wraps the result."""
from __future__ import annotations

import weakref
from numbers import Number
from typing import Any

import numpy as np

from . import ops
from .autocast import Cast, CastWeight, POLICY as AUTOCAST_POLICY, target as autocast_target
from .engine import HALF, POLICIES, STATE, Node, _base, _data_address, backward
from .flops import forward_flops
from .meta import MetaArray
from .precision import FLOAT32, is_float, is_low


class Tensor:
    """Wraps an ndarray (or a shape-only `MetaArray`). Float arrays keep their dtype; `grad` is an ndarray or None."""

    __slots__ = ("data", "grad", "requires_grad", "name", "_node", "_from_op", "__weakref__")
    # numpy defers to Tensor's reflected operators: `ndarray + Tensor` and `ndarray @ Tensor` call
    # Tensor.__radd__ / __rmatmul__ instead of building an object array of Tensors (or failing)
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None):
        array = data if type(data) is np.ndarray or type(data) is MetaArray else np.asarray(data)
        if requires_grad and not is_float(array.dtype):
            raise TypeError(f"only floating-point tensors can require grad, got {array.dtype}")
        self.data = array
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._node = None  # the Node that produced this tensor; None for leaves
        # True for an op's output that no graph recorded (no_grad, or no input needed grad): a leaf by `_node`,
        # but a buffer the step made, never one the caller owns (see `apply`'s caller-owned inputs)
        self._from_op = False

    # --- plain facts -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        detached = Tensor(self.data, requires_grad=False, name=self.name)
        detached._from_op = self._from_op or self._node is not None  # the same buffer: made by an op or not
        return detached

    def backward(self, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
        backward(self, grad, retain_graph)

    def __repr__(self) -> str:
        label = f", name={self.name!r}" if self.name else ""
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{flag}{label})"

    # --- ops ---------------------------------------------------------------------------------
    def __matmul__(self, other: Any) -> "Tensor":
        return apply(ops.MatMul, self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return apply(ops.MatMul, other, self)

    def __add__(self, other: Any) -> "Tensor":
        return apply(ops.Add, self, _constant(other, self))

    def __radd__(self, other: Any) -> "Tensor":
        return apply(ops.Add, _constant(other, self), self)

    def __sub__(self, other: Any) -> "Tensor":
        return apply(ops.Sub, self, _constant(other, self))

    def __rsub__(self, other: Any) -> "Tensor":
        return apply(ops.Sub, _constant(other, self), self)

    def __mul__(self, other: Any) -> "Tensor":
        if isinstance(other, Number):
            return apply(ops.Scale, self, factor=other)
        return apply(ops.Mul, self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        if isinstance(other, Number):
            return apply(ops.Scale, self, factor=other)
        return apply(ops.Mul, other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        if isinstance(other, Number):
            return apply(ops.Scale, self, factor=1.0 / other)
        if not isinstance(other, (Tensor, MetaArray)):
            other = np.asarray(other)
        return self * (other ** -1 if isinstance(other, Tensor) else 1.0 / other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return (self ** -1) * other

    def __neg__(self) -> "Tensor":
        return apply(ops.Neg, self)

    def __pow__(self, exponent: Any) -> "Tensor":
        if not isinstance(exponent, Number):
            raise TypeError("Tensor ** takes a Python number exponent")
        if exponent == 2:
            return apply(ops.Square, self)
        return apply(ops.Pow, self, exponent=exponent)

    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return apply(ops.Sum, self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return apply(ops.Mean, self, axis=axis, keepdims=keepdims)

    def transpose(self, *axes: int) -> "Tensor":
        return apply(ops.Transpose, self, axes=axes or None)

    @property
    def T(self) -> "Tensor":
        return apply(ops.Transpose, self, axes=None)

    def reshape(self, *shape: Any) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return apply(ops.Reshape, self, shape=shape)

    def exp(self) -> "Tensor":
        return apply(ops.Exp, self)

    def log(self) -> "Tensor":
        return apply(ops.Log, self)

    def square(self) -> "Tensor":
        return apply(ops.Square, self)

    def relu(self) -> "Tensor":
        return apply(ops.ReLU, self)

    def sigmoid(self) -> "Tensor":
        return apply(ops.Sigmoid, self)

    def tanh(self) -> "Tensor":
        return apply(ops.Tanh, self)

    def sum_squares(self) -> "Tensor":
        return apply(ops.SumSquares, self)


def _constant(value: Any, like: Tensor) -> Any:
    """Python numbers join a tensor's arithmetic in its dtype (no float32 -> float64 promotion)."""
    if isinstance(value, Number):
        return np.asarray(value, dtype=like.data.dtype)
    return value




# --- the one door in ------------------------------------------------------------------------------------
# `apply` lives beside `Tensor` because it wraps every op's result in one; the engine (engine.py) knows nodes,
# backward and the policies' state, never the Tensor class.

def apply(fn: type, *inputs: Any, **consts: Any):
    """Run `fn` forward on the inputs' arrays, record a node if any input requires grad, wrap the result."""
    if STATE.autocast is not None and fn.name in AUTOCAST_POLICY:  # inside autocast: cast by the op's policy
        inputs = _autocast_inputs(fn, inputs)
    # one pass over the inputs: their arrays, their edges (node, leaf tensor, or None: no grad flows)
    arrays = []
    parents = []
    needs = []
    owned = ()  # id() of the base buffer of each leaf tensor that needs no grad and that no op made (frozen
    # weights, the batch): ints, not references, so a node holds nothing more (see Node.caller_owned)
    for x in inputs:
        if type(x) is Tensor:
            arrays.append(x.data)
            if x.requires_grad:
                parents.append(x._node or x)  # its node, or the leaf tensor itself
                needs.append(True)
                continue
            if not x._from_op:
                data = x.data
                owned += (id(data if data.base is None else _base(data)),)
        else:
            arrays.append(x)
        parents.append(None)
        needs.append(False)
    record = True in needs and STATE.grad_enabled
    if record:
        ctx = Node(fn, tuple(parents), tuple(needs), STATE.layer)
        if owned:
            ctx.caller_owned = owned
    else:
        ctx = Node(fn, None, (False,) * len(inputs), STATE.layer)
    out = fn.forward(ctx, *arrays, **consts)
    if type(out) is not np.ndarray and type(out) is not MetaArray:  # 0-d arithmetic returns numpy scalars
        out = np.asarray(out)
    instrument = STATE.instrument
    if instrument is not None:  # what the op computed, for an instrument that counts it (the ledger, by phase)
        ctx.flops = forward_flops(fn, arrays, out)
    if record and STATE.policy != "minimal":
        sources = _apply_policy(ctx, inputs, arrays, out)
        if instrument is not None:
            instrument.on_forward(ctx, out)
            for source in sources:  # a saved array that `half` replaced by its float16 copy: it existed too
                instrument.on_new(source, fn.name, ctx.layer)
        del sources  # the originals no one else holds die here, after the instrument saw them
    elif instrument is not None:
        instrument.on_forward(ctx, out)
    result = Tensor(out, record)
    if record:
        result._node = ctx
        dtype = out.dtype
        for x in inputs:  # an input of another dtype (autocast's float32 + bfloat16) gets its gradient cast back
            if type(x) is Tensor and x.requires_grad and x.data.dtype != dtype:
                ctx.grad_dtypes = tuple(x.data.dtype if type(x) is Tensor else None for x in inputs)
                break
    else:
        result._from_op = True
    return result


def _autocast_inputs(fn: type, inputs: tuple) -> tuple:
    """The inputs of `fn` cast by the active autocast (autocast.py); a parameter's 16-bit cast is made once per
    scope (the weight-cast cache, as PyTorch's: a float32 leaf that requires grad, cast to the 16-bit type)."""
    out = []
    for x in inputs:
        data = x.data if type(x) is Tensor else x
        if (type(data) is not np.ndarray and type(data) is not MetaArray) or not is_float(data.dtype):
            out.append(x)
            continue
        to = autocast_target(fn, data.dtype)
        if to is None:
            out.append(x)
        elif type(x) is Tensor and x.requires_grad and x._node is None and data.dtype == FLOAT32 and is_low(to):
            cache = STATE.autocast_cache
            hit = cache.get(id(x))
            if hit is None or hit[0]() is not x:  # not cast yet in this scope (or an id reused by another leaf)
                hit = cache[id(x)] = (weakref.ref(x), apply(CastWeight, x, dtype=to))
            out.append(hit[1])
        else:
            out.append(apply(Cast, x, dtype=to))
    return tuple(out)


def _apply_policy(ctx: Node, inputs: tuple, arrays: tuple, out: np.ndarray) -> tuple:
    """The saved-tensor policy at the save door; returns the arrays `half` replaced (the caller drops them)."""
    policy = STATE.policy
    if policy == "all":  # keep the op's output too: every intermediate variable of the forward pass
        if not any(a is out for a in ctx.saved):
            ctx.saved += (out,)
            ctx.saved_roles += ("out",)
        return ()
    if policy != "half":
        raise ValueError(f"unknown saved-tensor policy {policy!r}; one of {', '.join(POLICIES)}")
    cache = STATE.half_cache
    if cache is None:  # half outside a `saved_tensors_policy` scope: a cache for this op alone
        cache = {}
    owned = cache.setdefault("owned", {})  # id(base) -> weakref(base): caller-owned buffers, never cast
    copies = cache.setdefault("copies", {})  # (id(base), address, shape, strides) -> (weakref base, weakref copy)
    for x, array in zip(inputs, arrays):
        if (type(array) is np.ndarray or type(array) is MetaArray) and (type(x) is not Tensor or x._node is None):
            base = _base(array)
            owned[id(base)] = weakref.ref(base)
    saved, dtypes, sources = [], [], []
    for array in ctx.saved:
        if array is None or (type(array) is not np.ndarray and type(array) is not MetaArray) \
                or array.dtype.kind != "f" or array.dtype.itemsize <= 2:
            saved.append(array)
            dtypes.append(None)
            continue
        base = _base(array)
        ref = owned.get(id(base))
        if ref is not None and ref() is base:
            saved.append(array)
            dtypes.append(None)
            continue
        key = (id(base), _data_address(array), array.shape, array.strides)
        hit = copies.get(key)
        copy = hit[1]() if hit is not None and hit[0]() is base else None
        if copy is None:
            copy = array.astype(HALF)
            copies[key] = (weakref.ref(base), weakref.ref(copy))
        saved.append(copy)
        dtypes.append(array.dtype)
        sources.append(array)
    if sources:
        ctx.saved = tuple(saved)
        ctx.stored_dtypes = tuple(dtypes)
        ctx.saved_tensors = ()  # the originals die after forward; backward reads what `Node.unpack` casts back
    return tuple(sources)

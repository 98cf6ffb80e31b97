"""Every op on every memory layout (DESIGN.md principle 19), forward and backward, real and shape-only.

For each op the engine has (every `Function` subclass in `memstudy.autograd.ops` and its modules, found by walking
the package: a new op without a case here fails `test_every_op_has_a_layout_case`), hypothesis draws inputs and, for
every array input and for the upstream gradient, a memory layout: C order, Fortran order, any axis permutation,
steps of 2–3 along some axes (non-unit strides), reversed axes (negative strides), an offset into a larger buffer,
and broadcast views (`np.broadcast_to`: stride 0, read-only); shapes include size-1 and size-0 axes. Then:

- forward and backward on the strided arrays equal the same op on C-contiguous float64 copies (the reference; the
  drawn dtype is float64, float32, bfloat16 or float16: a 16-bit op computes in float32 and rounds each result once,
  so it is held to a few of its type's units in the last place), and, where one is simple, a formula written here
  from the definition;
- the backward agrees with a central difference along a random direction (float64, smooth ops);
- no op writes into its inputs or into its incoming gradient (each one's whole buffer is compared byte for byte
  after backward; a read-only broadcast view makes numpy raise on a write);
- the same op on `MetaArray`s built with the same shapes, strides and base relations (the same slicing, transposes
  and `np.broadcast_to` applied to a shape-only buffer) gives results, saved arrays, workspaces and gradients of the
  same shapes, dtypes, strides, writeability and view/copy relation (`.base` chain) as numpy's: the predictor's
  ledger counts the same buffers as the measured one on every layout.

Adding a case for a new op (a few lines): write a strategy decorated with `@case(ops.NewOp)` that draws the
op's shapes and returns `Call([floats(shape), ...], consts=..., formula=...)`:

    @case(ops.RMSNorm)
    @st.composite
    def _rms_norm(draw):
        shape = draw(shapes(min_dims=1))
        formula = lambda x, w, eps: x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w
        return Call([floats(shape), floats(shape[-1:])], consts=dict(eps=1e-6), formula=formula)

`floats(shape, low, high, grad=True)` is a float input (its gradient may be asked for), `integers(shape, high)` an
index input; `consts` are the op's keyword constants (a callable returning a fresh dict when the op consumes state,
e.g. a random generator); `formula(*float64 inputs, **consts)` is the forward by its definition (optional).
`smooth_on_repeats=False` skips the finite-difference check when a broadcast input repeats values (max-pooling's
ties). Everything else — layouts, references, gradients, shape-only arrays — the harness does. An op whose code
reshapes, ravels or flattens also needs a `BIG` entry (input shapes of ~200k elements): there tracemalloc checks
that a Fortran-ordered input or a broadcast gradient costs no copy the ledger does not see.

Further down: the reported cases by name (GELU of a transpose, LayerNorm of a transposed input, an encoder that
mean-pools after its final LayerNorm, against finite differences), the optimisers on parameters and gradients of
any layout, and the shape-only matmul's strides against numpy's.

`LAYOUTS_NO_SHRINK=1 pytest tests/test_layouts.py` reports a failing example as drawn (no shrinking: quick when
many ops fail).
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import pkgutil
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck import check_grad
from memstudy import nn, optim
from memstudy.autograd import Tensor, apply, ops
from memstudy.autograd.checkpoint import checkpoint
from memstudy.autograd.engine import Function, Node
from memstudy.autograd.meta import MetaArray
from memstudy.autograd.ops.chunks import CHUNK_ELEMENTS
from memstudy.autograd.precision import dtype as as_dtype

PHASES = [Phase.explicit, Phase.reuse, Phase.generate] if os.environ.get("LAYOUTS_NO_SHRINK") else list(Phase)
SETTINGS = settings(max_examples=25, deadline=None, phases=PHASES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BFLOAT16 = as_dtype("bfloat16")
DTYPES = (np.dtype(np.float64), np.dtype(np.float32), BFLOAT16, np.dtype(np.float16))
# normwise, against the float64 reference on the same (rounded) inputs: float32's arithmetic; for the 16-bit types
# two units in the last place (2^-7 and 2^-10 relative: one rounding of the result, and one of an intermediate the
# op rounds to the type, such as the product a 16-bit matmul's gradient reads)
TOLERANCE = {DTYPES[0]: 1e-9, DTYPES[1]: 2e-4, DTYPES[2]: 2.0 ** -7, DTYPES[3]: 2.0 ** -10}
# ops whose 16-bit results round more than once on the way: MSE rounds p − t to a 16-bit buffer (saved), whose
# square doubles that relative error before the result's own rounding (forward), and scales it, rounded again, for
# the gradient (a broadcast target's sums those); hypothesis found 1.07x and 1.4x the one-rounding tolerance in the
# gradient (bfloat16 and float16) and 1.38x in a 0-d bfloat16 forward
ROUNDINGS = {ops.MSE: 2}


# --- the ops, found by walking the package ---------------------------------------------------------------------

def all_ops() -> list[type]:
    """Every Function subclass exported by `memstudy.autograd.ops` or defined in one of its modules."""
    found = {id(v): v for v in vars(ops).values() if inspect.isclass(v) and issubclass(v, Function)}
    for info in pkgutil.iter_modules(ops.__path__):
        module = importlib.import_module(f"{ops.__name__}.{info.name}")
        for v in vars(module).values():
            if inspect.isclass(v) and issubclass(v, Function) and v.__module__ == module.__name__:
                found[id(v)] = v
    found.pop(id(Function), None)
    return sorted(found.values(), key=lambda f: f.__name__)


# --- what a case is ----------------------------------------------------------------------------------------------

@dataclass
class Arg:
    """One positional input: a float array (differentiable unless grad=False) or an integer index array."""
    shape: tuple[int, ...]
    kind: str = "float"
    low: float = -2.0
    high: float = 2.0
    grad: bool = True


def floats(shape, low: float = -2.0, high: float = 2.0, grad: bool = True) -> Arg:
    return Arg(tuple(shape), "float", low, high, grad)


def integers(shape, high: int) -> Arg:
    return Arg(tuple(shape), "int", 0, high, False)


@dataclass
class Call:
    args: list[Arg]
    consts: dict | Callable[[], dict] = field(default_factory=dict)
    formula: Callable | None = None
    smooth_on_repeats: bool = True

    def make_consts(self, dtype: Any = None) -> dict:
        """A fresh dict of the constants; float arrays among them (batch norm's statistics) in `dtype`."""
        consts = self.consts() if callable(self.consts) else dict(self.consts)
        return {k: v.astype(dtype) if dtype is not None and isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
                for k, v in consts.items()}


CASES: dict[type, Callable[[], st.SearchStrategy]] = {}


def case(op: type) -> Callable:
    def register(strategy: Callable[[], st.SearchStrategy]) -> Callable:
        CASES[op] = strategy
        return strategy
    return register


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 0, max_side: int = 4) -> st.SearchStrategy:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


@st.composite
def broadcastable(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to `shape`: leading axes dropped, some axes of length 1."""
    drop = draw(st.integers(0, len(shape)))
    kept = shape[drop:]
    ones = draw(st.lists(st.booleans(), min_size=len(kept), max_size=len(kept)))
    return tuple(1 if one else n for n, one in zip(kept, ones))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


def _windows(x, kernel, stride):
    """(N, C, Ho, Wo, k, k) windows of an NCHW array."""
    return np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]


# --- one case per op ---------------------------------------------------------------------------------------------

def _unary(op, formula, low=-2.0, high=2.0):
    @st.composite
    def strategy(draw):
        return Call([floats(draw(shapes()), low, high)], formula=formula)
    case(op)(strategy)


_unary(ops.Neg, np.negative)
_unary(ops.Exp, np.exp)
_unary(ops.Log, np.log, 0.5, 2.0)
_unary(ops.Square, np.square)
_unary(ops.ReLU, lambda x: np.maximum(x, 0))
_unary(ops.Sigmoid, _sigmoid)
_unary(ops.Tanh, np.tanh)
_unary(ops.GELU, _gelu)
_unary(ops.SumSquares, lambda x: np.sum(x * x))


def _binary(op, formula):
    @st.composite
    def strategy(draw):
        shape = draw(shapes())
        a, b = draw(broadcastable(shape)), draw(broadcastable(shape))
        if draw(st.booleans()):
            a, b = b, a
        return Call([floats(a), floats(b)], formula=formula)
    case(op)(strategy)


_binary(ops.Add, np.add)
_binary(ops.Sub, np.subtract)
_binary(ops.Mul, np.multiply)


@case(ops.Scale)
@st.composite
def _scale(draw):
    factor = draw(st.sampled_from([-1.5, 0.5, 3.0]))
    return Call([floats(draw(shapes()))], consts=dict(factor=factor), formula=lambda x, factor: x * factor)


@case(ops.Pow)
@st.composite
def _pow(draw):
    exponent = draw(st.sampled_from([-1.0, 0.5, 3.0]))
    return Call([floats(draw(shapes()), 0.5, 2.0)], consts=dict(exponent=exponent),
                formula=lambda x, exponent: x ** exponent)


@st.composite
def _axis_args(draw, ndim: int):
    kind = draw(st.sampled_from(["none", "int", "tuple"] if ndim else ["none"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        axis = tuple(draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True)))
    return dict(axis=axis, keepdims=draw(st.booleans()))


@case(ops.Sum)
@st.composite
def _sum(draw):
    shape = draw(shapes())
    return Call([floats(shape)], consts=draw(_axis_args(len(shape))),
                formula=lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims))


@case(ops.Mean)
@st.composite
def _mean(draw):
    shape = draw(shapes(min_side=1))  # a mean over no elements is 0/0
    return Call([floats(shape)], consts=draw(_axis_args(len(shape))),
                formula=lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims))


@case(ops.Transpose)
@st.composite
def _transpose(draw):
    shape = draw(shapes())
    axes = None
    if shape and draw(st.booleans()):
        axes = tuple(a - (len(shape) if draw(st.booleans()) else 0)
                     for a in draw(st.permutations(range(len(shape)))))
    return Call([floats(shape)], consts=dict(axes=axes), formula=lambda x, axes: np.transpose(x, axes))


@case(ops.Reshape)
@st.composite
def _reshape(draw):
    shape = draw(shapes())
    targets = [(-1,), tuple(reversed(shape)), (1,) + shape + (1,)]
    if shape and shape[0]:  # (0, -1) is ambiguous: numpy refuses it
        targets.append(shape[:1] + (-1,))
    target = draw(st.sampled_from(targets))
    if target == (-1,) and math.prod(shape) == 0 and draw(st.booleans()):
        target = (0,)
    return Call([floats(shape)], consts=dict(shape=target), formula=lambda x, shape: np.reshape(x, shape))


@case(ops.Flatten)
@st.composite
def _flatten(draw):
    shape = draw(shapes(min_dims=1))
    start = draw(st.integers(-len(shape), len(shape) - 1))
    return Call([floats(shape)], consts=dict(start_dim=start),
                formula=lambda x, start_dim: x.reshape(x.shape[:start_dim % x.ndim]
                                                       + (math.prod(x.shape[start_dim % x.ndim:]),)))


@case(ops.Slice)
@st.composite
def _slice(draw):
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    start = draw(st.integers(0, n))
    stop = draw(st.integers(start, n))
    index = (slice(None),) * (axis % len(shape)) + (slice(start, stop),)
    return Call([floats(shape)], consts=dict(axis=axis, start=start, stop=stop),
                formula=lambda x, axis, start, stop: x[index])


@case(ops.MatMul)
@st.composite
def _matmul(draw):
    m, k, n = (draw(st.integers(0, 3)) for _ in range(3))
    return Call([floats((m, k)), floats((k, n))], formula=np.matmul)


@case(ops.BatchedMatMul)
@st.composite
def _batched_matmul(draw):
    lead = draw(shapes(max_dims=2))
    m, k, n = (draw(st.integers(0, 3)) for _ in range(3))
    return Call([floats(draw(broadcastable(lead)) + (m, k)), floats(draw(broadcastable(lead)) + (k, n))],
                formula=np.matmul)


@case(ops.Linear)
@st.composite
def _linear(draw):
    lead = draw(shapes(max_dims=2))
    n_in, n_out = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    args = [floats(lead + (n_in,)), floats((n_out, n_in))]
    if draw(st.booleans()):
        args.append(floats((n_out,)))
    return Call(args, formula=lambda x, w, b=None: x @ w.T + (0 if b is None else b))


@case(ops.CausalMask)
@st.composite
def _causal_mask(draw):
    shape = draw(shapes(min_dims=2))
    offset = draw(st.integers(0, 3))  # the positions a KV cache held before the queries (generation)
    keep = np.tri(shape[-2], shape[-1], k=offset, dtype=bool)
    return Call([floats(shape)], consts=dict(offset=offset), formula=lambda x, offset: np.where(keep, x, -np.inf))


@case(ops.FlashAttention)
@st.composite
def _flash_attention(draw):
    b, kv, group = draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))  # a = kv·group (GQA)
    s, t, d = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    offset = draw(st.integers(0, 3))  # query i sees keys j <= offset + i (key 0 always: no empty row)
    keep = np.tri(s, t, k=offset, dtype=bool)

    def attention(q, k, v, offset):  # softmax(q kᵀ/√d, causal) v with each kv head repeated for its group
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.where(keep, q @ k.swapaxes(-1, -2) / math.sqrt(d), -np.inf)
        return _softmax(scores, -1) @ v
    return Call([floats((b, kv * group, s, d)), floats((b, kv, t, d)), floats((b, kv, t, d))],
                consts=dict(offset=offset), formula=attention)


@case(ops.Softmax)
@st.composite
def _softmax_case(draw):
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return Call([floats(shape, -3, 3)], consts=dict(axis=axis), formula=lambda x, axis: _softmax(x, axis))


@case(ops.Dropout)
@st.composite
def _dropout(draw):
    p = draw(st.sampled_from([0.0, 0.25, 0.5]))
    seed = draw(st.integers(0, 99))
    return Call([floats(draw(shapes()))], consts=lambda: dict(p=p, rng=np.random.default_rng(seed)))


@case(ops.Embedding)
@st.composite
def _embedding(draw):
    rows, width = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    indices = draw(shapes(max_dims=2))
    return Call([integers(indices, rows), floats((rows, width))], formula=lambda i, w: w[i])


@case(ops.GELU)
@st.composite
def _gelu_case(draw):
    return Call([floats(draw(shapes()), -4, 4)], formula=_gelu)


def _layer_norm(x, w, b=None, eps=1e-5):
    out = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + eps) * w
    return out if b is None else out + b


@case(ops.LayerNorm)
@st.composite
def _layer_norm_case(draw):
    shape = draw(shapes(min_dims=1))
    args = [floats(shape), floats(shape[-1:])]
    if draw(st.booleans()):
        args.append(floats(shape[-1:]))
    return Call(args, consts=dict(eps=1e-5), formula=_layer_norm)


def _rms_norm(x, w, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


@case(ops.RMSNorm)
@st.composite
def _rms_norm_case(draw):
    shape = draw(shapes(min_dims=1))
    return Call([floats(shape), floats(shape[-1:])], consts=dict(eps=1e-6), formula=_rms_norm)


_unary(ops.SiLU, lambda x: x * _sigmoid(x))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


@case(ops.Rotary)
@st.composite
def _rotary_case(draw):
    lead = draw(shapes(max_dims=2))
    seq, dim = draw(st.integers(0, 3)), 2 * draw(st.integers(1, 2))
    table = draw(st.sampled_from([(seq, dim), (1, dim), (dim,)]))  # cos/sin broadcast over the leading axes
    return Call([floats(lead + (seq, dim)), floats(table, grad=False), floats(table, grad=False)],
                formula=lambda x, cos, sin: x * cos + _rotate_half(x) * sin)


@case(ops.RotaryTables)
@st.composite
def _rotary_tables_case(draw):
    seq, dim = draw(st.integers(0, 4)), 2 * draw(st.integers(1, 3))

    def formula(positions, dim, theta, dtype):
        inv_freq = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
        angles = np.concatenate([positions[:, None] * inv_freq] * 2, axis=-1)
        return np.stack([np.cos(angles), np.sin(angles)])
    return Call([integers((seq,), 16)], consts=dict(dim=dim, theta=10000.0, dtype="float64"), formula=formula)


@st.composite
def _joined(draw, min_dims: int = 1, axis: int | None = None) -> tuple[list[tuple[int, ...]], int]:
    """1-3 shapes equal but along one axis (any length there, 0 included), and that axis."""
    shape = draw(shapes(min_dims=min_dims))
    if axis is None:
        axis = draw(st.integers(-len(shape), len(shape) - 1))
    sizes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    at = axis % len(shape)
    return [shape[:at] + (n,) + shape[at + 1:] for n in sizes], axis


@case(ops.Concatenate)
@st.composite
def _concatenate(draw):
    pieces, axis = draw(_joined())
    return Call([floats(p) for p in pieces], consts=dict(axis=axis),
                formula=lambda *xs, axis: np.concatenate(xs, axis=axis))


@case(ops.CacheAppend)
@st.composite
def _cache_append(draw):
    pieces, _ = draw(_joined(min_dims=2, axis=-2))
    return Call([floats(p) for p in pieces[:2]], consts=dict(role=draw(st.sampled_from(["key", "value"]))),
                formula=lambda *xs, role: np.concatenate(xs, axis=-2))


@case(ops.CacheAllocate)
@st.composite
def _cache_allocate(draw):
    shape = draw(shapes(min_dims=4, max_dims=4))
    length = draw(st.integers(0, 5))
    return Call([floats(shape, grad=False)], consts=dict(length=length, role="key"),
                formula=lambda like, length, role: np.zeros(like.shape[:2] + (length,) + like.shape[3:]))


@case(ops.Argmax)
@st.composite
def _argmax(draw):
    shape = draw(shapes(min_dims=1))
    shape = shape[:-1] + (max(shape[-1], 1),)  # the argmax of no values is undefined (numpy refuses)
    axis = -1 if draw(st.booleans()) else len(shape) - 1
    return Call([floats(shape, grad=False)], consts=dict(axis=axis), formula=lambda x, axis: np.argmax(x, axis=axis))


@case(ops.SoftmaxCrossEntropy)
@st.composite
def _cross_entropy(draw):
    positions = draw(shapes(min_dims=1, max_dims=2, min_side=1))
    classes = draw(st.integers(1, 4))

    def formula(logits, labels):
        shifted = logits - logits.max(axis=-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return -np.mean(np.take_along_axis(logp, labels[..., None], axis=-1))
    return Call([floats(positions + (classes,), -3, 3), integers(positions, classes)], formula=formula)


@case(ops.MSE)
@st.composite
def _mse(draw):
    shape = draw(shapes(min_side=1))
    return Call([floats(shape), floats(draw(broadcastable(shape)))], formula=lambda p, t: np.mean((p - t) ** 2))


@st.composite
def _nchw(draw, min_hw: int = 1, max_hw: int = 5, min_n: int = 0):
    return (draw(st.integers(min_n, 2)), draw(st.integers(0, 2)), draw(st.integers(min_hw, max_hw)),
            draw(st.integers(min_hw, max_hw)))


def _direct_conv(x, w, b=None, *, stride, padding, save, algo="per_example", block=None, workspace_bytes=None):
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.einsum("nchwkl,ockl->nohw", _windows(xp, k, stride), w)
    return out if b is None else out + b[None, :, None, None]


@case(ops.Conv2d)
@st.composite
def _conv(draw):
    n, c, h, w = draw(_nchw())
    c = max(c, 1)
    kernel, stride, padding = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
    h, w = max(h, kernel - 2 * padding), max(w, kernel - 2 * padding)
    out_channels = draw(st.integers(1, 2))
    args = [floats((n, c, h, w)), floats((out_channels, c, kernel, kernel))]
    if draw(st.booleans()):
        args.append(floats((out_channels,)))
    consts = dict(stride=stride, padding=padding, save=draw(st.sampled_from(ops.CONV_SAVES)),
                  algo=draw(st.sampled_from(ops.CONV_ALGOS)))
    if consts["algo"] == "batched":  # a block of examples per GEMM (None: the whole batch)
        consts["block"] = draw(st.none() | st.integers(1, 3))
    elif consts["algo"] == "auto":  # a limit from nothing fits to everything fits
        consts["workspace_bytes"] = draw(st.none() | st.integers(0, 4000))
    return Call(args, consts=consts, formula=_direct_conv)


@st.composite
def _pool_args(draw):
    kernel = draw(st.integers(1, 2))
    stride = draw(st.sampled_from([None, 1, 2]))
    n, c, h, w = draw(_nchw(min_hw=kernel))
    return (n, c, h, w), dict(kernel=kernel, stride=stride)


@case(ops.MaxPool2d)
@st.composite
def _max_pool(draw):
    shape, consts = draw(_pool_args())
    formula = lambda x, kernel, stride: _windows(x, kernel, stride or kernel).max(axis=(4, 5))  # noqa: E731
    return Call([floats(shape)], consts=consts, formula=formula, smooth_on_repeats=False)


@case(ops.AvgPool2d)
@st.composite
def _avg_pool(draw):
    shape, consts = draw(_pool_args())
    formula = lambda x, kernel, stride: _windows(x, kernel, stride or kernel).mean(axis=(4, 5))  # noqa: E731
    return Call([floats(shape)], consts=consts, formula=formula)


@case(ops.GlobalAvgPool2d)
@st.composite
def _global_avg_pool(draw):
    return Call([floats(draw(_nchw()))], formula=lambda x: x.mean(axis=(2, 3)))


def _batch_norm(x, w, b, eps=1e-5, **_):
    mean, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[:, None, None] + b[:, None, None]


@case(ops.BatchNorm2d)
@st.composite
def _batch_norm_case(draw):
    n, c, h, w = draw(_nchw(min_n=1, max_hw=3))
    track = n * h * w >= 2 and draw(st.booleans())

    def consts():
        if not track:
            return dict(eps=1e-5)
        return dict(eps=1e-5, momentum=0.1, running_mean=np.zeros(c), running_var=np.ones(c))
    return Call([floats((n, c, h, w)), floats((c,)), floats((c,))], consts=consts, formula=_batch_norm)


@case(ops.BatchNorm2dEval)
@st.composite
def _batch_norm_eval(draw):
    n, c, h, w = draw(_nchw(max_hw=3))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    mean, var = rng.normal(size=c), rng.uniform(0.5, 2.0, size=c)

    def formula(x, w, b, running_mean, running_var, eps):
        return (x - running_mean[:, None, None]) / np.sqrt(running_var[:, None, None] + eps) * w[:, None, None] \
            + b[:, None, None]
    return Call([floats((n, c, h, w)), floats((c,)), floats((c,))],
                consts=lambda: dict(running_mean=mean.copy(), running_var=var.copy(), eps=1e-5), formula=formula)


# --- layouts -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """How a logical array sits in its buffer: `perm` lists the logical axes outermost first in memory, `steps` and
    `flips` (per logical axis) give strides of 2–3 elements and reversed axes, `pads` an offset into the buffer;
    `broadcast` axes are length 1 in the buffer and broadcast (stride 0, read-only) to the logical length."""
    perm: tuple[int, ...]
    steps: tuple[int, ...]
    flips: tuple[bool, ...]
    pads: tuple[int, ...]
    broadcast: frozenset = frozenset()


KINDS = ("C", "F", "permuted", "strided", "broadcast", "mixed")


@st.composite
def layouts(draw, ndim: int) -> Layout:
    """One of C order, Fortran order, a permutation of the axes, steps / reversals / an offset, a broadcast view, or
    all of these at once."""
    kind = draw(st.sampled_from(KINDS))
    identity = tuple(range(ndim))
    perm, steps, flips, pads, broadcast = identity, (1,) * ndim, (False,) * ndim, (0,) * ndim, frozenset()
    if kind == "F":
        perm = identity[::-1]
    if kind in ("permuted", "mixed", "broadcast"):
        perm = tuple(draw(st.permutations(identity)))
        if kind == "permuted" and perm == identity and ndim > 1:
            perm = identity[:-2] + identity[:-3:-1]  # the last two axes swapped
    if kind in ("strided", "mixed", "broadcast"):
        steps = tuple(draw(st.lists(st.sampled_from([1, 2, 3]), min_size=ndim, max_size=ndim)))
        flips = tuple(draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim)))
        pads = tuple(draw(st.lists(st.integers(0, 1), min_size=ndim, max_size=ndim)))
    if kind in ("broadcast", "mixed") and ndim:
        broadcast = frozenset(draw(st.sets(st.sampled_from(identity), min_size=kind == "broadcast")))
    return Layout(perm, steps, flips, pads, broadcast)


def build(make: Callable[[tuple], Any], shape: tuple[int, ...], layout: Layout) -> Any:
    """An array of logical `shape` in `layout`, by the same slicing, transposes and broadcast on a buffer from
    `make` (a real one filled with values, or a MetaArray: then the two have the same strides and base relations)."""
    source = tuple(1 if i in layout.broadcast else n for i, n in enumerate(shape))
    buffer = make(tuple(source[a] * layout.steps[a] + layout.pads[a] for a in layout.perm))
    index = []
    for a in layout.perm:
        n, step, pad = source[a], layout.steps[a], layout.pads[a]
        if n == 0:
            index.append(slice(pad, pad))
        elif layout.flips[a]:
            last = pad + (n - 1) * step
            index.append(slice(last, pad - 1 if pad else None, -step))
        else:
            index.append(slice(pad, pad + n * step, step))
    view = buffer
    if any(s != slice(0, source[a], 1) for s, a in zip(index, layout.perm)):  # C order itself: the buffer, no view
        view = buffer[tuple(index)]
    if layout.perm != tuple(range(len(shape))):
        view = view.transpose(tuple(np.argsort(layout.perm)))
    if layout.broadcast:
        view = np.broadcast_to(view, shape)
    return view


def owner(array: Any) -> Any:
    return array if array.base is None else array.base


# --- comparing ---------------------------------------------------------------------------------------------------

class Recording(Node):
    """A node that logs the workspaces and results an op reports (what the ledger would count)."""

    def __init__(self, fn: type, needs: tuple[bool, ...]):
        super().__init__(fn, (None,) * len(needs), needs, None)
        self.log: list[tuple[str, Any]] = []

    def workspace(self, array, role="workspace"):
        self.log.append(("workspace:" + role, array))
        return array

    def result(self, array):
        self.log.append(("result", array))
        return array


def as_array(value: Any) -> Any:
    """numpy scalars as 0-d arrays, as the engine's `apply` and backward turn them."""
    return np.asarray(value) if isinstance(value, np.generic) else value


def relation(result: Any, known: list[tuple[str, Any]]) -> str:
    """What the ledger sees: the array is a known one, a view of a known one's buffer, or a new buffer of so many
    bytes (a new array, or a view of a new one: the ledger counts its base buffer either way)."""
    for name, array in known:
        if result is array:
            return f"is {name}"
    for name, array in known:
        if result.base is not None and result.base is owner(array):
            return f"view of {name}'s buffer"
    return f"new buffer of {owner(result).nbytes} bytes"


def strides(array: Any) -> tuple:
    """The strides that matter: numpy's stride of a length-1 axis, or of any axis of an empty array (all 0 for a
    new empty buffer), never changes a later view/copy decision or a byte count, and the shape-only arrays need
    not follow it."""
    if 0 in array.shape:
        return ()
    return tuple(s if n != 1 else None for n, s in zip(array.shape, array.strides))


def describe(result: Any, known: list[tuple[str, Any]]) -> Any:
    if result is None:
        return None
    return dict(shape=result.shape, dtype=result.dtype, strides=strides(result), writeable=result.flags.writeable,
                relation=relation(result, known))


def close(actual: Any, expected: Any, dtype: np.dtype, what: str, roundings: int = 1) -> None:
    assert actual is not None, f"{what}: None, expected an array"
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if not expected.size:
        return
    finite = np.isfinite(expected)
    assert np.array_equal(finite, np.isfinite(actual)) and np.array_equal(actual[~finite], expected[~finite]), \
        f"{what}: non-finite entries differ"
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    error = float(np.max(np.abs(actual[finite].astype(np.float64) - expected[finite]), initial=0.0))
    assert error <= TOLERANCE[dtype] * roundings * scale, f"{what}: max abs error {error:.3g} (scale {scale:.3g})"


def snapshot(arrays: list[Any]) -> list[bytes]:
    return [owner(a).tobytes() for a in arrays]


def scalar(op: type, inputs: list, consts: dict, weight: np.ndarray) -> float:
    """Σ weight · op(inputs) over the finite outputs (the causal mask's −inf entries take no part)."""
    ctx = Recording(op, (False,) * len(inputs))
    out = np.asarray(op.forward(ctx, *inputs, **consts), dtype=np.float64)
    finite = np.isfinite(out)
    return float(np.sum(np.where(finite, out, 0.0) * np.where(finite, weight, 0.0)))


# --- the properties ----------------------------------------------------------------------------------------------

OPS = all_ops()


def test_every_op_has_a_layout_case():
    missing = [op.__name__ for op in OPS if op not in CASES]
    assert not missing, f"ops without a layout case in tests/test_layouts.py: {missing} (see its docstring)"
    assert {op.__name__ for op in CASES} <= {op.__name__ for op in OPS}


# statistics of rows with no elements (a layer norm over an axis of length 0) are 0/0: numpy warns, nothing is wrong
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:Mean of empty slice:RuntimeWarning", "ignore:Degrees of freedom:RuntimeWarning")
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.__name__)
@SETTINGS
@given(data=st.data())
def test_op_on_any_layout(op, data):
    if op not in CASES:
        pytest.skip("no case (test_every_op_has_a_layout_case fails)")
    call = data.draw(CASES[op](), label="call")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    args = call.args
    arg_layouts = [data.draw(layouts(len(a.shape)), label=f"layout of input {i}") for i, a in enumerate(args)]
    needs = tuple(a.grad and data.draw(st.booleans(), label=f"input {i} needs grad") for i, a in enumerate(args))

    def filled(arg: Arg) -> Callable[[tuple], np.ndarray]:
        if arg.kind == "int":
            return lambda shape: np.asarray(rng.integers(0, arg.high, size=shape))
        return lambda shape: np.asarray(rng.uniform(arg.low, arg.high, size=shape), dtype=dtype)

    inputs = [build(filled(a), a.shape, lay) for a, lay in zip(args, arg_layouts)]
    reference_inputs = [np.array(x, dtype=np.float64 if a.kind == "float" else x.dtype, order="C")
                        for a, x in zip(args, inputs)]
    before = snapshot(inputs)
    names = [(f"input {i}", x) for i, x in enumerate(inputs)]

    # forward: strided against the C-contiguous float64 reference, the formula, and the C run's dtype
    ctx = Recording(op, needs)
    consts = call.make_consts(dtype)
    out = as_array(op.forward(ctx, *inputs, **consts))
    logged = len(ctx.log)
    ref_ctx = Recording(op, needs)
    ref_consts = call.make_consts(np.float64)
    ref_out = as_array(op.forward(ref_ctx, *reference_inputs, **ref_consts))
    close(out, ref_out, dtype, "forward vs the C-contiguous reference", ROUNDINGS.get(op, 1))
    if call.formula is not None:
        close(out, call.formula(*reference_inputs, **call.make_consts()), dtype, "forward vs the formula",
              ROUNDINGS.get(op, 1))
    c_inputs = [np.ascontiguousarray(x) for x in inputs]
    assert out.dtype == as_array(op.forward(Recording(op, needs), *c_inputs, **call.make_consts(dtype))).dtype
    for key, value in consts.items():  # state the op updates in place (batch norm's running statistics)
        if isinstance(value, np.ndarray):
            close(value, ref_consts[key], dtype, f"{key} after forward")

    # backward, the upstream gradient in any layout (read-only broadcast views included)
    grads = grad = None
    if any(needs):
        grad_layout = data.draw(layouts(out.ndim), label="layout of the upstream gradient")
        grad = build(lambda shape: np.asarray(rng.uniform(-1, 1, size=shape), dtype=out.dtype), out.shape,
                     grad_layout)
        grad_before = snapshot([grad])
        grads = tuple(as_array(g) for g in op.backward(ctx, grad))
        ref_grads = op.backward(ref_ctx, np.array(grad, dtype=np.float64, order="C"))
        assert len(grads) == len(args)
        for i, (g, r, need) in enumerate(zip(grads, ref_grads, needs)):
            if need:
                close(g, r, dtype, f"gradient of input {i} vs the C-contiguous reference",
                      ROUNDINGS.get(op, 1))
                assert g.dtype == inputs[i].dtype, f"gradient of input {i}: dtype {g.dtype}"
        assert snapshot([grad]) == grad_before, "backward wrote into its incoming gradient"

        # a central difference along a random direction (float64; not where repeated values make ties)
        repeats = any(lay.broadcast for lay in arg_layouts)
        if dtype == np.float64 and (call.smooth_on_repeats or not repeats):
            weight = np.array(grad, dtype=np.float64)
            directions = [rng.normal(size=a.shape) if need else None for a, need in zip(args, needs)]
            eps = 1e-6

            def moved(sign):
                return [x if d is None else np.asarray(x + sign * eps * d)
                        for x, d in zip(reference_inputs, directions)]
            numeric = (scalar(op, moved(1), call.make_consts(), weight)
                       - scalar(op, moved(-1), call.make_consts(), weight)) / (2 * eps)
            analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, directions) if d is not None)
            size = sum(float(np.sum(np.abs(g * d))) for g, d in zip(grads, directions) if d is not None)
            assert abs(analytic - numeric) <= 1e-5 * max(1.0, size), \
                f"directional derivative: backward {analytic!r}, central difference {numeric!r}"
    assert snapshot(inputs) == before, "the op wrote into one of its inputs"

    # the same op on shape-only arrays of the same shapes, strides and base relations
    def shape_only(arg: Arg) -> Callable[[tuple], MetaArray]:
        return lambda shape: MetaArray(shape, np.int64 if arg.kind == "int" else dtype)

    meta_inputs = [build(shape_only(a), a.shape, lay) for a, lay in zip(args, arg_layouts)]
    for x, m in zip(inputs, meta_inputs):
        assert (m.shape, strides(m)) == (x.shape, strides(x)), "the layout builder differs between real and meta"
    meta_names = [(f"input {i}", m) for i, m in enumerate(meta_inputs)]
    meta_consts = {k: MetaArray(v.shape, v.dtype) if isinstance(v, np.ndarray) else v
                   for k, v in call.make_consts(dtype).items()}
    meta_ctx = Recording(op, needs)
    meta_out = op.forward(meta_ctx, *meta_inputs, **meta_consts)
    assert isinstance(meta_out, MetaArray)
    assert describe(meta_out, meta_names) == describe(out, names), "forward result"
    names.append(("output", out))
    meta_names.append(("output", meta_out))

    def described(pairs, known):
        return [(role, describe(a, known)) for role, a in pairs]
    assert described(zip(meta_ctx.saved_roles, meta_ctx.saved), meta_names) == \
        described(zip(ctx.saved_roles, ctx.saved), names), "saved arrays"
    assert described(meta_ctx.log[:logged], meta_names) == described(ctx.log[:logged], names), \
        "workspaces and results in forward"
    if grads is not None:
        meta_grad = build(lambda shape: MetaArray(shape, out.dtype), out.shape, grad_layout)
        names.append(("upstream gradient", grad))
        meta_names.append(("upstream gradient", meta_grad))
        meta_grads = op.backward(meta_ctx, meta_grad)
        assert [describe(g, meta_names) for g in meta_grads] == [describe(g, names) for g in grads], "gradients"
        assert described(meta_ctx.log[logged:], meta_names) == described(ctx.log[logged:], names), \
            "workspaces and results in backward"


# --- the reported cases, by name ---------------------------------------------------------------------------------

RNG = np.random.default_rng(21)


def test_gelu_of_a_transpose():
    x = RNG.normal(size=(2, 3, 4))
    out = nn.GELU()(Tensor(x.transpose(0, 2, 1))).data
    np.testing.assert_allclose(out, _gelu(x.transpose(0, 2, 1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["transposed", "fortran", "reversed"])
def test_layer_norm_of_a_non_contiguous_input(layout):
    base = RNG.normal(size=(4, 3, 5))
    x = {"transposed": base.transpose(1, 0, 2), "fortran": np.asfortranarray(base),
         "reversed": base[::-1, :, ::-2]}[layout]
    ln = nn.LayerNorm(x.shape[-1], dtype="float64")
    ln.weight.data[:] = RNG.normal(size=x.shape[-1])
    out = ln(Tensor(x)).data
    np.testing.assert_allclose(out, _layer_norm(x, ln.weight.data, ln.bias.data), rtol=1e-12, atol=1e-12)


def _encoder(x, w1, b1, w2, b2, ln_w, ln_b, w_out, b_out):
    """A one-block encoder: x + MLP(x), a final LayerNorm, mean-pooled over the sequence, then a linear head."""
    hidden = apply(ops.GELU, apply(ops.Linear, x, w1, b1))
    residual = x + apply(ops.Linear, hidden, w2, b2)
    pooled = apply(ops.LayerNorm, residual, ln_w, ln_b).mean(axis=1)  # (batch, width): the reported case
    return apply(ops.Linear, pooled, w_out, b_out)


@pytest.mark.parametrize("input_layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("checkpointed", [False, True])
def test_encoder_mean_pooling_after_layer_norm_has_the_finite_difference_gradients(input_layout, checkpointed):
    batch, seq, width, hidden, classes = 2, 3, 4, 6, 3
    x = RNG.normal(size=(batch, seq, width))
    if input_layout == "transposed":  # the same values, stored sequence-major
        x = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    params = [RNG.normal(size=s) * 0.5 for s in [(hidden, width), (hidden,), (width, hidden), (width,), (width,),
                                                  (width,), (classes, width), (classes,)]]
    params[4] += 1.0  # layer-norm weight near 1

    def model(*tensors):
        if not checkpointed:
            return _encoder(Tensor(x), *tensors)
        block = lambda t: _encoder(t, *tensors)  # noqa: E731  (the whole encoder as one recomputed segment)
        return checkpoint(block, Tensor(x), list(tensors))
    result = check_grad(model, params, raise_on_failure=False)
    errors = [float(np.max(np.abs(a - n)) / max(np.max(np.abs(n)), 1e-12))
              for a, n in zip(result.analytic, result.numeric) if a is not None]
    assert result.ok, f"relative gradient errors per parameter {[f'{e:.0%}' for e in errors]}: {result.problems}"


# --- no hidden copies: what a layout costs is visible to the ledger ------------------------------------------------

HIDDEN_LIMIT_BYTES = 6 * CHUNK_ELEMENTS * 8  # a few blocks of float64 scratch, whatever the arrays' size

# (input shapes, consts) with inputs of ~200k elements (1.6 MB in float64: twice the limit), for every op whose code
# reshapes, ravels or flattens an input, a gradient or a result (`test_every_reshaping_op_has_a_hidden_copy_case`
# keeps this list complete)
BIG = {
    ops.Linear: lambda: ([(64, 48, 64), (64, 64), (64,)], {}),
    ops.LayerNorm: lambda: ([(64, 48, 64), (64,), (64,)], dict(eps=1e-5)),
    ops.GELU: lambda: ([(64, 48, 64)], {}),
    ops.RMSNorm: lambda: ([(64, 48, 64), (64,)], dict(eps=1e-6)),
    ops.SiLU: lambda: ([(64, 48, 64)], {}),
    ops.Dropout: lambda: ([(64, 48, 64)], dict(p=0.5, rng=np.random.default_rng(0))),
    ops.SumSquares: lambda: ([(64, 48, 64)], {}),
    ops.MSE: lambda: ([(64, 48, 64), (64, 48, 64)], {}),
    ops.Conv2d: lambda: ([(8, 16, 40, 40), (16, 16, 1, 1), (16,)], dict(stride=1, padding=0)),
    ops.GlobalAvgPool2d: lambda: ([(8, 16, 40, 40)], {}),
    ops.BatchNorm2d: lambda: ([(8, 16, 40, 40), (16,), (16,)], {}),
    ops.BatchNorm2dEval: lambda: ([(8, 16, 40, 40), (16,), (16,)],
                                  dict(running_mean=np.zeros(16), running_var=np.ones(16))),
    ops.Reshape: lambda: ([(64, 48, 64)], dict(shape=(-1,))),
    ops.FlashAttention: lambda: ([(2, 8, 96, 64), (2, 4, 96, 64), (2, 4, 96, 64)], {}),
    ops.Flatten: lambda: ([(64, 48, 64)], dict(start_dim=1)),
}
# numpy itself copies here, and the copy is the op's result or gradient (the ledger counts it as such)
RESHAPE_IS_THE_RESULT = {ops.Reshape, ops.Flatten}


def test_every_reshaping_op_has_a_hidden_copy_case():
    reshaping = [op for op in OPS if any(f"{word}(" in inspect.getsource(op)
                                         for word in ("reshape", "ravel", "flatten", "vdot", "einsum"))]
    missing = [op.__name__ for op in reshaping if op not in BIG]
    assert not missing, f"ops that reshape without a BIG case in tests/test_layouts.py: {missing}"


def hidden_peak_bytes(run: Callable[[], list], existing: list) -> int:
    """tracemalloc's peak while `run()` runs, less what was live before and every new buffer `run` returns as
    visible (those of the `existing` arrays, which were live before, are no part of the peak)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        visible = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    seen, total = {id(owner(a)) for a in existing}, 0
    for array in visible:
        if isinstance(array, np.ndarray) and id(owner(array)) not in seen:
            seen.add(id(owner(array)))
            total += owner(array).nbytes
    return peak - before - total


@pytest.mark.parametrize("op", list(BIG), ids=lambda op: op.__name__)
@pytest.mark.parametrize("layout", ["fortran", "broadcast gradient"])
def test_no_hidden_copy_on_a_strided_layout(op, layout):
    """A Fortran-ordered input (or a read-only broadcast upstream gradient) may cost a copy, but then the op reports it
    (a workspace, a saved array, its result): what tracemalloc sees beyond the ledger's buffers stays a few blocks."""
    shapes_, consts = BIG[op]()
    rng = np.random.default_rng(0)
    inputs = []
    for i, shape in enumerate(shapes_):
        array = rng.uniform(0.5, 1.5, size=shape)
        if layout == "fortran" and i == 0:  # the same values, every axis in the other memory order
            array = np.asfortranarray(array)
        inputs.append(array)
    needs = (True,) * len(inputs)
    ctx = Recording(op, needs)
    out = op.forward(ctx, *inputs, **consts)
    grad = rng.uniform(-1, 1, size=np.shape(out))
    if layout == "broadcast gradient" and np.ndim(out) > 1:
        grad = np.broadcast_to(grad[:1], np.shape(out))

    def forward():
        node = Recording(op, needs)
        result = op.forward(node, *inputs, **BIG[op]()[1])
        return [result, *node.saved, *(a for _, a in node.log)]

    def backward():
        grads = op.backward(ctx, grad)
        return [*grads, *(a for _, a in ctx.log)]
    for what, run in (("forward", forward), ("backward", backward)):
        hidden = hidden_peak_bytes(run, inputs + [grad])
        if op in RESHAPE_IS_THE_RESULT:
            continue
        assert hidden < HIDDEN_LIMIT_BYTES, f"{op.__name__} {what} on a {layout} layout: {hidden} hidden bytes"


# --- beyond the ops: the optimisers update parameters and read gradients of any layout -----------------------------

OPTIMIZER_SHAPES = [(3, 5), (8 * CHUNK_ELEMENTS // 96 + 7, 96)]  # one update chunk; several (1 MB), the last partial


def _gradient_in(layout: str, values: np.ndarray) -> np.ndarray:
    if layout == "fortran":
        return np.asfortranarray(values)
    if layout == "broadcast":  # read-only, stride 0 along the rows: the values of its first row everywhere
        return np.broadcast_to(values[:1], values.shape)
    return np.ascontiguousarray(values.T).T  # transposed storage


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("shape", OPTIMIZER_SHAPES, ids=["one chunk", "several chunks"])
@pytest.mark.parametrize("param_layout", ["C", "fortran"])
@pytest.mark.parametrize("grad_layout", ["fortran", "broadcast", "transposed"])
def test_optimizer_updates_any_layout_like_c_order(name, shape, param_layout, grad_layout):
    """Two steps with the gradient (and the parameter's data) in another layout move the parameter exactly as with
    C-contiguous ones, and read the gradient without a hidden copy of it."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=shape)
    grads = [rng.normal(size=shape) for _ in range(2)]
    results = []
    for strided in (False, True):
        param = Tensor(start.copy(), requires_grad=True)
        opt = optim.make(name, [param], lr=0.1)
        if strided and param_layout == "fortran":  # the data replaced after the optimiser was made (loaded weights)
            param.data = np.asfortranarray(param.data)
        for g in grads:
            values = np.broadcast_to(g[:1], shape).copy() if grad_layout == "broadcast" else g
            param.grad = _gradient_in(grad_layout, values) if strided else np.ascontiguousarray(values)
            existing = [param.data, param.grad, *opt.state_arrays()]
            hidden = hidden_peak_bytes(lambda: (opt.step(), opt.state_arrays())[1], existing)  # new state: visible
            if strided and param.data.size > CHUNK_ELEMENTS:
                assert hidden < HIDDEN_LIMIT_BYTES, f"{name} step: {hidden} hidden bytes"
        results.append(param.data.copy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-12, atol=1e-12)


# --- the shape-only matmul lays out its result as numpy's gufunc does --------------------------------------------

# (shape of a, the axis order a is stored in, shape of b, the axis order b is stored in): batch axes transposed in
# one operand, in both, broadcast against a missing or length-1 batch axis, and a vector operand
MATMULS = [((2, 3, 4, 5), (3, 2, 1, 0), (5, 6), None), ((2, 3, 4, 5), (1, 0, 2, 3), (5, 6), None),
           ((2, 3, 4, 5), None, (2, 3, 5, 6), (1, 0, 2, 3)), ((2, 3, 4, 5), (1, 0, 2, 3), (2, 3, 5, 6), (1, 0, 2, 3)),
           ((2, 1, 4, 5), None, (3, 5, 6), None), ((4, 3, 2, 4, 5), (2, 1, 0, 3, 4), (5, 6), None),
           ((2, 3, 4, 5), (1, 0, 3, 2), (5,), None), ((5,), None, (2, 3, 5, 6), (1, 0, 2, 3)),
           ((2, 3, 4, 5), (1, 0, 2, 3), (1, 3, 5, 6), None), ((2, 4, 5), (0, 2, 1), (2, 5, 3), None)]


@pytest.mark.parametrize("a_shape,a_order,b_shape,b_order", MATMULS)
def test_shape_only_matmul_has_numpys_strides(a_shape, a_order, b_shape, b_order):
    def stored(make, shape, order):
        if order is None:
            return make(shape)
        return make(tuple(shape[i] for i in order)).transpose(tuple(np.argsort(order)))
    real = np.matmul(stored(np.ones, a_shape, a_order), stored(np.ones, b_shape, b_order))
    meta = np.matmul(stored(MetaArray, a_shape, a_order), stored(MetaArray, b_shape, b_order))
    assert (meta.shape, meta.strides) == (real.shape, real.strides)

"""The llama's ops (RMSNorm, SiLU, the rotary embedding and its tables) and its grouped-query attention: gradients
against finite differences in float64, every memory layout (forward and backward equal the same op on C-contiguous
copies, inputs and the incoming gradient never written), shape-only arrays giving the same buffers, what each op
saves, and their hidden scratch."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck import check_grad
from memstudy import nn
from memstudy.autograd import Tensor, apply, ops, saved_buffers
from memstudy.autograd.meta import MetaArray
from memstudy.autograd.ops.chunks import CHUNK_ELEMENTS
from memstudy.nn.models.llama import LlamaAttention
from test_gpt_ops import Ctx, hidden_bytes

SETTINGS = settings(max_examples=25, deadline=None)
RNG = np.random.default_rng(0)


# --- layouts -------------------------------------------------------------------------------------------------------

@st.composite
def layout(draw, values: np.ndarray) -> np.ndarray:
    """An array with `values`' shape in a drawn memory layout: C, Fortran, axes permuted in memory, a strided slice
    of a larger buffer (steps 2-3, reversed axes, an offset), or a read-only broadcast view (stride 0 along an axis;
    its values are then `values`' first slice along that axis, repeated)."""
    kind = draw(st.sampled_from(["c", "f", "permuted", "strided", "broadcast"]))
    if kind == "c" or values.size == 0:  # (an empty array has no layout to speak of)
        return values.copy()
    if kind == "f":
        return np.asfortranarray(values)
    if kind == "permuted":
        order = draw(st.permutations(range(values.ndim)))
        return np.ascontiguousarray(values.transpose(order)).transpose(np.argsort(order))
    if kind == "strided":
        steps = [draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in range(values.ndim)]
        big = np.full(tuple(n * abs(k) + 2 for n, k in zip(values.shape, steps)), np.nan, dtype=values.dtype)
        view = big[tuple(slice(1, 1 + n * k, k) if k > 0 else slice(n * -k, 0, k)
                         for n, k in zip(values.shape, steps))]
        view[...] = values
        return view
    axis = draw(st.integers(0, values.ndim - 1))
    return np.broadcast_to(values.take([0], axis=axis), values.shape)


def run_op(op, arrays, consts, grad, needs):
    """forward and backward on raw arrays (a stand-in node): (output, saved arrays, input gradients)."""
    ctx = Ctx(needs)
    out = op.forward(ctx, *arrays, **consts)
    saved = tuple(ctx.saved)
    grads = op.backward(ctx, grad)
    return out, saved, grads


def check_layouts(data, op, arrays, consts, grad, needs):
    """The op on drawn layouts equals the op on C-contiguous copies; nothing written into inputs or the gradient;
    shape-only arrays with the same shapes and strides give the same buffers' shapes, dtypes and strides."""
    laid = [data.draw(layout(np.ascontiguousarray(a))) for a in arrays]
    laid_grad = data.draw(layout(np.ascontiguousarray(grad)))
    reference = run_op(op, [np.ascontiguousarray(a) for a in laid], consts, np.ascontiguousarray(laid_grad), needs)
    before = [a.copy() for a in laid] + [laid_grad.copy()]
    got = run_op(op, laid, consts, laid_grad, needs)
    for a, b in zip(laid + [laid_grad], before):
        np.testing.assert_array_equal(a, b)  # inputs and the incoming gradient unchanged
    np.testing.assert_allclose(got[0], reference[0], rtol=1e-12, atol=1e-12)
    for g, r in zip(got[2], reference[2]):
        assert (g is None) == (r is None)
        if g is not None:
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)
    metas = [MetaArray(a.shape, a.dtype, a.strides) for a in laid]
    meta = run_op(op, metas, consts, MetaArray(laid_grad.shape, laid_grad.dtype, laid_grad.strides), needs)
    real_buffers = [got[0], *got[2]]
    meta_buffers = [meta[0], *meta[2]]
    for r, m in zip(real_buffers, meta_buffers):
        assert (r is None) == (m is None)
        if r is not None:
            assert (m.shape, m.dtype) == (r.shape, r.dtype)
            assert r.size == 0 or m.strides == r.strides
    assert [(s.shape, s.dtype) if s is not None else None for s in meta[1]] == \
        [(s.shape, s.dtype) if s is not None else None for s in got[1]]


def floats(shape, low=-2.0, high=2.0, rng=RNG):
    return rng.uniform(low, high, size=shape)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
any_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)  # 0-d and empty axes too
row_shapes = st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple)  # empty axes too


# --- RMSNorm ------------------------------------------------------------------------------------------------------

def rms_norm_formula(x, w, eps):
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) / max(x.shape[-1], 1) + eps) * w


@SETTINGS
@given(st.data(), row_shapes, st.sampled_from([(True, True), (True, False), (False, True)]))
def test_rms_norm(data, shape, needs):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x, w, g = floats(shape, rng=rng), floats(shape[-1:], rng=rng), floats(shape, rng=rng)
    out = apply(ops.RMSNorm, Tensor(x), Tensor(w), eps=1e-6).data
    np.testing.assert_allclose(out, rms_norm_formula(x, w, 1e-6), rtol=1e-12, atol=1e-12)
    check_grad(lambda a, b: apply(ops.RMSNorm, a, b, eps=1e-6), [x, w])
    check_layouts(data, ops.RMSNorm, [x, w], dict(eps=1e-6), g, needs)


def test_rms_norm_saves_its_input_and_rstd_not_its_normalised_input():
    x = Tensor(RNG.normal(size=(2, 3, 4)), requires_grad=True) * 1.0  # an activation, not a leaf
    w = Tensor(np.ones(4), requires_grad=True)
    roles = [(b.role, b.dtype, b.shape) for b in saved_buffers(apply(ops.RMSNorm, x, w, eps=1e-6), [x])
             if b.kind != "parameter"]
    assert roles == [("x", "float64", (2, 3, 4)), ("rstd", "float64", (2, 3, 1))]
    frozen = Tensor(np.ones(4))  # a frozen weight (LoRA): x and rstd still, for x's gradient, and the weight
    kinds = [(b.role, b.kind) for b in saved_buffers(apply(ops.RMSNorm, x, frozen, eps=1e-6))]
    assert kinds == [("x", "activation"), ("rstd", "activation"), ("weight", "parameter")]


# --- SiLU ---------------------------------------------------------------------------------------------------------

@SETTINGS
@given(st.data(), any_shapes)
def test_silu(data, shape):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x, g = floats(shape, -6, 6, rng=rng), floats(shape, rng=rng)
    np.testing.assert_allclose(apply(ops.SiLU, Tensor(x)).data, x / (1 + np.exp(-x)), rtol=1e-14, atol=1e-15)
    check_grad(lambda a: apply(ops.SiLU, a), [x])
    check_layouts(data, ops.SiLU, [x], {}, g, (True,))


def test_silu_saves_its_input_and_survives_large_inputs():
    x = Tensor(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0], dtype=np.float32), requires_grad=True) * 1.0
    out = apply(ops.SiLU, x)
    np.testing.assert_allclose(out.data, [0.0, -30 / (1 + np.exp(30.0)), 0.0, 30.0, 1000.0], rtol=1e-6)
    assert [(b.op, b.role) for b in saved_buffers(out, [x])] == [("silu", "x")]
    out.backward(np.ones(5, np.float32))


# --- the rotary embedding -----------------------------------------------------------------------------------------

def rotary_formula(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin


def tables(s: int, d: int, theta: float = 10000.0, dtype="float64") -> np.ndarray:
    return apply(ops.RotaryTables, np.arange(s), dim=d, theta=theta, dtype=dtype).data


def test_rotary_tables_are_transformers_default_rope():
    s, d, theta = 5, 8, 500000.0
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    angles = np.outer(np.arange(s), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    t = tables(s, d, theta)
    np.testing.assert_allclose(t[0], np.cos(angles), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(t[1], np.sin(angles), rtol=1e-14, atol=1e-15)
    t32 = tables(s, d, theta, "float32")  # computed in float32 as transformers does, then the model's dtype
    assert t32.dtype == np.float32 and np.abs(t32 - t).max() < 1e-5
    with pytest.raises(ValueError, match="even head dimension"):
        tables(s, 7)


@SETTINGS
@given(st.data(), st.sampled_from([(), (2,), (2, 3)]), st.integers(1, 5), st.sampled_from([2, 4, 6]),
       st.sampled_from(["table", "transformers"]))
def test_rotary(data, lead, s, d, table_shape):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x, g = floats(lead + (s, d), rng=rng), floats(lead + (s, d), rng=rng)
    cos, sin = tables(s, d, 100.0)
    if table_shape == "transformers":  # (1, 1, s, d): cos.unsqueeze(1) of a (1, s, d) table
        cos, sin = cos.reshape((1,) * len(lead) + (s, d)), sin.reshape((1,) * len(lead) + (s, d))
    np.testing.assert_allclose(apply(ops.Rotary, Tensor(x), cos, sin).data, rotary_formula(x, cos, sin),
                               rtol=1e-14, atol=1e-15)
    check_grad(lambda a: apply(ops.Rotary, a, cos, sin), [x])
    check_layouts(data, ops.Rotary, [x, cos, sin], {}, g, (True, False, False))


def test_rotary_saves_only_the_angle_tables_which_every_layer_shares():
    q = Tensor(RNG.normal(size=(2, 4, 5, 6)), requires_grad=True) * 1.0
    k = Tensor(RNG.normal(size=(2, 2, 5, 6)), requires_grad=True) * 1.0
    t = apply(ops.RotaryTables, np.arange(5), dim=6, theta=10000.0, dtype="float64")
    out = apply(ops.Rotary, q, t.data[0], t.data[1]) + apply(ops.Rotary, k, t.data[0], t.data[1]).sum() * 1.0
    # one buffer (cos and sin are views of it), saved by both rotary ops, counted once; nothing else
    assert [(b.op, b.role, b.kind, b.nbytes, b.saved_by) for b in saved_buffers(out, [q, k])] == \
        [("rotary", "cos", "activation", t.nbytes, ("rotary",) * 4)]
    with pytest.raises(ValueError, match="take no gradient"):
        apply(ops.Rotary, q, Tensor(t.data[0], requires_grad=True), t.data[1])
    with pytest.raises(ValueError, match="d even"):
        apply(ops.Rotary, Tensor(RNG.normal(size=(2, 5, 5))), np.ones((5, 5)), np.ones((5, 5)))


# --- grouped-query attention --------------------------------------------------------------------------------------

def repeat_kv_attention(q, k, v):
    """transformers' eager path: K and V repeated a / kv times, causal softmax(q·kᵀ · d^−½)·v per head."""
    a, kv, s, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    k, v = np.repeat(k, a // kv, axis=1), np.repeat(v, a // kv, axis=1)
    scores = q @ np.swapaxes(k, -1, -2) * d ** -0.5
    scores = np.where(np.tri(s, s, dtype=bool), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs @ v


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (6, 3), (4, 1)])
def test_grouped_query_attention_equals_repeated_heads_without_repeating(heads, kv_heads):
    b, s, d = 2, 5, 4
    q, k, v = RNG.normal(size=(b, heads, s, d)), RNG.normal(size=(b, kv_heads, s, d)), RNG.normal(size=(b, kv_heads, s, d))
    attention = LlamaAttention(heads * d, heads, kv_heads, "float64", np.random.default_rng(0))
    merged = attention.core(Tensor(q), Tensor(k), Tensor(v)).data.reshape(b, heads, s, d)
    np.testing.assert_allclose(merged, repeat_kv_attention(q, k, v), rtol=1e-13, atol=1e-14)
    check_grad(lambda q, k, v: attention.core(q, k, v), [q, k, v])
    # what it keeps: q, k, v and the softmax output, never a repeated K or V
    qt, kt, vt = (Tensor(a, requires_grad=True) * 1.0 for a in (q, k, v))
    kept = sorted(bf.nbytes for bf in saved_buffers(attention.core(qt, kt, vt), [qt, kt, vt]))
    assert kept == sorted([q.nbytes, k.nbytes, v.nbytes, b * heads * s * s * 8])


# --- hidden scratch -----------------------------------------------------------------------------------------------

SCRATCH_LIMIT = 6 * CHUNK_ELEMENTS * 8  # a few blocks of float64: independent of the array's size


@pytest.mark.parametrize("layout", ["c", "fortran", "transposed", "broadcast gradient"])
@pytest.mark.parametrize("op", ["rms_norm", "silu", "rotary"])
def test_hidden_scratch_stays_a_few_blocks_on_any_layout(op, layout):
    """16 MiB inputs (128 blocks) in a layout that a reshape would copy: the ops read them in views, so what
    tracemalloc sees beyond the results and what they save stays a few blocks."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 512, 16, 64))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "transposed":  # (b, s, heads, d) viewed as (b, heads, s, d): the model's q and k
        x = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    grad = rng.standard_normal(x.shape)
    if layout == "broadcast gradient":  # read-only, stride 0 along the first axis
        grad = np.broadcast_to(grad[:1], x.shape)
    if op == "rms_norm":
        op_, args, consts, needs = ops.RMSNorm, (x, np.ones(64)), dict(eps=1e-6), (True, True)
    elif op == "silu":
        op_, args, consts, needs = ops.SiLU, (x,), {}, (True,)
    else:
        cos, sin = tables(16, 64)
        op_, args, consts, needs = ops.Rotary, (x, cos, sin), {}, (True, False, False)
    ctx = Ctx(needs)
    assert hidden_bytes(lambda: (op_.forward(ctx, *args, **consts),
                                 *(s for s in ctx.saved if s is not None and not any(s is a for a in args)))) \
        < SCRATCH_LIMIT
    assert hidden_bytes(lambda: op_.backward(ctx, grad)) < SCRATCH_LIMIT


def test_llama_module_layers():
    """nn.RMSNorm is the op with a weight of ones."""
    norm = nn.RMSNorm(4, "float64", eps=1e-5)
    x = RNG.normal(size=(3, 4))
    np.testing.assert_allclose(norm(Tensor(x)).data, rms_norm_formula(x, np.ones(4), 1e-5), rtol=1e-14)

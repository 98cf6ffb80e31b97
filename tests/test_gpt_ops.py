"""The GPT's ops: gradients against finite differences (float64), what each saves, and their hidden scratch."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck import check_grad
from memstudy import nn
from memstudy.autograd import Tensor, apply, no_grad, ops, saved_buffers
from memstudy.autograd.ops.chunks import CHUNK_ELEMENTS

SETTINGS = settings(max_examples=20, deadline=None)
RNG = np.random.default_rng(0)


def floats(shape, low=-2.0, high=2.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False, allow_subnormal=False))


def saved(out, inputs=()):
    """(role, dtype, shape) of each distinct non-parameter buffer the graph behind `out` holds."""
    return [(b.role, b.dtype, b.shape) for b in saved_buffers(out, inputs) if b.kind != "parameter"]


# --- gradients -----------------------------------------------------------------------------------------

@SETTINGS
@given(st.data(), st.sampled_from([(), (2,), (2, 3)]), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
def test_batched_matmul(data, lead, m, k, n):
    a = data.draw(floats(lead + (m, k)))
    b = data.draw(floats(lead + (k, n)))
    check_grad(lambda s, t: apply(ops.BatchedMatMul, s, t), [a, b])
    check_grad(lambda s: apply(ops.BatchedMatMul, s, Tensor(b)), [a])
    check_grad(lambda t: apply(ops.BatchedMatMul, Tensor(a), t), [b])


def test_batched_matmul_broadcasts_leading_axes_and_rejects_bad_shapes():
    a, b = RNG.normal(size=(2, 3, 4, 5)), RNG.normal(size=(3, 5, 2))
    check_grad(lambda s, t: apply(ops.BatchedMatMul, s, t), [a, b])
    with pytest.raises(ValueError, match="batched_matmul"):
        apply(ops.BatchedMatMul, Tensor(a), Tensor(a))


@SETTINGS
@given(st.data(), st.sampled_from([(3,), (2, 4), (2, 3, 5)]), st.sampled_from([-1, 0]))
def test_softmax(data, shape, axis):
    x = data.draw(floats(shape, -3, 3))
    check_grad(lambda t: apply(ops.Softmax, t, axis=axis), [x])


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    x = np.array([[1000.0, 1001.0, 999.0], [-5.0, 0.0, 5.0]])
    out = apply(ops.Softmax, Tensor(x), axis=-1).data
    np.testing.assert_allclose(out.sum(axis=-1), 1.0)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 5, 5), (2, 3, 4)])
def test_causal_mask_then_softmax(shape):
    x = RNG.normal(size=shape)
    check_grad(lambda t: apply(ops.Softmax, apply(ops.CausalMask, t), axis=-1), [x])
    out = apply(ops.CausalMask, Tensor(x)).data
    rows, cols = shape[-2:]
    above = np.triu(np.ones((rows, cols), dtype=bool), 1)
    assert np.all(np.isneginf(out[..., above])) and np.array_equal(out[..., ~above], x[..., ~above])
    assert out.dtype == x.dtype


def test_causal_mask_keeps_float32():
    x = RNG.normal(size=(2, 3, 3)).astype(np.float32)
    assert apply(ops.CausalMask, Tensor(x)).dtype == np.float32


@SETTINGS
@given(st.data(), hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
def test_gelu(data, shape):
    check_grad(lambda t: apply(ops.GELU, t), [data.draw(floats(shape, -4, 4))])


def test_gelu_is_gpt2s_tanh_approximation_over_several_blocks():
    x = np.linspace(-6, 6, 3 * CHUNK_ELEMENTS + 7).reshape(-1, 1)  # several blocks, the last one partial
    expected = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    t = Tensor(x, requires_grad=True)
    out = apply(ops.GELU, t)
    np.testing.assert_allclose(out.data, expected, rtol=1e-14, atol=1e-15)
    out.backward(np.ones_like(x))
    h = 1e-6
    numeric = (0.5 * (x + h) * (1 + np.tanh(math.sqrt(2 / math.pi) * ((x + h) + 0.044715 * (x + h) ** 3)))
               - 0.5 * (x - h) * (1 + np.tanh(math.sqrt(2 / math.pi) * ((x - h) + 0.044715 * (x - h) ** 3)))) / (2 * h)
    np.testing.assert_allclose(t.grad, numeric, rtol=1e-7, atol=1e-8)


@SETTINGS
@given(st.data(), st.sampled_from([(1, 3), (4, 5), (2, 3, 6)]), st.booleans())
def test_layer_norm(data, shape, bias):
    x = data.draw(floats(shape, -3, 3))
    w = data.draw(floats(shape[-1:], 0.5, 2))
    b = data.draw(floats(shape[-1:]))
    x = x + np.arange(shape[-1]) * 0.3  # rows with a spread: finite differences of 1/std stay well scaled
    if bias:
        check_grad(lambda t, u, v: apply(ops.LayerNorm, t, u, v, eps=1e-5), [x, w, b])
        check_grad(lambda u, v: apply(ops.LayerNorm, Tensor(x), u, v, eps=1e-5), [w, b])
    else:
        check_grad(lambda t, u: apply(ops.LayerNorm, t, u, eps=1e-5), [x, w])
    check_grad(lambda t: apply(ops.LayerNorm, t, Tensor(w), eps=1e-5), [x])


def test_layer_norm_over_several_blocks_matches_the_formula():
    x = RNG.normal(size=(3 * CHUNK_ELEMENTS // 48 + 5, 48))
    w, b = RNG.normal(size=48), RNG.normal(size=48)
    out = apply(ops.LayerNorm, Tensor(x), Tensor(w), Tensor(b), eps=1e-5).data
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_dropout_gradient_with_a_fixed_generator():
    x = RNG.normal(size=(3, 4, 5))
    check_grad(lambda t: apply(ops.Dropout, t, p=0.3, rng=np.random.default_rng(7)), [x])


def test_dropout_drops_p_of_the_elements_and_scales_the_rest():
    x = np.ones((400, 500), dtype=np.float32)  # several draw blocks
    out = apply(ops.Dropout, Tensor(x, requires_grad=True), p=0.25, rng=np.random.default_rng(1)).data
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.005
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert out.dtype == np.float32
    a = apply(ops.Dropout, Tensor(x), p=0.25, rng=np.random.default_rng(1)).data
    b = apply(ops.Dropout, Tensor(x), p=0.25, rng=np.random.default_rng(2)).data
    assert np.array_equal(a, out) and not np.array_equal(a, b)  # the generator decides the mask


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        apply(ops.Dropout, Tensor(np.ones(3)), p=p, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(p)


def test_embedding_gradient_accumulates_repeated_indices():
    weight = RNG.normal(size=(7, 5))
    idx = np.array([[0, 3, 3], [6, 0, 3]])
    check_grad(lambda w: apply(ops.Embedding, idx, w), [weight])
    w = Tensor(weight, requires_grad=True)
    out = apply(ops.Embedding, idx, w)
    np.testing.assert_array_equal(out.data, weight[idx])
    out.backward(np.ones(out.shape))
    np.testing.assert_array_equal(w.grad[:, 0], [2, 0, 0, 3, 0, 0, 1])
    with pytest.raises(ValueError, match="integers"):
        apply(ops.Embedding, idx.astype(float), w)


def test_slice_pieces_add_up_to_the_whole_gradient():
    x = RNG.normal(size=(2, 3, 9))
    check_grad(lambda t: apply(ops.Slice, t, axis=2, start=3, stop=6), [x])
    check_grad(lambda t: apply(ops.Slice, t, axis=-1, start=0, stop=3) * 2.0
               + apply(ops.Slice, t, axis=-1, start=6, stop=9), [x])


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (2, 1, 3, 4)])
def test_cross_entropy_over_positions(shape):
    logits = RNG.normal(size=shape)
    labels = RNG.integers(0, shape[-1], size=(shape[:-1][0], shape[:-1][-1] + 1) if len(shape) == 3
                          else shape[:-1])
    labels = labels[:, 1:] if len(shape) == 3 else labels  # a strided view, as the GPT's targets are
    check_grad(lambda t: nn.cross_entropy(t, labels), [logits])
    flat = nn.cross_entropy(Tensor(logits.reshape(-1, shape[-1])), labels.reshape(-1)).data
    assert abs(float(nn.cross_entropy(Tensor(logits), labels).data) - float(flat)) < 1e-12
    with pytest.raises(ValueError, match="labels"):
        nn.cross_entropy(Tensor(logits), labels.reshape(-1)[:-1])


# --- what each op saves --------------------------------------------------------------------------------

def test_softmax_saves_its_output_only():
    x = Tensor(RNG.normal(size=(2, 3, 4)), requires_grad=True)
    out = apply(ops.Softmax, x, axis=-1)
    (buffer,) = saved_buffers(out)
    assert (buffer.role, buffer.op) == ("out", "softmax") and buffer.nbytes == out.nbytes


def test_gelu_saves_its_input_and_layer_norm_its_input_mean_and_rstd():
    x = Tensor(RNG.normal(size=(2, 3, 4)), requires_grad=True) * 1.0  # an activation, not a leaf
    assert saved(apply(ops.GELU, x), [x]) == [("x", "float64", (2, 3, 4))]
    w = Tensor(np.ones(4), requires_grad=True)
    out = apply(ops.LayerNorm, x, w, Tensor(np.zeros(4), requires_grad=True), eps=1e-5)
    assert saved(out, [x]) == [("x", "float64", (2, 3, 4)), ("mean", "float64", (2, 3, 1)),
                               ("rstd", "float64", (2, 3, 1))]


def test_dropout_saves_a_one_byte_mask_and_nothing_at_p_0():
    x = Tensor(RNG.normal(size=(3, 4)).astype(np.float32), requires_grad=True)  # a leaf: never saved here
    out = apply(ops.Dropout, x, p=0.5, rng=np.random.default_rng(0))
    assert saved(out) == [("mask", "bool", (3, 4))]
    identity = apply(ops.Dropout, x, p=0.0, rng=None)
    assert identity.data is x.data and saved(identity) == []
    identity.backward(np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(x.grad, 1)
    assert nn.Dropout(0.5)(x, np.random.default_rng(0), training=False) is x  # evaluation: no op at all


def test_embedding_saves_the_indices_and_views_save_nothing():
    idx = RNG.integers(0, 7, size=(2, 3))
    w = Tensor(RNG.normal(size=(7, 4)), requires_grad=True)
    emb = apply(ops.Embedding, idx, w)
    assert saved(emb, [idx]) == [("indices", "int64", (2, 3))]
    x = Tensor(RNG.normal(size=(2, 3, 12)), requires_grad=True)
    piece = apply(ops.Slice, x, axis=2, start=4, stop=8).reshape(2, 3, 2, 2).transpose(0, 2, 1, 3)
    assert np.shares_memory(piece.data, x.data) and saved(piece) == []


def test_batched_matmul_of_views_saves_their_one_buffer():
    qkv = Tensor(RNG.normal(size=(2, 5, 12)), requires_grad=True) * 1.0  # c_attn's output stands here
    heads = [apply(ops.Slice, qkv, axis=2, start=4 * i, stop=4 * i + 4).reshape(2, 5, 2, 2).transpose(0, 2, 1, 3)
             for i in range(3)]
    q, k, v = heads
    att = apply(ops.BatchedMatMul, q, k.transpose(0, 1, 3, 2))
    out = apply(ops.BatchedMatMul, apply(ops.Softmax, att, axis=-1), v)
    buffers = saved_buffers(out)
    assert [(b.role, b.kind, b.nbytes) for b in buffers] == [("a", "activation", qkv.nbytes),
                                                             ("out", "activation", att.nbytes)]


# --- hidden scratch: what numpy allocates inside an op, invisible to the ledger ------------------------

def hidden_bytes(run) -> int:
    """tracemalloc's peak while `run()` runs, less the arrays it returns (and what was live before)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    kept = sum(a.nbytes for a in (result if isinstance(result, tuple) else (result,)) if a is not None)
    return peak - before - kept


class Ctx:
    """A stand-in node for calling an op's forward and backward directly (records what it saved)."""

    def __init__(self, needs):
        self.needs_input_grad = needs
        self.parents = (None,) * len(needs)
        self.saved = ()

    def save(self, **arrays):
        self.saved = tuple(arrays.values())

    @property
    def saved_tensors(self):
        return self.saved


SCRATCH_LIMIT = 6 * CHUNK_ELEMENTS * 8  # a few blocks of float64: independent of the array's size


@pytest.mark.parametrize("op", ["gelu", "layer_norm", "dropout", "softmax"])
def test_hidden_scratch_stays_a_few_blocks_while_the_arrays_grow(op):
    x = np.random.default_rng(0).standard_normal((64, 512, 64))  # 16 MiB: 32 blocks
    grad = np.random.default_rng(1).standard_normal(x.shape)
    w, b = np.ones(64), np.zeros(64)
    ctx = Ctx((True, True, True))
    if op == "gelu":
        fwd, bwd = (lambda: ops.GELU.forward(ctx, x)), (lambda: ops.GELU.backward(ctx, grad))
    elif op == "layer_norm":
        fwd = lambda: (ops.LayerNorm.forward(ctx, x, w, b, eps=1e-5), *ctx.saved[1:3])  # noqa: E731
        bwd = lambda: ops.LayerNorm.backward(ctx, grad)  # noqa: E731
    elif op == "dropout":  # the draw's scratch is freed before the output exists: measure the draw itself
        assert hidden_bytes(lambda: ops.keep_mask(np.random.default_rng(0), x, 0.1)) < SCRATCH_LIMIT
        fwd = lambda: (ops.Dropout.forward(ctx, x, p=0.1, rng=np.random.default_rng(0)), ctx.saved[0])  # noqa
        bwd = lambda: ops.Dropout.backward(ctx, grad)  # noqa: E731
    else:
        fwd = lambda: ops.Softmax.forward(ctx, x, axis=-1)  # noqa: E731
        bwd = lambda: ops.Softmax.backward(ctx, grad)  # noqa: E731
    assert hidden_bytes(fwd) < SCRATCH_LIMIT
    assert hidden_bytes(bwd) < SCRATCH_LIMIT

"""The image ops (conv2d, max/avg/global pooling, batch norm, flatten) against finite differences (float64),
against direct definitions, and what each keeps for backward."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck import check_grad, rel_error
from memstudy.autograd import Tensor, apply, no_grad, ops, saved_buffers
from memstudy.measure.ledger import Ledger

RNG = np.random.default_rng(1234)

# (N, C, H, W, O, kernel, stride, padding): same-size, strided, unpadded, 1×1, padding wider than the input
GEOMETRIES = [
    (2, 2, 5, 4, 3, 3, 1, 1),
    (2, 2, 6, 7, 2, 3, 2, 1),
    (1, 3, 5, 5, 2, 2, 2, 0),
    (2, 3, 3, 4, 2, 1, 1, 0),
    (1, 2, 3, 3, 2, 3, 3, 2),
]


def direct_conv(x, w, b, stride, padding):
    """The convolution by its definition: a sum over the kernel at every output position (zero padding)."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    out_h, out_w = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    out = np.zeros((n, o, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out if b is None else out + b[None, :, None, None]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7), o=st.integers(1, 3),
       k=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2), bias=st.booleans())
def test_conv2d_forward_matches_the_definition(n, c, h, w, o, k, stride, padding, bias):
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    x = RNG.normal(size=(n, c, h, w))
    weight = RNG.normal(size=(o, c, k, k))
    b = RNG.normal(size=o) if bias else None
    inputs = (x, weight) if b is None else (x, weight, b)
    out = apply(ops.Conv2d, *inputs, stride=stride, padding=padding).data
    assert rel_error(out, direct_conv(x, weight, b, stride, padding)) < 1e-12


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 7), w=st.integers(1, 7), k=st.integers(1, 4), stride=st.integers(1, 3),
       padding=st.integers(0, 2))
def test_col2im_is_the_adjoint_of_im2col(h, w, k, stride, padding):
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    x = RNG.normal(size=(2, 3, h, w))
    columns = ops.im2col(x, k, stride, padding)
    c = RNG.normal(size=columns.shape)
    # <im2col(x), c> = <x, col2im(c)>: col2im is exactly the transpose of the linear map im2col
    assert np.isclose(np.vdot(columns, c), np.vdot(x, ops.col2im(c, x.shape, k, stride, padding)), rtol=1e-12)


@pytest.mark.parametrize("save", ["input", "columns"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "N{}C{}H{}W{}O{}k{}s{}p{}".format(*g))
def test_conv2d_gradcheck(geometry, bias, save):
    n, c, h, w, o, k, stride, padding = geometry
    inputs = [RNG.normal(size=(n, c, h, w)), RNG.normal(size=(o, c, k, k))] + ([RNG.normal(size=o)] if bias else [])
    check_grad(lambda *t: apply(ops.Conv2d, *t, stride=stride, padding=padding, save=save), inputs)


def test_conv2d_saves_the_input_or_the_columns():
    x = Tensor(RNG.normal(size=(2, 3, 6, 6)))
    w = Tensor(RNG.normal(size=(4, 3, 3, 3)), requires_grad=True)
    h = Tensor(RNG.normal(size=(2, 3, 6, 6)), requires_grad=True)  # an input whose gradient is needed too
    by_input = {b.role: b for b in saved_buffers(apply(ops.Conv2d, h, w, padding=1, save="input"))}
    by_columns = {b.role: b for b in saved_buffers(apply(ops.Conv2d, h, w, padding=1, save="columns"))}
    assert by_input["x"].shape == (2, 3, 6, 6) and "columns" not in by_input
    assert by_columns["columns"].shape == (2, 3, 3, 3, 6, 6) and "x" not in by_columns
    assert by_columns["columns"].nbytes == 9 * by_input["x"].nbytes  # k² = 9 times the input
    # only what backward reads: the weight's gradient needs x (or the columns), the input's needs the weight
    frozen = apply(ops.Conv2d, h, Tensor(w.data), padding=1, save="columns")
    assert [b.role for b in saved_buffers(frozen)] == ["weight"]
    assert [b.role for b in saved_buffers(apply(ops.Conv2d, x, w, padding=1, save="input"))] == ["x"]


@pytest.mark.parametrize("save", ["input", "columns"])
def test_the_ledger_sees_the_column_workspaces(save):
    n, c, side, o = 2, 3, 6, 4
    columns_bytes = n * c * 9 * side * side * 8
    h = Tensor(RNG.normal(size=(n, c, side, side)), requires_grad=True)
    w = Tensor(RNG.normal(size=(o, c, 3, 3)), requires_grad=True)
    ledger = Ledger()
    ledger.register(h.data, "input")
    ledger.register(w.data, "parameter", leaf=w)
    with ledger:
        out = apply(ops.Conv2d, h, w, padding=1, save=save)
        out.backward(np.ones(out.shape))
    account = ledger.finish()
    workspaces = [(b.op, b.phase, b.nbytes, b.category) for b in account.buffers if b.op.startswith("conv2d.")]
    rebuilt = [("conv2d.columns", "forward", columns_bytes, "temporary"),
               ("conv2d.columns", "backward", columns_bytes, "temporary")]
    expected = (rebuilt if save == "input" else []) + [("conv2d.grad_columns", "backward", columns_bytes,
                                                        "temporary")]
    assert workspaces == expected
    saved = [b for b in account.buffers if b.category == "activation"]
    assert sum(b.nbytes for b in saved) == (0 if save == "input" else columns_bytes)  # h and w are registered


def test_conv2d_under_no_grad_saves_nothing_and_reports_its_columns():
    ledger = Ledger()
    x = RNG.normal(size=(1, 2, 4, 4))
    with ledger, no_grad():
        apply(ops.Conv2d, x, Tensor(RNG.normal(size=(3, 2, 3, 3)), requires_grad=True), padding=1, save="columns")
    account = ledger.finish()
    assert [b.op for b in account.buffers] == ["conv2d.columns", "conv2d"]
    assert account.activation_bytes == 0


def test_conv2d_rejects_bad_shapes():
    with pytest.raises(ValueError, match="does not fit"):
        apply(ops.Conv2d, np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="square weight"):
        apply(ops.Conv2d, np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="save must be one of"):
        apply(ops.Conv2d, np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), save="outputs")


def distinct(shape):
    """Values with gaps of at least 0.01 between any two: no window's maximum is within eps of a tie."""
    return (RNG.permutation(int(np.prod(shape))) * 0.01 - 1.0).reshape(shape)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (2, 1), (3, 3)])
def test_max_pool_gradcheck(kernel, stride):
    check_grad(lambda t: apply(ops.MaxPool2d, t, kernel=kernel, stride=stride), [distinct((2, 2, 7, 6))])


def test_max_pool_saves_one_byte_per_output_and_the_first_maximum_wins():
    x = Tensor(np.zeros((2, 3, 4, 6)), requires_grad=True)  # every window is a tie
    out = apply(ops.MaxPool2d, x, kernel=2, stride=2)
    (held,) = saved_buffers(out)
    assert (held.role, held.dtype, held.shape, held.nbytes) == ("positions", "uint8", (2, 3, 2, 3), 2 * 3 * 2 * 3)
    out.backward(np.ones(out.shape))
    expected = np.zeros((2, 3, 4, 6))
    expected[:, :, 0::2, 0::2] = 1.0  # the top-left of each window: its first position
    np.testing.assert_array_equal(x.grad, expected)


def test_max_pool_positions_within_the_window():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 2, 1] = 5.0  # row 2, column 1 of the one 3×3 window: position 3·2 + 1 = 7
    out = apply(ops.MaxPool2d, Tensor(x, requires_grad=True), kernel=3)
    assert out._node.saved[0].item() == 7
    with pytest.raises(ValueError, match="one byte"):
        apply(ops.MaxPool2d, np.zeros((1, 1, 17, 17)), kernel=17)
    with pytest.raises(ValueError, match="does not fit"):
        apply(ops.MaxPool2d, np.zeros((1, 1, 1, 4)), kernel=2)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (2, 1)])
def test_avg_pool_gradcheck_and_saves_nothing(kernel, stride):
    check_grad(lambda t: apply(ops.AvgPool2d, t, kernel=kernel, stride=stride), [RNG.normal(size=(2, 2, 7, 6))])
    x = Tensor(RNG.normal(size=(1, 1, 4, 4)), requires_grad=True)
    out = apply(ops.AvgPool2d, x, kernel=2)
    assert saved_buffers(out) == []
    np.testing.assert_allclose(out.data[0, 0, 0, 0], x.data[0, 0, :2, :2].mean())


def test_global_avg_pool_gradcheck_and_saves_nothing():
    check_grad(lambda t: apply(ops.GlobalAvgPool2d, t), [RNG.normal(size=(2, 3, 4, 5))])
    x = Tensor(RNG.normal(size=(2, 3, 4, 5)), requires_grad=True)
    out = apply(ops.GlobalAvgPool2d, x)
    np.testing.assert_allclose(out.data, x.data.mean(axis=(2, 3)), rtol=1e-14)
    assert saved_buffers(out) == []


def test_flatten_is_a_view_and_gradchecks():
    check_grad(lambda t: apply(ops.Flatten, t), [RNG.normal(size=(2, 3, 2, 2))])
    x = RNG.normal(size=(2, 3, 2, 2))
    out = apply(ops.Flatten, Tensor(x, requires_grad=True))
    assert out.shape == (2, 12) and np.shares_memory(out.data, x)


def bn_inputs(n=3, c=2, h=3, w=4):
    return [RNG.normal(size=(n, c, h, w)) * 2 + 0.5, RNG.uniform(0.5, 1.5, c), RNG.normal(size=c)]


def test_batch_norm_gradcheck():
    check_grad(lambda *t: apply(ops.BatchNorm2d, *t), bn_inputs())


def test_batch_norm_eval_gradcheck():
    mean, var = RNG.normal(size=2), RNG.uniform(0.5, 2.0, 2)
    check_grad(lambda *t: apply(ops.BatchNorm2dEval, *t, running_mean=mean, running_var=var), bn_inputs())


def test_batch_norm_normalises_and_updates_the_running_statistics():
    x, weight, bias = bn_inputs(4, 3, 5, 5)
    running_mean, running_var = np.full(3, 0.2), np.full(3, 1.5)
    out = apply(ops.BatchNorm2d, x, weight, bias, momentum=0.1, running_mean=running_mean,
                running_var=running_var).data
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * weight[:, None, None] + \
        bias[:, None, None]
    assert rel_error(out, expected) < 1e-12
    count = 4 * 5 * 5
    assert rel_error(running_mean, 0.9 * 0.2 + 0.1 * mean) < 1e-14
    assert rel_error(running_var, 0.9 * 1.5 + 0.1 * var * count / (count - 1)) < 1e-14


def test_batch_norm_saves_its_input_and_two_per_channel_vectors():
    x, weight, bias = (Tensor(a, requires_grad=True) for a in bn_inputs(2, 3, 4, 4))
    held = saved_buffers(apply(ops.BatchNorm2d, x, weight, bias), [x])
    assert sorted((b.role, b.shape) for b in held) == [("invstd", (3,)), ("mean", (3,)), ("weight", (3,)),
                                                      ("x", (2, 3, 4, 4))]
    # only β needs a gradient: nothing is kept
    only_bias = apply(ops.BatchNorm2d, Tensor(x.data), Tensor(weight.data), bias)
    assert saved_buffers(only_bias) == []

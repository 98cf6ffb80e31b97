"""Every primitive's backward against central finite differences, on random shapes (float64)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck import GradCheckError, check_grad, rel_error
from memstudy import nn
from memstudy.autograd import Function, Tensor, apply

SETTINGS = settings(max_examples=25, deadline=None)

sides = st.integers(1, 4)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def floats_array(shape, low=-2.0, high=2.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False, allow_subnormal=False))


def away_from_zero(x: np.ndarray, gap: float = 0.1) -> np.ndarray:
    """Shift values off 0 so that a kink (ReLU) is never within eps of a sample point."""
    return np.where(x >= 0, x + gap, x - gap)


@st.composite
def array_pair(draw, low=-2.0, high=2.0, num_shapes=2):
    shape_a, shape_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=0, max_dims=3,
                                                              max_side=4)).input_shapes
    return draw(floats_array(shape_a, low, high)), draw(floats_array(shape_b, low, high))


# --- the checker itself -------------------------------------------------------------------------------


class Identity(Function):
    name = "identity"

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return (grad,)


class WrongIdentity(Identity):
    """Identity whose backward doubles the gradient."""

    name = "wrong_identity"

    @staticmethod
    def backward(ctx, grad):
        return (2 * grad,)


class SlightlyWrongIdentity(Identity):
    """Off by a relative 1e-4: the checker's tolerance must be tighter than that."""

    name = "slightly_wrong_identity"

    @staticmethod
    def backward(ctx, grad):
        return (grad * (1 + 1e-4),)


class TransposedMatMulGrad(Function):
    """a @ b with the gradient of b computed as (a.T @ grad).T on a square problem: right shape, wrong values."""

    name = "bad_matmul"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a=a, b=b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return grad @ b.T, (a.T @ grad).T


def test_checker_passes_a_correct_custom_function():
    x = np.random.default_rng(0).normal(size=(3, 4))
    result = check_grad(lambda t: apply(Identity, t), [x])
    assert result.ok and result.max_abs_error < 1e-8


@pytest.mark.parametrize("fn", [WrongIdentity, SlightlyWrongIdentity])
def test_checker_catches_a_wrong_backward(fn):
    x = np.random.default_rng(0).normal(size=(3, 4))
    with pytest.raises(GradCheckError, match="input 0"):
        check_grad(lambda t: apply(fn, t), [x])
    result = check_grad(lambda t: apply(fn, t), [x], raise_on_failure=False)
    assert not result.ok
    assert not result
    assert result.max_abs_error > 1e-5


def test_checker_catches_a_wrong_gradient_of_the_right_shape():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    result = check_grad(lambda s, t: apply(TransposedMatMulGrad, s, t), [a, b], raise_on_failure=False)
    assert not result.ok
    assert any(p.startswith("input 1") for p in result.problems)
    assert not any(p.startswith("input 0") for p in result.problems)


def test_checker_catches_a_missing_gradient():
    class NoGrad(Identity):
        @staticmethod
        def backward(ctx, grad):
            return (None,)

    result = check_grad(lambda t: apply(NoGrad, t), [np.ones(3)], raise_on_failure=False)
    assert not result.ok and "no gradient" in result.problems[0]


def test_checker_catches_a_wrong_gradient_shape():
    class Summed(Identity):
        @staticmethod
        def backward(ctx, grad):
            return (grad.sum(axis=0),)

    result = check_grad(lambda t: apply(Summed, t), [np.ones((2, 3))], raise_on_failure=False)
    assert not result.ok and "shape" in result.problems[0]


def test_checker_uses_a_non_uniform_upstream_gradient():
    # a backward that ignores the upstream gradient (returns ones) is right for sum(x) but not for sum(w * x)
    class IgnoresUpstream(Identity):
        @staticmethod
        def backward(ctx, grad):
            return (np.ones_like(grad),)

    result = check_grad(lambda t: apply(IgnoresUpstream, t), [np.ones((2, 3))], raise_on_failure=False)
    assert not result.ok


# --- matmul and linear -------------------------------------------------------------------------------


@SETTINGS
@given(st.data(), sides, sides, sides)
def test_matmul(data, n, k, m):
    a = data.draw(floats_array((n, k)))
    b = data.draw(floats_array((k, m)))
    check_grad(lambda s, t: s @ t, [a, b])
    check_grad(lambda s: s @ Tensor(b), [a])  # only a needs grad: b is saved, a is not
    check_grad(lambda t: Tensor(a) @ t, [b])  # only b needs grad
    check_grad(lambda t: a @ t, [b])  # a plain ndarray on the left


@SETTINGS
@given(st.data(), sides, sides, sides, st.booleans())
def test_linear(data, batch, fan_in, fan_out, bias):
    x = data.draw(floats_array((batch, fan_in)))
    w = data.draw(floats_array((fan_out, fan_in)))
    b = data.draw(floats_array((fan_out,)))
    if bias:
        check_grad(lambda xt, wt, bt: nn.linear(xt, wt, bt), [x, w, b])
        check_grad(lambda wt, bt: nn.linear(x, wt, bt), [w, b])  # input without grad, as in a first layer
        check_grad(lambda xt: nn.linear(xt, Tensor(w), Tensor(b)), [x])
    else:
        check_grad(lambda xt, wt: nn.linear(xt, wt), [x, w])
        check_grad(lambda wt: nn.linear(x, wt), [w])
        check_grad(lambda xt: nn.linear(xt, Tensor(w)), [x])


@SETTINGS
@given(st.data(), sides, sides, st.booleans(), st.sampled_from([(), (2, 3)]))
def test_linear_single_example_and_extra_axes(data, fan_in, fan_out, bias, lead):
    """A 1-d input (one example, as in the seed's per-example formulas) or an input with extra leading
    axes gets full-shape weight and bias gradients."""
    x = data.draw(floats_array(lead + (fan_in,)))
    w = data.draw(floats_array((fan_out, fan_in)))
    b = data.draw(floats_array((fan_out,)))
    if bias:
        check_grad(lambda xt, wt, bt: nn.linear(xt, wt, bt), [x, w, b])
    else:
        check_grad(lambda xt, wt: nn.linear(xt, wt), [x, w])


# --- element-wise binary ops with broadcasting --------------------------------------------------------

BROADCAST_CASES = [((3, 4), (4,)), ((4,), (3, 4)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)), ((3, 1), (2, 3, 4)),
                   ((), (2, 3)), ((2, 3), ())]
BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shape_a,shape_b", BROADCAST_CASES)
def test_binary_broadcasting_cases(op, shape_a, shape_b):
    rng = np.random.default_rng(hash((shape_a, shape_b)) % 2**32)
    a, b = rng.normal(size=shape_a), rng.normal(size=shape_b)
    fn = BINARY[op]
    check_grad(fn, [a, b])
    check_grad(lambda s: fn(s, Tensor(b)), [a])
    check_grad(lambda t: fn(Tensor(a), t), [b])
    check_grad(lambda s: fn(s, b), [a])  # plain ndarray operand on the right
    check_grad(lambda t: fn(a, t), [b])  # and on the left


@SETTINGS
@given(array_pair(), st.sampled_from(sorted(BINARY)))
def test_binary_broadcasting_random(pair, op):
    check_grad(BINARY[op], list(pair))


@SETTINGS
@given(array_pair(low=0.5, high=2.0))
def test_division(pair):
    check_grad(lambda a, b: a / b, list(pair))


# --- unary ops, scalars -------------------------------------------------------------------------------


@SETTINGS
@given(shapes.flatmap(floats_array), st.floats(-3, 3).filter(lambda c: abs(c) > 1e-3))
def test_scale_neg_and_python_scalars(x, c):
    check_grad(lambda t: t * c, [x])
    check_grad(lambda t: c * t, [x])
    check_grad(lambda t: t / c, [x])
    check_grad(lambda t: -t, [x])
    check_grad(lambda t: t + c, [x])
    check_grad(lambda t: c - t, [x])
    check_grad(lambda t: t - c, [x])


@SETTINGS
@given(shapes.flatmap(floats_array))
def test_exp_sigmoid_tanh_square_sum_squares(x):
    check_grad(lambda t: t.exp(), [x])
    check_grad(lambda t: t.sigmoid(), [x])
    check_grad(lambda t: t.tanh(), [x])
    check_grad(lambda t: t ** 2, [x])
    check_grad(lambda t: t.square(), [x])
    check_grad(lambda t: t.sum_squares(), [x])
    check_grad(lambda t: t ** 3, [x])


@SETTINGS
@given(shapes.flatmap(lambda s: floats_array(s, 0.5, 3.0)))
def test_log_and_pow_on_positive_inputs(x):
    check_grad(lambda t: t.log(), [x])
    check_grad(lambda t: t ** 0.5, [x])
    check_grad(lambda t: t ** -1, [x])
    check_grad(lambda t: t ** 1.7, [x])
    check_grad(lambda t: 2.0 / t, [x])


@SETTINGS
@given(shapes.flatmap(floats_array))
def test_relu_away_from_zero(x):
    x = away_from_zero(x)
    check_grad(lambda t: t.relu(), [x])
    check_grad(lambda t: nn.ReLU()(t), [x])


# --- reductions and shape ops -------------------------------------------------------------------------


@st.composite
def reduction_case(draw):
    x = draw(shapes.flatmap(floats_array))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-x.ndim, x.ndim - 1))
    else:
        axis = draw(hnp.valid_tuple_axes(x.ndim, min_size=1))
    return x, axis, draw(st.booleans())


@SETTINGS
@given(reduction_case())
def test_sum_and_mean(case):
    x, axis, keepdims = case
    check_grad(lambda t: t.sum(axis=axis, keepdims=keepdims), [x])
    check_grad(lambda t: t.mean(axis=axis, keepdims=keepdims), [x])
    expected_shape = np.sum(x, axis=axis, keepdims=keepdims).shape
    assert Tensor(x).sum(axis=axis, keepdims=keepdims).shape == expected_shape


@SETTINGS
@given(shapes.flatmap(floats_array), st.data())
def test_transpose(x, data):
    perm = data.draw(st.permutations(range(x.ndim)))
    negative = data.draw(st.lists(st.booleans(), min_size=x.ndim, max_size=x.ndim))
    axes = tuple(a - x.ndim if neg else a for a, neg in zip(perm, negative))  # numpy accepts negative axes
    check_grad(lambda t: t.transpose(*axes), [x])
    check_grad(lambda t: t.T, [x])
    assert Tensor(x).transpose(*axes).shape == np.transpose(x, axes).shape


@SETTINGS
@given(shapes.flatmap(floats_array), st.data())
def test_reshape(x, data):
    n = x.size
    candidates = [(n,), (-1,), (1, n), (n, 1), tuple(reversed(x.shape)), (1,) + x.shape]
    if n % 2 == 0:
        candidates += [(2, n // 2), (2, -1)]
    shape = data.draw(st.sampled_from(candidates))
    check_grad(lambda t: t.reshape(shape), [x])
    check_grad(lambda t: t.reshape(*shape), [x])


# --- losses -------------------------------------------------------------------------------------------


@SETTINGS
@given(st.data(), st.integers(1, 5), st.integers(1, 5))
def test_cross_entropy(data, batch, classes):
    logits = data.draw(floats_array((batch, classes), -5, 5))
    labels = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch)))
    check_grad(lambda t: nn.cross_entropy(t, labels), [logits])
    # the loss value is the mean of -log softmax[label]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(batch), labels].mean()
    assert rel_error(nn.cross_entropy(Tensor(logits), labels).data, expected) < 1e-12


def test_cross_entropy_is_stable_for_large_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 800.0, 0.0]])
    labels = np.array([0, 2])
    t = Tensor(logits, requires_grad=True)
    loss = nn.cross_entropy(t, labels)
    assert np.isfinite(loss.data) and abs(loss.item() - 400.0) < 1e-9
    loss.backward()
    assert np.all(np.isfinite(t.grad))


@SETTINGS
@given(st.data(), st.integers(1, 4), st.integers(1, 4))
def test_mse(data, batch, width):
    pred = data.draw(floats_array((batch, width)))
    target = data.draw(floats_array((batch, width)))
    row_target = data.draw(floats_array((width,)))
    check_grad(lambda p, t: nn.mse(p, t), [pred, target])
    check_grad(lambda p: nn.mse(p, target), [pred])  # a plain ndarray target
    check_grad(lambda p, t: nn.mse(p, t), [pred, row_target])  # target broadcast over the batch
    assert rel_error(nn.mse(Tensor(pred), target).data, np.mean((pred - target) ** 2)) < 1e-12


@SETTINGS
@given(shapes.flatmap(floats_array), shapes.flatmap(floats_array), st.floats(0.01, 2.0))
def test_l2_penalty(a, b, lam):
    check_grad(lambda s, t: nn.l2_penalty([s, t], lam), [a, b])


# --- fan-out: gradients accumulate --------------------------------------------------------------------


@SETTINGS
@given(shapes.flatmap(floats_array))
def test_fan_out_of_a_leaf(x):
    check_grad(lambda t: t * t + t.exp(), [x])
    check_grad(lambda t: t * t, [x])  # the same leaf as both inputs of one op
    check_grad(lambda t: t + t - t * 0.5, [x])


@SETTINGS
@given(shapes.flatmap(floats_array))
def test_fan_out_of_an_intermediate(x):
    check_grad(lambda t: (lambda z: z * z + z.exp() + z)(t.tanh()), [x])
    check_grad(lambda t: (lambda z: z + z)(t.sigmoid()), [x])  # one node as both inputs of an add
    check_grad(lambda t: (lambda z: z.sum() * z)(t.tanh()), [x])  # a diamond through a reduction


@SETTINGS
@given(st.data(), sides, sides, sides, sides)
def test_fan_out_hidden_layer_used_twice(data, batch, d, h, q):
    x = data.draw(floats_array((batch, d)))
    w0 = data.draw(floats_array((h, d)))
    w1 = data.draw(floats_array((h, q)))
    w2 = data.draw(floats_array((h, q)))

    def fn(w0t, w1t, w2t):
        hidden = nn.linear(x, w0t).tanh()
        return hidden @ w1t + hidden @ w2t

    check_grad(fn, [w0, w1, w2])

    def relu_fn(zt, w1t, w2t):
        hidden = zt.relu()
        return hidden @ w1t + hidden @ w2t

    check_grad(relu_fn, [away_from_zero(data.draw(floats_array((batch, h)))), w1, w2])


def test_fan_out_gradient_is_the_sum_not_the_last_write():
    # y = x*x + exp(x): dy/dx = 2x + exp(x); an engine that overwrites instead of adding gives one term only
    x = Tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    (x * x + x.exp()).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + np.exp(x.data), rtol=1e-14)

"""nn.MLP's loss and gradients against an independent plain-numpy forward/backward."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import rel_error
from memstudy import nn
from memstudy.autograd import Tensor
from memstudy.nn import MLP

TOL = 1e-10

ACT = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(z.dtype)),
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda z, a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a * a),
}


def reference(params, X, y, activation, bias, depth):
    """Mean softmax cross-entropy of the MLP and its gradients, parameters in MLP.parameters() order."""
    phi, dphi = ACT[activation]
    step = 2 if bias else 1
    weights = params[0::step]
    biases = params[1::step] if bias else [None] * len(weights)
    assert len(weights) == depth + 1
    inputs, pre, post = [], [], []
    h = X
    for i, (W, b) in enumerate(zip(weights, biases)):
        inputs.append(h)
        z = h @ W.T + (b if b is not None else 0.0)
        if i == depth:
            logits = z
            break
        a = phi(z)
        pre.append(z)
        post.append(a)
        h = a
    B = X.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    P = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(P[np.arange(B), y]))
    g = P.copy()
    g[np.arange(B), y] -= 1.0
    g /= B
    grads_w, grads_b = [None] * (depth + 1), [None] * (depth + 1)
    for i in range(depth, -1, -1):
        if i < depth:
            g = g * dphi(pre[i], post[i])
        grads_w[i] = g.T @ inputs[i]
        grads_b[i] = g.sum(axis=0)
        g = g @ weights[i]
    grads = []
    for gw, gb in zip(grads_w, grads_b):
        grads.append(gw)
        if bias:
            grads.append(gb)
    return loss, grads


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_mlp_matches_numpy_reference(activation, bias, depth):
    d, width, classes, B = 6, 8, 4, 12
    model = MLP(d, width, depth, classes, activation=activation, bias=bias, dtype="float64", seed=7)
    params = model.parameters()
    expected_shapes = [(width, d)] + [(width, width)] * (depth - 1) + [(classes, width)]
    if bias:
        assert [p.shape for p in params] == [s for w in expected_shapes for s in (w, (w[0],))]
    else:
        assert [p.shape for p in params] == expected_shapes
    rng = np.random.default_rng(11)
    X = rng.normal(size=(B, d))
    y = rng.integers(0, classes, size=B)
    snapshot = [p.data.copy() for p in params]

    loss = nn.cross_entropy(model(X), y)
    loss.backward()
    ref_loss, ref_grads = reference(snapshot, X, y, activation, bias, depth)

    assert rel_error(loss.data, ref_loss) < TOL
    for i, (p, g) in enumerate(zip(params, ref_grads)):
        assert p.grad is not None, f"parameter {i} got no gradient"
        assert p.grad.dtype == np.float64
        assert rel_error(p.grad, g) < TOL, f"parameter {i} ({p.shape})"
    for p, before in zip(params, snapshot):
        np.testing.assert_array_equal(p.data, before)  # backward never touches parameter values


def test_mlp_input_may_be_a_tensor_or_an_array():
    model = MLP(3, 4, 2, 2, dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(model(X).data, model(Tensor(X)).data)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_float32_stays_float32(activation):
    model = MLP(6, 8, 2, 3, activation=activation, bias=True, dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=10)
    logits = model(X)
    assert logits.dtype == np.float32
    loss = nn.cross_entropy(logits, y)
    assert loss.dtype == np.float32
    # Python scalars join float32 arithmetic without promoting to float64
    objective = loss * 0.5 + nn.l2_penalty(model.parameters(), 1e-3) + 1.0 - 1.0
    assert objective.dtype == np.float32
    objective.backward()
    for p in model.parameters():
        assert p.data.dtype == np.float32
        assert p.grad is not None and p.grad.dtype == np.float32
    # and the float32 gradients agree with the float64 reference to float32 precision
    snapshot = [p.data.astype(np.float64) for p in model.parameters()]
    _, ref_grads = reference(snapshot, X.astype(np.float64), y, activation, True, 2)
    for p, g, w in zip(model.parameters(), ref_grads, snapshot):
        g = 0.5 * g + 1e-3 * w
        assert rel_error(p.grad, g) < 1e-4


def test_float32_input_to_float32_tensor_ops():
    x = Tensor(np.linspace(0.5, 2.0, 6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    ops = [x * 2.0, 2.0 * x, x / 3.0, x + 1.0, 1.0 - x, x ** 3, x ** 0.5, x ** -1, x.exp(), x.log(), x.relu(),
           x.sigmoid(), x.tanh(), x.sum(axis=0), x.mean(), x.T, x.reshape(-1), x.sum_squares(), -x]
    for out in ops:
        assert out.dtype == np.float32, out
        out.backward(np.ones(out.shape, dtype=np.float32))
        assert x.grad.dtype == np.float32
        x.grad = None

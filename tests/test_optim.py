"""Optimisers: they train, their update rules are the textbook ones, and their state has the stated size."""
from __future__ import annotations

import numpy as np
import pytest

from memstudy import nn, optim
from memstudy.autograd import Tensor
from memstudy.nn import MLP


def blobs(n=200, classes=3, seed=0):
    """Three gaussian blobs in 2-d, one per class."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 3.0], [-2.6, -1.5], [2.6, -1.5]])
    y = rng.integers(0, classes, size=n)
    X = centres[y] + rng.normal(scale=0.8, size=(n, 2))
    return X, y


def loss_of(model, X, y):
    return nn.cross_entropy(model(X), y)


@pytest.mark.parametrize("name,lr", [("sgd", 0.5), ("momentum", 0.1), ("adam", 0.02)])
def test_optimiser_lowers_the_objective(name, lr):
    X, y = blobs()
    model = MLP(2, 16, 2, 3, activation="tanh", dtype="float64", seed=1)
    opt = optim.make(name, model.parameters(), lr=lr)
    initial = loss_of(model, X, y).item()
    for _ in range(50):
        opt.zero_grad()
        loss = loss_of(model, X, y)
        loss.backward()
        opt.step()
    final = loss_of(model, X, y).item()
    assert final < 0.5 * initial, (initial, final)


def test_make_knows_the_three_optimisers():
    p = [Tensor(np.zeros(3), requires_grad=True)]
    assert isinstance(optim.make("sgd", p), optim.SGD)
    assert isinstance(optim.make("momentum", p), optim.Momentum)
    assert isinstance(optim.make("adam", p), optim.Adam)
    with pytest.raises(ValueError):
        optim.make("rmsprop", p)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Momentum, optim.Adam])
def test_zero_grad_sets_grads_to_none(cls):
    model = MLP(2, 4, 1, 3, dtype="float64", seed=0)
    X, y = blobs(20)
    loss_of(model, X, y).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt = cls(model.parameters())
    opt.step()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("cls,factor", [(optim.SGD, 0), (optim.Momentum, 1), (optim.Adam, 2)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_bytes(cls, factor, dtype):
    model = MLP(5, 7, 2, 3, dtype=dtype, seed=0)
    opt = cls(model.parameters())
    assert opt.state_nbytes() == 0  # state is created lazily, at the first step
    X = np.random.default_rng(0).normal(size=(4, 5)).astype(dtype)
    loss_of(model, X, np.array([0, 1, 2, 0])).backward()
    opt.step()
    assert opt.state_nbytes() == factor * model.parameter_nbytes()
    assert all(a.dtype == np.dtype(dtype) for a in opt.state_arrays())
    assert all(p.data.dtype == np.dtype(dtype) for p in model.parameters())
    opt.step()  # a second step reuses the state, it does not add to it
    assert opt.state_nbytes() == factor * model.parameter_nbytes()


# --- the update rules, exactly, on a parameter larger than one update chunk ---------------------------

SIZE = optim.CHUNK_ELEMENTS * 2 + 123  # three chunks, the last one partial


def param_and_grads(steps, seed=0):
    rng = np.random.default_rng(seed)
    p = Tensor(rng.normal(size=(SIZE // 3, 3)), requires_grad=True)
    grads = [rng.normal(size=p.shape) for _ in range(steps)]
    return p, grads


def run(opt, p, grads):
    for g in grads:
        p.grad = g.copy()
        opt.step()


def test_sgd_update():
    p, grads = param_and_grads(2)
    expected = p.data.copy()
    run(optim.SGD([p], lr=0.1), p, grads)
    for g in grads:
        expected -= 0.1 * g
    np.testing.assert_allclose(p.data, expected, rtol=1e-14, atol=1e-15)


def test_momentum_update():
    p, grads = param_and_grads(3)
    expected, v = p.data.copy(), np.zeros(p.shape)
    run(optim.Momentum([p], lr=0.1, momentum=0.9), p, grads)
    for g in grads:
        v = 0.9 * v + g
        expected -= 0.1 * v
    np.testing.assert_allclose(p.data, expected, rtol=1e-13, atol=1e-14)


def test_adam_update():
    p, grads = param_and_grads(3)
    expected, m, v = p.data.copy(), np.zeros(p.shape), np.zeros(p.shape)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    run(optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps), p, grads)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        expected -= lr * m_hat / (np.sqrt(v_hat) + eps)
    np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-14)


def test_step_updates_in_place_and_skips_parameters_without_grad():
    a = Tensor(np.ones(4), requires_grad=True)
    b = Tensor(np.ones(4), requires_grad=True)
    buffer = a.data
    a.grad = np.full(4, 2.0)
    optim.SGD([a, b], lr=0.5).step()
    assert a.data is buffer  # in place: the parameter buffer is not reallocated
    np.testing.assert_array_equal(a.data, 0.0)
    np.testing.assert_array_equal(b.data, 1.0)

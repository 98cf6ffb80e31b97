"""SeedMLP's gradients against the seed text's backpropagation formulas, written out in plain numpy.

Batch form (X ∈ R^{B×d}):  Z = X W1ᵀ,  H = φ(Z),  O = H W2ᵀ,  L = mean cross-entropy,
s = λ/2 (‖W1‖² + ‖W2‖²),  J = L + s, and

    ∂J/∂O  = (softmax(O) − onehot) / B
    ∂J/∂W2 = (∂J/∂O)ᵀ H + λ W2
    ∂J/∂H  = ∂J/∂O W2
    ∂J/∂Z  = ∂J/∂H ⊙ φ'(Z)
    ∂J/∂W1 = (∂J/∂Z)ᵀ X + λ W1
"""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import check_grad, numeric_grad, rel_error
from memstudy import nn
from memstudy.autograd import Tensor
from memstudy.nn import SeedMLP

TOL = 1e-10

PHI = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda z: np.exp(-z) / (1.0 + np.exp(-z)) ** 2),
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
}


def softmax(o: np.ndarray) -> np.ndarray:
    e = np.exp(o - o.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def seed_batch(X, y, W1, W2, lam, activation):
    """The seed's forward and backward on a batch; returns J, ∂J/∂W1, ∂J/∂W2."""
    phi, dphi = PHI[activation]
    B, q = X.shape[0], W2.shape[0]
    Z = X @ W1.T
    H = phi(Z)
    O = H @ W2.T
    P = softmax(O)
    onehot = np.eye(q)[y]
    L = -np.mean(np.log(P[np.arange(B), y]))
    s = lam / 2 * (np.sum(W1 ** 2) + np.sum(W2 ** 2))
    J = L + s
    dO = (P - onehot) / B
    dW2 = dO.T @ H + lam * W2
    dH = dO @ W2
    dZ = dH * dphi(Z)
    dW1 = dZ.T @ X + lam * W1
    return J, dW1, dW2


def seed_single(x, y, W1, W2, lam, activation):
    """The seed's per-example formulas (x ∈ R^d, vectors and outer products)."""
    phi, dphi = PHI[activation]
    q = W2.shape[0]
    z = W1 @ x
    h = phi(z)
    o = W2 @ h
    p = softmax(o)
    L = -np.log(p[y])
    s = lam / 2 * (np.sum(W1 ** 2) + np.sum(W2 ** 2))
    do = p - np.eye(q)[y]  # ∂J/∂o = ∂L/∂o
    dW2 = np.outer(do, h) + lam * W2  # (∂J/∂o) hᵀ + λ W2
    dh = W2.T @ do
    dz = dh * dphi(z)
    dW1 = np.outer(dz, x) + lam * W1  # (∂J/∂z) xᵀ + λ W1
    return L + s, dW1, dW2


def make_data(B, d, q, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, d))
    y = rng.integers(0, q, size=B)
    return X, y


@pytest.mark.parametrize("lam", [0.0, 0.1])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_batch_gradients_match_the_seed_formulas(activation, lam):
    d, h, q, B = 7, 5, 4, 16
    model = SeedMLP(d, h, q, lam=lam, activation=activation, dtype="float64", seed=3)
    X, y = make_data(B, d, q)
    W1, W2 = model.W1.data.copy(), model.W2.data.copy()
    J = model.objective(X, y)
    J.backward()
    J_ref, dW1, dW2 = seed_batch(X, y, W1, W2, lam, activation)
    assert J.dtype == np.float64 and model.W1.grad.dtype == np.float64
    assert rel_error(J.data, J_ref) < TOL
    assert rel_error(model.W1.grad, dW1) < TOL
    assert rel_error(model.W2.grad, dW2) < TOL
    # the regulariser is really in there: its gradient term λW is not negligible
    if lam:
        _, dW1_no_reg, _ = seed_batch(X, y, W1, W2, 0.0, activation)
        assert rel_error(model.W1.grad, dW1_no_reg) > 1e-3


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_single_example_matches_the_per_example_formulas(activation):
    d, h, q, lam = 6, 5, 3, 0.05
    model = SeedMLP(d, h, q, lam=lam, activation=activation, dtype="float64", seed=4)
    rng = np.random.default_rng(2)
    x, label = rng.normal(size=d), 2
    W1, W2 = model.W1.data.copy(), model.W2.data.copy()
    J_ref, dW1, dW2 = seed_single(x, label, W1, W2, lam, activation)

    # as a batch of one
    J = model.objective(x[None, :], np.array([label]))
    J.backward()
    assert rel_error(J.data, J_ref) < TOL
    assert rel_error(model.W1.grad, dW1) < TOL
    assert rel_error(model.W2.grad, dW2) < TOL

    # as the seed writes it, x ∈ R^d: o = W2 φ(W1 x) is a vector (the loss takes it as one row)
    model.W1.grad = model.W2.grad = None
    o = model.forward(x)
    assert o.shape == (q,)
    J1 = nn.cross_entropy(o.reshape(1, q), np.array([label])) + nn.l2_penalty(model.parameters(), lam)
    J1.backward()
    assert rel_error(J1.data, J_ref) < TOL
    assert model.W1.grad.shape == W1.shape and model.W2.grad.shape == W2.shape
    assert rel_error(model.W1.grad, dW1) < TOL
    assert rel_error(model.W2.grad, dW2) < TOL


def test_seed_formulas_agree_with_finite_differences():
    """The reference itself is right: its gradient matches central differences of the engine's J."""
    d, h, q, lam = 4, 3, 3, 0.2
    model = SeedMLP(d, h, q, lam=lam, activation="tanh", dtype="float64", seed=5)
    X, y = make_data(5, d, q)

    def objective(w1, w2):
        return nn.cross_entropy(nn.linear(nn.linear(X, w1).tanh(), w2), y) + nn.l2_penalty([w1, w2], lam)

    arrays = [model.W1.data, model.W2.data]
    check_grad(objective, arrays)  # the engine agrees with finite differences
    num_dW1 = numeric_grad(objective, arrays, np.float64(1.0), 0, eps=1e-6)
    num_dW2 = numeric_grad(objective, arrays, np.float64(1.0), 1, eps=1e-6)
    _, dW1, dW2 = seed_batch(X, y, model.W1.data, model.W2.data, lam, "tanh")
    assert rel_error(dW1, num_dW1) < 1e-8  # and so does the plain-numpy reference
    assert rel_error(dW2, num_dW2) < 1e-8


def test_seed_model_has_no_biases_and_the_documented_shapes():
    model = SeedMLP(7, 5, 4, lam=0.1, activation="relu", dtype="float64", seed=0)
    assert [p.shape for p in model.parameters()] == [(5, 7), (4, 5)]
    assert model.parameters()[0] is model.W1 and model.parameters()[1] is model.W2
    assert all(p.dtype == np.float64 for p in model.parameters())
    out = model.forward(Tensor(np.zeros((3, 7))))
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out.data, 0.0)  # no bias: a zero input gives a zero output

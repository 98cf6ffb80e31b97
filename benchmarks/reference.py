"""The floor: one MLP training step written by hand in plain numpy, the same math as memstudy's.

Forward: `depth` hidden layers h = act(h @ Wᵀ + b), then logits = h @ Woᵀ + bo; loss = mean softmax
cross-entropy (max subtracted first). Backward: ∂logits = (p − onehot)/batch, then per layer ∂W = gᵀh,
∂b = Σ g, ∂h = g W and the activation's derivative from its saved output. SGD: W ← W − lr·∂W.

Written the way a careful person would write it by hand: fresh buffers where a result is new, in place
where a buffer is dead after this line (the pre-activation becomes the activation, the probabilities
become the logits' gradient, a gradient is scaled by lr in place before it is subtracted). As in
the engine, every gradient is computed first and the update runs after the backward pass. No
autograd, no bookkeeping, no chunking: the time this takes is what the arithmetic costs through numpy.
"""
from __future__ import annotations

import numpy as np


class NumpyMLP:
    """Parameters as plain arrays (copied from a memstudy model so both start from the same weights)."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray | None], activation: str,
                 lr: float = 0.01):
        if activation not in ("relu", "sigmoid", "tanh"):
            raise ValueError(f"unknown activation {activation!r}")
        self.weights = [np.array(w) for w in weights]
        self.biases = [None if b is None else np.array(b) for b in biases]
        self.activation = activation
        self.lr = lr

    @classmethod
    def from_memstudy(cls, model, lr: float = 0.01) -> "NumpyMLP":
        linears = model.linears
        return cls([lin.weight.data for lin in linears],
                   [None if lin.bias is None else lin.bias.data for lin in linears], model.activation_name, lr)

    def _activate(self, z: np.ndarray) -> np.ndarray:
        """In place: the pre-activation is dead once the activation exists."""
        if self.activation == "relu":
            np.maximum(z, 0, out=z)
        elif self.activation == "tanh":
            np.tanh(z, out=z)
        else:
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1
            np.reciprocal(z, out=z)
        return z

    def _activation_backward(self, grad: np.ndarray, h: np.ndarray) -> None:
        """grad *= act'(.) from the saved output h; h is dead afterwards, so it may be overwritten."""
        if self.activation == "relu":
            grad *= h > 0
        elif self.activation == "tanh":
            np.square(h, out=h)
            np.subtract(1, h, out=h)
            grad *= h
        else:
            grad *= h
            h -= 1
            grad *= h
            np.negative(grad, out=grad)

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Forward, loss, backward and SGD update; returns the loss."""
        weights, biases = self.weights, self.biases
        depth = len(weights) - 1
        inputs = [x]  # inputs[i] is the input of layer i (the saved activations)
        h = x
        for i in range(depth):
            z = h @ weights[i].T
            if biases[i] is not None:
                z += biases[i]
            h = self._activate(z)
            inputs.append(h)
        logits = h @ weights[depth].T
        if biases[depth] is not None:
            logits += biases[depth]
        # softmax cross-entropy, in place on the logits (they are dead once the probabilities exist)
        batch = logits.shape[0]
        rows = np.arange(batch)
        logits -= logits.max(axis=1, keepdims=True)
        picked = logits[rows, labels]
        probs = np.exp(logits, out=logits)
        total = probs.sum(axis=1, keepdims=True)
        probs /= total
        loss = float(np.mean(np.log(total[:, 0]) - picked))
        # backward: the probabilities become ∂loss/∂logits in place
        grad = probs
        grad[rows, labels] -= 1
        grad /= batch
        grads = []  # (index, ∂W, ∂b), newest layer first
        for i in range(depth, -1, -1):
            h_in = inputs[i]
            grad_w = grad.T @ h_in
            grad_b = grad.sum(axis=0) if biases[i] is not None else None
            grads.append((i, grad_w, grad_b))
            if i > 0:
                grad = grad @ weights[i]
                self._activation_backward(grad, h_in)
            inputs[i] = h_in = None  # the saved activation is dead
        grad = None
        # SGD, in place: each gradient is new, so it is scaled by lr where it is, then subtracted
        lr = self.lr
        for i, grad_w, grad_b in grads:
            grad_w *= lr
            weights[i] -= grad_w
            if grad_b is not None:
                grad_b *= lr
                biases[i] -= grad_b
        return loss

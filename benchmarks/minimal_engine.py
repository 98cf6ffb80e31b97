"""A minimal autograd: the same MLP training step as memstudy's, through an engine that has nothing but autograd.

One node per op, a tensor wrapper per result, backward newest-node-first from a heap, gradients accumulated into
leaves, SGD through one scratch buffer: the work any numpy autograd that records one node per op does. None of
memstudy's features: no instrument hooks (the ledger), no saved-tensor policies, no `save` door with roles, no
ufunc-buffer scope, no phases or layers, no shape-only arrays, no checks. The same numpy calls as memstudy's ops;
its SGD takes one scratch as large as the largest parameter, where memstudy's bounds its scratch to
`optim.CHUNK_ELEMENTS` and walks larger parameters in chunks (a bounded-memory feature, counted on memstudy's side).

It separates the two parts of memstudy's cost over the hand-written numpy step (`benchmarks.reference`) at small
sizes, where that cost shows: `minimal_vs_numpy` is what recording a graph in Python costs at all,
`engine_vs_minimal` what memstudy's features add on top. ReLU MLPs only (what the speed figures time).
"""
from __future__ import annotations

import itertools
from heapq import heappop, heappush

import numpy as np

_SEQUENCE = itertools.count()


class _Node:
    __slots__ = ("backward", "parents", "saved", "sequence")

    def __init__(self, backward, parents: tuple, saved: tuple):
        self.backward, self.parents, self.saved = backward, parents, saved
        self.sequence = next(_SEQUENCE)


class _Tensor:
    __slots__ = ("data", "grad", "node")

    def __init__(self, data: np.ndarray, node: _Node | None = None):
        self.data, self.grad, self.node = data, None, node


def _linear_backward(saved: tuple, grad: np.ndarray) -> tuple:
    x, weight, need_x = saved
    return (grad @ weight if need_x else None), grad.T @ x, np.add.reduce(grad, axis=0)


def _relu_backward(saved: tuple, grad: np.ndarray) -> tuple:
    result = np.sign(saved[0])
    result *= grad
    return (result,)


def _cross_entropy_backward(saved: tuple, grad: np.ndarray) -> tuple:
    probs, labels = saved
    result = probs.copy()
    result[np.arange(probs.shape[0]), labels] -= 1
    result *= float(grad) / probs.shape[0]
    return (result,)


def linear(x: _Tensor, weight: _Tensor, bias: _Tensor | None, need_x: bool) -> _Tensor:
    out = x.data @ weight.data.T
    if bias is not None:
        out += bias.data
    parents = (x.node if need_x else None, weight) + ((bias,) if bias is not None else ())
    return _Tensor(out, _Node(_linear_backward, parents, (x.data, weight.data, need_x)))


def relu(x: _Tensor) -> _Tensor:
    out = np.maximum(x.data, 0)
    return _Tensor(out, _Node(_relu_backward, (x.node,), (out,)))


def cross_entropy(logits: _Tensor, labels: np.ndarray) -> _Tensor:
    data = logits.data
    batch = data.shape[0]
    probs = np.subtract(data, np.maximum.reduce(data, axis=1, keepdims=True))
    picked = probs[np.arange(batch), labels]
    np.exp(probs, out=probs)
    total = np.add.reduce(probs, axis=1, keepdims=True)
    probs /= total
    loss = (np.add.reduce(np.log(total), axis=None) - np.add.reduce(picked)) / batch
    return _Tensor(np.asarray(loss, dtype=data.dtype), _Node(_cross_entropy_backward, (logits.node,), (probs, labels)))


def backward(root: _Tensor) -> None:
    pending = {id(root.node): np.ones_like(root.data)}
    queue = [(-root.node.sequence, root.node)]
    while queue:
        node = heappop(queue)[1]
        grads = node.backward(node.saved, pending.pop(id(node)))
        node.saved = ()
        for parent, grad in zip(node.parents, grads):
            if parent is None or grad is None:
                continue
            if type(parent) is _Node:
                previous = pending.get(id(parent))
                if previous is None:
                    pending[id(parent)] = grad
                    heappush(queue, (-parent.sequence, parent))
                else:
                    pending[id(parent)] = previous + grad
            else:
                parent.grad = grad if parent.grad is None else parent.grad + grad


class MinimalMLP:
    """A ReLU MLP's parameters (copied from a memstudy model) and its training step through the minimal engine."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray | None], lr: float = 0.01):
        self.weights = [_Tensor(np.array(w)) for w in weights]
        self.biases = [None if b is None else _Tensor(np.array(b)) for b in biases]
        self.params = self.weights + [b for b in self.biases if b is not None]
        self.lr = lr
        self._scratch_elements = max(p.data.size for p in self.params)

    @classmethod
    def from_memstudy(cls, model, lr: float = 0.01) -> "MinimalMLP":
        if model.activation_name != "relu":
            raise ValueError(f"the minimal engine runs ReLU MLPs only, got {model.activation_name!r}")
        linears = model.linears
        return cls([lin.weight.data for lin in linears],
                   [None if lin.bias is None else lin.bias.data for lin in linears], lr)

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Gradients to None, forward, cross-entropy, backward, SGD (as memstudy's timed step); returns the loss."""
        for p in self.params:
            p.grad = None
        h = _Tensor(x)
        last = len(self.weights) - 1
        for i in range(last):
            h = relu(linear(h, self.weights[i], self.biases[i], need_x=i > 0))
        loss = cross_entropy(linear(h, self.weights[last], self.biases[last], need_x=True), labels)
        h = None
        backward(loss)
        scratch = np.empty(self._scratch_elements, self.params[0].data.dtype)
        for p in self.params:
            step = scratch[: p.data.size].reshape(p.data.shape)
            np.multiply(p.grad, self.lr, out=step)
            np.subtract(p.data, step, out=p.data)
        return float(loss.data)

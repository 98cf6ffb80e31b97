"""Optimisers that update parameters in place.

numpy has no fused a·x + y, so `p -= lr * g` on a whole array would allocate a hidden temporary the size
of the parameter. Instead each step allocates one scratch buffer of at most `CHUNK_ELEMENTS` elements
(64 KiB in float32), computes every intermediate of the update into it chunk by chunk, and reports it to
the ledger as the optimiser's one temporary: no hidden allocation remains.

A chunk is a box of the parameter's shape picked by basic slicing (`ops.chunks.box_blocks`), the same index for
the parameter, its gradient and its state: views whatever their layouts (a gradient in another memory order, a
read-only broadcast one, parameter data replaced by a Fortran-ordered array), never a flattening reshape, which
would copy such an array (and an update written into the copy would be lost).

On shape-only arrays (the predictor) the same code runs by dispatch: the scratch is made `like=` a parameter,
the state by `np.zeros_like`, and the chunk loop runs one representative chunk per parameter, since the chunks
allocate nothing the ledger sees (so a prediction's cost does not grow with the parameters' size).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .autograd import STATE, Tensor, phase_scope
from .autograd.ops.chunks import box_blocks

CHUNK_ELEMENTS = 1 << 14
OPTIMIZERS = ("sgd", "momentum", "adam")
STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}  # state arrays per updated parameter (tests/test_state_bytes.py)


def _chunks(*arrays: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The arrays (of one shape, any layouts) as views of the same boxes of ≤ CHUNK_ELEMENTS elements."""
    first = arrays[0]
    if first.size <= CHUNK_ELEMENTS:  # one chunk (most biases, small layers): the arrays themselves
        return [arrays]
    indices = box_blocks(first.shape, CHUNK_ELEMENTS)
    if type(first) is not np.ndarray:  # shape-only: one chunk stands for all (see the module docstring)
        indices = indices[:1]
    return [tuple(a[index] for a in arrays) for index in indices]


def _step_buffer(scratch: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """The scratch's first elements shaped as `chunk` (a view: the scratch is a new 1-d buffer)."""
    return scratch[: chunk.size].reshape(chunk.shape)


class Optimizer:
    def __init__(self, params: Iterable[Tensor], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = lr
        self._scratch_elements: dict[np.dtype, int] | None = None

    def zero_grad(self) -> None:
        """Gradients become None (their buffers are freed), as the measured step expects."""
        for p in self.params:
            p.grad = None

    def state_arrays(self) -> list[np.ndarray]:
        """Every buffer the optimiser keeps between steps."""
        return [array for _, array in self.param_states()]

    def param_states(self) -> list[tuple[int, np.ndarray]]:
        """(index in `params`, array) of every buffer the optimiser keeps between steps, in `state_arrays` order."""
        return []

    def state_nbytes(self) -> int:
        return sum(a.nbytes for a in self.state_arrays())

    def step(self) -> None:
        with phase_scope("optimizer"):
            scratch = self._scratch()
            for i, p in enumerate(self.params):
                grad = p.grad
                if grad is not None:
                    data = p.data
                    self._update(i, data, grad, scratch[data.dtype])
            del scratch  # freed here, inside the optimizer phase

    def _scratch(self) -> dict[np.dtype, np.ndarray]:
        """One scratch buffer per parameter dtype, as long as the largest chunk; reported to the ledger."""
        sizes = self._scratch_elements
        if sizes is None:  # the parameters are fixed, so their chunk sizes are worked out once
            sizes = {}
            for p in self.params:
                sizes[p.data.dtype] = max(sizes.get(p.data.dtype, 0), min(p.data.size, CHUNK_ELEMENTS))
            self._scratch_elements = sizes
        like = self.params[0].data  # a shape-only parameter makes a shape-only scratch
        scratch = {dtype: np.empty(size, dtype=dtype, like=like) for dtype, size in sizes.items()}
        instrument = STATE.instrument
        if instrument is not None:
            for buffer in scratch.values():
                instrument.on_new(buffer, "optimizer_scratch", None)
        return scratch

    def _update(self, index: int, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        raise NotImplementedError  # pragma: no cover


class SGD(Optimizer):
    """p ← p − lr·g. No state."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01):
        super().__init__(params, lr)

    def _update(self, index: int, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        lr = self.lr
        for p, g in _chunks(param, grad):
            step = _step_buffer(scratch, p)
            np.multiply(g, lr, out=step)
            np.subtract(p, step, out=p)


class Momentum(Optimizer):
    """v ← μ·v + g; p ← p − lr·v. State: one velocity per parameter (1× parameter bytes)."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, momentum: float = 0.9):
        super().__init__(params, lr)
        self.momentum = momentum
        self.velocity: list[np.ndarray | None] = [None] * len(self.params)

    def param_states(self) -> list[tuple[int, np.ndarray]]:
        return [(i, v) for i, v in enumerate(self.velocity) if v is not None]

    def _update(self, index: int, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        v = self.velocity[index]
        if v is None:
            v = self.velocity[index] = np.zeros_like(param)
        v *= self.momentum
        v += grad
        for p, vc in _chunks(param, v):
            step = _step_buffer(scratch, p)
            np.multiply(vc, self.lr, out=step)
            p -= step


class Adam(Optimizer):
    """Adam (Kingma & Ba). State: first and second moments per parameter (2× parameter bytes)."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0
        self.first_moment: list[np.ndarray | None] = [None] * len(self.params)
        self.second_moment: list[np.ndarray | None] = [None] * len(self.params)

    def param_states(self) -> list[tuple[int, np.ndarray]]:
        return [(i, a) for moments in (self.first_moment, self.second_moment) for i, a in enumerate(moments)
                if a is not None]

    def step(self) -> None:
        self.steps += 1
        super().step()

    def _update(self, index: int, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> None:
        m, v = self.first_moment[index], self.second_moment[index]
        if m is None:
            m = self.first_moment[index] = np.zeros_like(param)
            v = self.second_moment[index] = np.zeros_like(param)
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1 - b1 ** self.steps)
        # Python floats, not numpy float64 scalars: a float64 operand would make numpy cast each float32
        # chunk through a hidden 64 KiB ufunc buffer
        root_correction = float(np.sqrt(1 - b2 ** self.steps))
        for p, g, mc, vc in _chunks(param, grad, m, v):
            s = _step_buffer(scratch, p)
            mc *= b1  # m ← β1·m + (1−β1)·g
            np.multiply(g, 1 - b1, out=s)
            mc += s
            vc *= b2  # v ← β2·v + (1−β2)·g²
            np.multiply(g, g, out=s)
            s *= 1 - b2
            vc += s
            np.sqrt(vc, out=s)  # p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
            s /= root_correction
            s += self.eps
            np.divide(mc, s, out=s)
            s *= step_size
            p -= s


def make(name: str, params: Iterable[Tensor], lr: float | None = None) -> Optimizer:
    """An optimiser by name (sgd, momentum, adam) with its default learning rate unless `lr` is given."""
    classes = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
    if name not in classes:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return classes[name](params) if lr is None else classes[name](params, lr=lr)

"""Optimisers that update parameters in place; fp32 master weights and dynamic loss scaling beside them.

numpy has no fused a·x + y, so `p -= lr * g` on a whole array would allocate a hidden temporary the size
of the parameter. Instead each step allocates one scratch buffer of at most `CHUNK_ELEMENTS` elements
(64 KiB in float32), computes every intermediate of the update into it chunk by chunk, and reports it to
the ledger as the optimiser's one temporary: no hidden allocation remains.

A chunk is a box of the parameter's shape picked by basic slicing (`ops.chunks.box_blocks`), the same index for
the parameter, its gradient and its state: views whatever their layouts (a gradient in another memory order, a
read-only broadcast one, parameter data replaced by a Fortran-ordered array), never a flattening reshape, which
would copy such an array (and an update written into the copy would be lost).

Each optimiser writes its update rule once (`_rule`, in place on arrays of one dtype). For float32 and float64
parameters it runs on the chunks themselves. For 16-bit parameters it runs on float32 copies of each chunk
(parameter, gradient, state), and the results are rounded back once, as PyTorch's optimisers compute 16-bit
parameters in float32 ("opmath"); the state stays in the parameter's dtype, as PyTorch keeps it.

Master weights (`master_weights=True`; Megatron-LM's and DeepSpeed's mixed precision): the optimiser keeps a
float32 copy of every 16-bit parameter and its state in float32 (a float32 parameter, such as a LoRA adapter beside
a 16-bit base, is updated as it is); each step updates the float32
copy from the 16-bit gradient (read into float32) and writes the rounded result back into the 16-bit parameter.
With Adam that is ZeRO's accounting (Rajbhandari et al. 2020): parameters 2 Ψ, gradients 2 Ψ, optimiser state
12 Ψ bytes (master weights, first and second moments, 4 Ψ each).

Loss scaling (`LossScaler`, PyTorch's GradScaler with its defaults): the loss is multiplied by the scale before
backward, so small float16 gradients do not flush to zero; `Optimizer.step(scaler)` divides the gradients by it
(in place for float32 gradients, as GradScaler's `unscale_` does; as they are read into float32 for 16-bit
gradients with master weights), skips the update when a gradient is inf or NaN, and lets the scaler grow or back
off. The scale and the growth counter are two 4-byte arrays of the scaler's state (`state_arrays`).

On shape-only arrays (the predictor) the same code runs by dispatch: the scratch is made `like=` a parameter,
the state by `np.zeros_like`, and the chunk loop runs one representative chunk per parameter, since the chunks
allocate nothing the ledger sees (so a prediction's cost does not grow with the parameters' size). The loss
scaler's checks read no values there (no step is skipped).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .autograd import STATE, Tensor, meta, phase_scope
from .autograd.ops.chunks import box_blocks
from .autograd.ops.emulate import narrow, widen
from .autograd.precision import FLOAT32, is_low

CHUNK_ELEMENTS = 1 << 14
OPTIMIZERS = ("sgd", "momentum", "adam")
STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}  # state arrays per updated parameter (tests/test_state_bytes.py)
LOSS_SCALER_BYTES = 8  # LossScaler's state: the scale (float32) and the growth counter (int32)


def _chunks(*arrays: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The arrays (of one shape, any layouts) as views of the same boxes of ≤ CHUNK_ELEMENTS elements."""
    first = arrays[0]
    if first.size <= CHUNK_ELEMENTS:  # one chunk (most biases, small layers): the arrays themselves
        return [arrays]
    # shape-only: one chunk stands for all (see the module docstring)
    indices = box_blocks(first.shape, CHUNK_ELEMENTS, first=None if type(first) is np.ndarray else 1)
    return [tuple(a[index] for a in arrays) for index in indices]


def _step_buffer(scratch: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """The scratch's first elements shaped as `chunk` (a view: the scratch is a new 1-d buffer)."""
    return scratch[: chunk.size].reshape(chunk.shape)


def _loaded(scratch: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """A chunk's values in (a view of) a float32 scratch buffer."""
    out = _step_buffer(scratch, chunk)
    widen(out, chunk)
    return out


class Optimizer:
    """Base: subclasses set `state_names` and write `_rule`, the update of one chunk in place."""

    state_names: tuple[str, ...] = ()  # the per-parameter state arrays (momentum's velocity, Adam's moments)

    def __init__(self, params: Iterable[Tensor], lr: float, master_weights: bool = False):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = lr
        self.master_weights = master_weights
        self.master: list[np.ndarray | None] = [None] * len(self.params)
        self.state: dict[str, list[np.ndarray | None]] = {name: [None] * len(self.params) for name in self.state_names}
        self._scratch_elements: dict[np.dtype, int] | None = None

    def zero_grad(self) -> None:
        """Gradients become None (their buffers are freed), as the measured step expects."""
        for p in self.params:
            p.grad = None

    def state_arrays(self) -> list[np.ndarray]:
        """Every buffer the optimiser keeps between steps (master weights first, then the state)."""
        return [array for _, array in self.param_states()]

    def param_states(self) -> list[tuple[int, np.ndarray]]:
        """(index in `params`, array) of every buffer the optimiser keeps between steps, in `state_arrays` order."""
        out = [(i, a) for i, a in enumerate(self.master) if a is not None]
        for name in self.state_names:
            out += [(i, a) for i, a in enumerate(self.state[name]) if a is not None]
        return out

    def state_nbytes(self) -> int:
        return sum(a.nbytes for a in self.state_arrays())

    def step(self, scaler: "LossScaler | None" = None) -> bool:
        """One update of every parameter that has a gradient; with a loss scaler, the gradients are unscaled first
        and the update is skipped (False) when one of them is inf or NaN."""
        with phase_scope("optimizer"):
            rule, wide = self._scratch()
            grad_scale = None
            if scaler is not None:
                grad_scale = 1.0 / float(scaler.scale)
                found_inf = self._unscale(grad_scale, rule)
                scaler.update(found_inf)
                if found_inf:
                    return False
            self._begin_step()
            for i, p in enumerate(self.params):
                grad = p.grad
                if grad is None:
                    continue
                data = p.data
                if is_low(data.dtype):
                    unscale = grad_scale if grad_scale is not None and is_low(grad.dtype) else None
                    self._update_in_float32(i, data, grad, rule[FLOAT32], wide, unscale)
                else:
                    states = self._states(i, data)
                    for chunks in _chunks(data, grad, *states):
                        self._rule(chunks[0], chunks[1], chunks[2:], _step_buffer(rule[data.dtype], chunks[0]))
            del rule, wide  # freed here, inside the optimizer phase
        return True

    def prepare(self) -> None:
        """Make, without an update, the arrays every parameter's first update makes (its master copy with master
        weights, its state): the state a steady-state step starts from. The predictor calls it instead of a warm-up
        step, whose values a shape-only step does not have anyway (memory.predict); tests/test_predict.py checks the
        account it gives against the measured cell's, which warms up with a real step."""
        for index, p in enumerate(self.params):
            data = p.data
            if is_low(data.dtype) and self.master_weights:
                if self.master[index] is None:
                    self.master[index] = data.astype(FLOAT32)
                self._states(index, self.master[index])
            else:
                self._states(index, data)

    def _begin_step(self) -> None:
        """Before an update that is not skipped (Adam counts its steps here)."""

    def _rule(self, p: np.ndarray, g: np.ndarray, states: tuple, s: np.ndarray) -> None:
        raise NotImplementedError  # pragma: no cover

    def _states(self, index: int, like: np.ndarray) -> tuple[np.ndarray, ...]:
        """Parameter `index`'s state arrays, made (zeros of `like`'s shape and dtype) at its first update."""
        out = []
        for name in self.state_names:
            array = self.state[name][index]
            if array is None:
                array = self.state[name][index] = np.zeros_like(like)
            out.append(array)
        return tuple(out)

    def _update_in_float32(self, index: int, param: np.ndarray, grad: np.ndarray, s: np.ndarray,
                           wide: list[np.ndarray], grad_scale: float | None) -> None:
        """The rule on float32: the master copy (made at the first update) and float32 state with master weights,
        else float32 copies of the 16-bit parameter's chunks; the parameter (and a 16-bit state) rounded back."""
        if self.master_weights:  # (only 16-bit parameters come here: a float32 one, a LoRA adapter, needs none)
            master = self.master[index]
            if master is None:
                master = self.master[index] = param.astype(FLOAT32)
            states = self._states(index, master)
        else:
            master, states = None, self._states(index, param)
        wide_p, wide_g, *wide_states = wide
        for chunks in _chunks(param, grad, *((master,) if master is not None else ()), *states):
            p, g = chunks[0], chunks[1]
            state_chunks = chunks[3:] if master is not None else chunks[2:]
            work_p = chunks[2] if master is not None else _loaded(wide_p, p)
            work_g = _loaded(wide_g, g)
            if grad_scale is not None:
                work_g *= grad_scale
            work_states = tuple(c if c.dtype == FLOAT32 else _loaded(w, c) for c, w in zip(state_chunks, wide_states))
            self._rule(work_p, work_g, work_states, _step_buffer(s, p))
            narrow(p, work_p, wide_g)  # rounded once into the 16-bit parameter (the gradient's copy is spent)
            for c, w in zip(state_chunks, work_states):
                if w is not c:
                    narrow(c, w, wide_g)

    def _unscale(self, grad_scale: float, rule: dict[np.dtype, np.ndarray]) -> bool:
        """Whether a gradient is inf or NaN; float32/float64 gradients are multiplied by `grad_scale` in place (a
        16-bit one is scaled as `_update_in_float32` reads it). Shape-only gradients have no values: False."""
        found = False
        for p in self.params:
            grad = p.grad
            if grad is None:
                continue
            real = type(grad) is np.ndarray
            s = rule[FLOAT32 if is_low(grad.dtype) else grad.dtype]
            for (g,) in _chunks(grad):
                if not is_low(g.dtype):
                    g *= grad_scale
                if real and not found:  # inf·0 and NaN·0 are NaN: a NaN sum flags the chunk, with no new array
                    check = _step_buffer(s, g)
                    with np.errstate(invalid="ignore"):
                        np.multiply(g, 0, out=check)
                    found = bool(np.isnan(np.add.reduce(check, axis=None)))
        return found

    def _scratch(self) -> tuple[dict[np.dtype, np.ndarray], list[np.ndarray]]:
        """The step's scratch buffers, reported to the ledger: the rule's step buffer per compute dtype (float32 for
        16-bit parameters), and for 16-bit parameters float32 buffers for a chunk's parameter, gradient and each
        state (`_update_in_float32`)."""
        sizes = self._scratch_elements
        if sizes is None:  # the parameters are fixed, so their chunk sizes are worked out once
            sizes = {}
            for p in self.params:
                dt = FLOAT32 if is_low(p.data.dtype) else p.data.dtype
                sizes[dt] = max(sizes.get(dt, 0), min(p.data.size, CHUNK_ELEMENTS))
            self._scratch_elements = sizes
        like = self.params[0].data  # a shape-only parameter makes a shape-only scratch
        rule = {dtype: np.empty(size, dtype=dtype, like=like) for dtype, size in sizes.items()}
        wide = []
        if any(is_low(p.data.dtype) for p in self.params):
            wide = [np.empty(sizes[FLOAT32], dtype=FLOAT32, like=like) for _ in range(2 + len(self.state_names))]
        instrument = STATE.instrument
        if instrument is not None:
            for buffer in rule.values():
                instrument.on_new(buffer, "optimizer_scratch", None)
            for buffer in wide:  # the float32 copies numpy needs to update 16-bit arrays: the emulation's scratch
                instrument.on_new(buffer, "optimizer_scratch.fp32_chunk", None)
        return rule, wide


class SGD(Optimizer):
    """p ← p − lr·g. No state."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, master_weights: bool = False):
        super().__init__(params, lr, master_weights)

    def _rule(self, p: np.ndarray, g: np.ndarray, states: tuple, s: np.ndarray) -> None:
        np.multiply(g, self.lr, out=s)
        np.subtract(p, s, out=p)


class Momentum(Optimizer):
    """v ← μ·v + g; p ← p − lr·v. State: one velocity per parameter (1× parameter bytes)."""

    state_names = ("velocity",)

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, momentum: float = 0.9,
                 master_weights: bool = False):
        super().__init__(params, lr, master_weights)
        self.momentum = momentum

    @property
    def velocity(self) -> list[np.ndarray | None]:
        return self.state["velocity"]

    def _rule(self, p: np.ndarray, g: np.ndarray, states: tuple, s: np.ndarray) -> None:
        (v,) = states
        v *= self.momentum
        v += g
        np.multiply(v, self.lr, out=s)
        p -= s


class Adam(Optimizer):
    """Adam (Kingma & Ba). State: first and second moments per parameter (2× parameter bytes)."""

    state_names = ("first_moment", "second_moment")

    def __init__(self, params: Iterable[Tensor], lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, master_weights: bool = False):
        super().__init__(params, lr, master_weights)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0

    @property
    def first_moment(self) -> list[np.ndarray | None]:
        return self.state["first_moment"]

    @property
    def second_moment(self) -> list[np.ndarray | None]:
        return self.state["second_moment"]

    def _begin_step(self) -> None:
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        self._step_size = self.lr / (1 - b1 ** self.steps)
        # Python floats, not numpy float64 scalars: a float64 operand would make numpy cast each float32
        # chunk through a hidden 64 KiB ufunc buffer
        self._root_correction = float(np.sqrt(1 - b2 ** self.steps))

    def _rule(self, p: np.ndarray, g: np.ndarray, states: tuple, s: np.ndarray) -> None:
        mc, vc = states
        b1, b2 = self.beta1, self.beta2
        mc *= b1  # m ← β1·m + (1−β1)·g
        np.multiply(g, 1 - b1, out=s)
        mc += s
        vc *= b2  # v ← β2·v + (1−β2)·g²
        np.multiply(g, g, out=s)
        s *= 1 - b2
        vc += s
        np.sqrt(vc, out=s)  # p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
        s /= self._root_correction
        s += self.eps
        np.divide(mc, s, out=s)
        s *= self._step_size
        p -= s


class LossScaler:
    """Dynamic loss scaling with PyTorch GradScaler's defaults: the scale starts at 2¹⁶, doubles after 2000 steps in
    a row without an inf or NaN gradient, halves (and the step is skipped) on one.

    State: `scale` (float32) and `growth_tracker` (int32, the clean steps since the last change), 0-d arrays."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000):
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        if meta.is_active():  # the predictor's: shape-only state, the same bytes
            self.scale, self.growth_tracker = meta.empty((), FLOAT32), meta.empty((), np.int32)
        else:
            self.scale = np.full((), init_scale, dtype=FLOAT32)
            self.growth_tracker = np.zeros((), dtype=np.int32)

    def state_arrays(self) -> list[np.ndarray]:
        return [self.scale, self.growth_tracker]

    def update(self, found_inf: bool) -> None:
        """After a step's check: back off on inf/NaN, else count the clean step and grow every growth_interval."""
        if found_inf:
            self.scale *= self.backoff_factor
            self.growth_tracker[...] = 0
            return
        self.growth_tracker += 1
        if type(self.growth_tracker) is np.ndarray and int(self.growth_tracker) == self.growth_interval:
            self.scale *= self.growth_factor
            self.growth_tracker[...] = 0


def make(name: str, params: Iterable[Tensor], lr: float | None = None, master_weights: bool = False) -> Optimizer:
    """An optimiser by name (sgd, momentum, adam) with its default learning rate unless `lr` is given."""
    classes = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
    if name not in classes:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    kwargs = {"master_weights": master_weights} if lr is None else {"lr": lr, "master_weights": master_weights}
    return classes[name](params, **kwargs)

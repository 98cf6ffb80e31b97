"""Layers and models: Linear, activations, MLP (the studies' model) and SeedMLP (the seed's model)."""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..autograd import STATE, Tensor, apply, checkpoint as checkpoint_segment, layer_scope
from ..autograd import ops
from .functional import cross_entropy, l2_penalty

ACTIVATIONS = ("relu", "sigmoid", "tanh")
DTYPES = ("float32", "float64")
CHECKPOINTS = ("none", "sqrt", "every:K")  # every:K with K a positive integer


def parse_checkpoint(value: Any) -> str:
    """The canonical form of a checkpoint strategy (none, sqrt, every:K); ValueError for anything else."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "sqrt"):
            return text
        match = re.fullmatch(r"every:\s*(\d+)", text)
        if match and int(match.group(1)) >= 1:
            return f"every:{int(match.group(1))}"
    raise ValueError(f"checkpoint must be none, sqrt or every:K with K a positive integer, got {value!r}")


def checkpoint_segments(checkpoint: str, depth: int) -> list[tuple[int, int]] | None:
    """The hidden layers' segments [start, stop) under a strategy, or None for no checkpointing.

    `sqrt` uses segments of ⌈√depth⌉ layers (Chen et al. 2016); `every:K` segments of K layers; the last
    segment is shorter when K does not divide the depth.
    """
    checkpoint = parse_checkpoint(checkpoint)
    if checkpoint == "none":
        return None
    size = math.isqrt(depth - 1) + 1 if checkpoint == "sqrt" else int(checkpoint.split(":")[1])  # ⌈√depth⌉
    return [(start, min(start + size, depth)) for start in range(0, depth, size)]


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dt.name}")
    return dt


class Module:
    def parameters(self) -> list[Tensor]:
        raise NotImplementedError

    def parameter_nbytes(self) -> int:
        return sum(p.nbytes for p in self.parameters())

    def __call__(self, x: Any) -> Tensor:
        return self.forward(x)

    def forward(self, x: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Linear(Module):
    """y = x Wᵀ + b with W of shape (out_features, in_features), initialised U(-1/√in, 1/√in) like PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = "float32",
                 seed: int | np.random.Generator | None = 0):
        dt = _check_dtype(dtype)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Tensor(rng.uniform(-bound, bound, (out_features, in_features)).astype(dt),
                             requires_grad=True, name="weight")
        self.bias = (Tensor(rng.uniform(-bound, bound, out_features).astype(dt), requires_grad=True, name="bias")
                     if bias else None)

    def parameters(self) -> list[Tensor]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def forward(self, x: Any) -> Tensor:  # functional.linear, one call frame less per layer
        if self.bias is None:
            return apply(ops.Linear, x, self.weight)
        return apply(ops.Linear, x, self.weight, self.bias)


class _Activation(Module):
    op: type = ops.ReLU

    def parameters(self) -> list[Tensor]:
        return []

    def forward(self, x: Any) -> Tensor:
        return apply(self.op, x)


class ReLU(_Activation):
    op = ops.ReLU


class Sigmoid(_Activation):
    op = ops.Sigmoid


class Tanh(_Activation):
    op = ops.Tanh


def activation(name: str) -> _Activation:
    classes = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
    if name not in classes:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return classes[name]()


class MLP(Module):
    """`depth` hidden Linear+activation layers of width `hidden`, then one output Linear.

    Layer i (0-based) is hidden layer i; the output Linear is layer `depth`.

    `checkpoint` (none | sqrt | every:K) splits the hidden layers into segments, each run as one
    `Checkpoint` op when a graph is recorded: only each segment's input is held for backward, and the
    segment's forward is recomputed when backward reaches it. Inference runs the layers plainly whatever
    the strategy. (The saved-tensor policy is an engine setting: `autograd.saved_tensors_policy`.)
    """

    def __init__(self, in_features: int, hidden: int, depth: int, out_features: int, activation: str = "relu",
                 bias: bool = True, dtype: Any = "float32", seed: int | None = 0, checkpoint: str = "none"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        for name, value in (("in_features", in_features), ("hidden", hidden), ("out_features", out_features)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        rng = np.random.default_rng(seed)
        self.in_features, self.hidden, self.depth, self.out_features = in_features, hidden, depth, out_features
        self.activation_name, self.bias, self.dtype = activation, bias, _check_dtype(dtype)
        widths = [in_features] + [hidden] * depth
        self.hidden_layers = [Linear(widths[i], widths[i + 1], bias, dtype, rng) for i in range(depth)]
        self.activations = [globals()["activation"](activation) for _ in range(depth)]
        self.output = Linear(hidden, out_features, bias, dtype, rng)
        self.checkpoint = parse_checkpoint(checkpoint)
        self.segments = checkpoint_segments(self.checkpoint, depth)

    @property
    def linears(self) -> list[Linear]:
        return self.hidden_layers + [self.output]

    def parameters(self) -> list[Tensor]:
        return [p for layer in self.linears for p in layer.parameters()]

    def forward(self, x: Any) -> Tensor:
        h = x if isinstance(x, Tensor) else Tensor(x)
        with ops.small_ufunc_buffer():  # once per forward, not once per layer's bias add
            if self.segments is None or not STATE.grad_enabled:
                h = self.run_layers(h, 0, self.depth)
            else:
                for start, stop in self.segments:
                    params = [p for layer in self.hidden_layers[start:stop] for p in layer.parameters()]
                    with layer_scope(start):
                        h = checkpoint_segment(self.run_layers, h, params, start, stop)
            with layer_scope(self.depth):
                return self.output(h)

    def run_layers(self, h: Tensor, start: int, stop: int) -> Tensor:
        """Hidden layers start..stop-1 (a checkpoint's segment, or all of them)."""
        previous_layer = STATE.layer  # what layer_scope does, once for the loop rather than once per layer
        try:
            with ops.small_ufunc_buffer():  # a checkpoint recomputes this outside `forward`
                for i in range(start, stop):
                    STATE.layer = i
                    z = self.hidden_layers[i].forward(h)  # .forward: one call frame less than the module call
                    h = None  # drop the layer's input before its activation exists: inference holds 2, not 3
                    h = self.activations[i].forward(z)
                    z = None
        finally:
            STATE.layer = previous_layer
        return h


class SeedMLP(Module):
    """The seed's model: o = W2 φ(W1 x), no biases; J = mean cross-entropy + λ/2 (‖W1‖²_F + ‖W2‖²_F)."""

    def __init__(self, d: int, h: int, q: int, lam: float = 0.0, activation: str = "relu",
                 dtype: Any = "float32", seed: int | None = 0):
        rng = np.random.default_rng(seed)
        self.lam = lam
        self.hidden_layer = Linear(d, h, bias=False, dtype=dtype, seed=rng)
        self.phi = globals()["activation"](activation)
        self.output_layer = Linear(h, q, bias=False, dtype=dtype, seed=rng)

    @property
    def W1(self) -> Tensor:
        return self.hidden_layer.weight

    @property
    def W2(self) -> Tensor:
        return self.output_layer.weight

    def parameters(self) -> list[Tensor]:
        return [self.W1, self.W2]

    def forward(self, x: Any) -> Tensor:
        with layer_scope(0):
            h = self.phi(self.hidden_layer(x))
        with layer_scope(1):
            return self.output_layer(h)

    def objective(self, x: Any, y: Any) -> Tensor:
        """J = L + s."""
        loss = cross_entropy(self.forward(x), y)
        if self.lam == 0:
            return loss
        return loss + l2_penalty(self.parameters(), self.lam)

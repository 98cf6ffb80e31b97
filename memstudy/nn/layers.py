"""Layers: the Module base, Linear and the element-wise activations (convolution layers in `nn/conv.py`, models
in `nn/models/`)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from ..autograd import Tensor, apply
from ..autograd import ops
from ..autograd.precision import dtype as as_dtype
from . import init
from .models.registry import DTYPES
from .repeat import Blocks

ACTIVATIONS = ("relu", "sigmoid", "tanh")


def check_dtype(dtype: Any) -> np.dtype:
    """`dtype` as a numpy dtype (bfloat16 through ml_dtypes); ValueError unless it is one a model may use."""
    try:
        dt = as_dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}") from None
    if dt.name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dt.name}")
    return dt


def _indexed(items: Any) -> Any:
    """(name index, item) of a list of modules: its position, or a block's index in a compressed stack of blocks
    (nn.repeat.Blocks), so that names and `model.blocks[i]` agree either way."""
    return items.items() if isinstance(items, Blocks) else enumerate(items)


class Module:
    """A layer or model. Parameters are found by walking attributes (in definition order): a leaf Tensor
    (trainable, or frozen with `requires_grad = False`: model state either way), a Module, or a list of
    Modules, named PyTorch-style (`h.0.attn.c_attn.weight`). A Tensor reached twice (a tied weight) is listed
    once, under its first name. As in PyTorch, an optimiser skips a parameter whose gradient is None."""

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Tensor]]:
        found: list[tuple[str, Tensor]] = []
        seen: set[int] = set()
        for name, p in self._walk(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                found.append((name, p))
        return found

    def _walk(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        for attr, value in vars(self).items():
            name = f"{prefix}{attr}"
            if isinstance(value, Tensor):
                if value.is_leaf:  # a recorded op's output kept on a module would be the graph's, not state
                    yield name, value
            elif isinstance(value, Module):
                yield from value._walk(name + ".")
            elif isinstance(value, (list, tuple)):
                for i, item in _indexed(value):
                    if isinstance(item, Module):
                        yield from item._walk(f"{name}.{i}.")

    def parameters(self) -> list[Tensor]:
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """(name, module) of this module ("" for itself) and every module below it, PyTorch-style names, in
        definition order (the walk `named_parameters` makes)."""
        yield prefix.rstrip("."), self
        for attr, value in vars(self).items():
            if isinstance(value, Module):
                yield from value.named_modules(f"{prefix}{attr}.")
            elif isinstance(value, (list, tuple)):
                for i, item in _indexed(value):
                    if isinstance(item, Module):
                        yield from item.named_modules(f"{prefix}{attr}.{i}.")

    # Model state that is not a parameter (batch norm's running statistics; PyTorch's "buffers"): plain
    # arrays named in a module's `buffer_names`. They take no gradient and no optimiser step; the ledger
    # registers them at the baseline with the parameters (category `parameter`, role = the buffer's name).
    buffer_names: tuple[str, ...] = ()

    def named_buffers(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        """(name, array) of every buffer, the module's own first, then its children's, PyTorch-style names."""
        found = [(f"{prefix}{name}", getattr(self, name)) for name in self.buffer_names]
        for attr, value in vars(self).items():
            if isinstance(value, Module):
                found += value.named_buffers(f"{prefix}{attr}.")
            elif isinstance(value, (list, tuple)):
                for i, item in _indexed(value):
                    if isinstance(item, Module):
                        found += item.named_buffers(f"{prefix}{attr}.{i}.")
        return found

    def buffer_layers(self) -> list[int | None]:
        """The layer index of each buffer (aligned with `named_buffers()`)."""
        return [None] * len(self.named_buffers())

    def parameter_layers(self) -> list[int | None]:
        """The layer index of each parameter (aligned with `parameters()`), for per-layer reports."""
        return [None] * len(self.parameters())

    def parameter_nbytes(self) -> int:
        return sum(p.nbytes for p in self.parameters())

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Linear(Module):
    """y = x Wᵀ + b with W of shape (out_features, in_features), initialised U(-1/√in, 1/√in) like PyTorch;
    with `std`, W ~ N(0, std²) and b = 0 instead (GPT-2's initialisation)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = "float32",
                 seed: int | np.random.Generator | None = 0, std: float | None = None):
        dt = check_dtype(dtype)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.in_features, self.out_features = in_features, out_features
        if std is not None:
            self.weight = Tensor(init.normal(rng, (out_features, in_features), dt, std=std), requires_grad=True,
                                 name="weight")
            self.bias = Tensor(init.constant(0.0, out_features, dt), requires_grad=True, name="bias") if bias else None
            return
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Tensor(init.uniform(rng, -bound, bound, (out_features, in_features), dt),
                             requires_grad=True, name="weight")
        self.bias = (Tensor(init.uniform(rng, -bound, bound, out_features, dt), requires_grad=True, name="bias")
                     if bias else None)

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None = None) -> "Linear":
        """A Linear around parameters that exist already (a head tied to an embedding's weight: one Tensor, which
        `named_parameters` lists once, under its first name)."""
        layer = cls.__new__(cls)
        layer.out_features, layer.in_features = weight.shape
        layer.weight, layer.bias = weight, bias
        return layer

    def forward(self, x: Any, product: Callable[..., Tensor] | None = None) -> Tensor:
        """x Wᵀ + b (functional.linear, one call frame less per layer); or `product(x, weight, bias)`, a parallel
        layout's product (TensorParallel's row- and sequence-parallel Linears), still made inside this forward so
        that whatever wraps it (ZeRO's gathering and gradient reduction) hands in the weights it sees."""
        if product is not None:
            return product(x, self.weight, self.bias)
        if self.bias is None:
            return apply(ops.Linear, x, self.weight)
        return apply(ops.Linear, x, self.weight, self.bias)


class _Activation(Module):
    op: type = ops.ReLU

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

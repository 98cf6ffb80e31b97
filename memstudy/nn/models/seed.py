"""The seed's model (`model = "seed"`): o = W2 φ(W1 x), no biases; J = mean cross-entropy + λ/2 (‖W1‖² + ‖W2‖²).

The one-hidden-layer perceptron of the lesson the project comes from (the README's opening section). `depth` is fixed at 1.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...autograd.precision import dtype as as_dtype
from ...autograd import Tensor, layer_scope
from .. import init
from ..functional import cross_entropy, l2_penalty
from ..layers import ACTIVATIONS, Linear, Module, activation as make_activation
from .registry import ConfigError, Family, Field, GraphNames, StateBytes


class SeedMLP(Module):
    """The seed's model: o = W2 φ(W1 x), no biases; J = mean cross-entropy + λ/2 (‖W1‖²_F + ‖W2‖²_F)."""

    def __init__(self, d: int, h: int, q: int, lam: float = 0.0, activation: str = "relu",
                 dtype: Any = "float32", seed: int | None = 0):
        rng = np.random.default_rng(seed)
        self.lam = lam
        self.hidden_layer = Linear(d, h, bias=False, dtype=dtype, seed=rng)
        self.phi = make_activation(activation)
        self.output_layer = Linear(h, q, bias=False, dtype=dtype, seed=rng)

    @property
    def W1(self) -> Tensor:
        return self.hidden_layer.weight

    @property
    def W2(self) -> Tensor:
        return self.output_layer.weight

    def parameter_layers(self) -> list[int | None]:
        return [0, 1]

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


class SeedFamily(Family):
    name = "seed"
    description = "the seed's perceptron: W2 φ(W1 x), no biases, cross-entropy + λ/2 Σ‖W‖²"
    findings = ("mlp", "remedies", "precision")  # the report's sections on this family (memstudy/findings/)
    defaults = {"depth": 1}
    fields = (
        Field("in_features", int, None, "input features d (default: width)", minimum=1),
        Field("out_features", int, 10, "outputs q (classes)", minimum=1, flag="--classes", aliases=("classes",)),
        Field("activation", str, "relu", "φ", choices=ACTIVATIONS),
        Field("lam", float, 0.0, "L2 regularisation λ", minimum=0.0),
    )

    def check(self, config: dict[str, Any]) -> None:
        if config["depth"] != 1:
            raise ConfigError(f"depth of the seed model is 1 (one hidden layer), got {config['depth']}")
        if config["checkpoint"] != "none":
            raise ConfigError(f"checkpoint: the seed model has one layer, nothing to checkpoint; got "
                              f"{config['checkpoint']!r}")
        if config["in_features"] is None:
            config["in_features"] = config["width"]

    def build(self, config: dict[str, Any]) -> SeedMLP:
        return SeedMLP(config["in_features"], config["width"], config["out_features"], lam=config["lam"],
                       activation=config["activation"], dtype=config["dtype"], seed=config["seed"])

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        x = init.normal(rng, (config["batch_size"], config["in_features"]), config["dtype"])
        return x, init.integers(rng, 0, config["out_features"], config["batch_size"])

    def loss(self, model: SeedMLP, inputs: Any, labels: Any) -> Tensor:
        return model.objective(inputs, labels)

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return ["hidden", "output"]

    def state_bytes(self, config: dict[str, Any]) -> StateBytes:
        """W1 (h × d) and W2 (q × h); the batch: x (batch × d) and int64 labels."""
        itemsize = as_dtype(config["dtype"]).itemsize
        weights = config["width"] * (config["in_features"] + config["out_features"]) * itemsize
        labels = 8 * config["batch_size"] if config["mode"] == "train" else 0
        return StateBytes(weights, weights, config["batch_size"] * config["in_features"] * itemsize + labels)

    def graph_names(self, model: SeedMLP, config: dict[str, Any]) -> GraphNames:
        from .mlp import seed_notation

        return seed_notation([model.hidden_layer, model.output_layer], config["depth"])


FAMILY = SeedFamily()

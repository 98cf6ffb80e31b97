"""A model family of your own: a residual MLP, `x + relu(Linear(x))` per block.

Measure it like a built-in family:

    memstudy predict --model examples/residual.py:ResidualFamily --depth 8 --width 128 --batch 64
    memstudy run     --model examples/residual.py:ResidualFamily --depth 8 --width 128 --batch 64 --mode both
    memstudy graph   --model examples/residual.py:ResidualFamily --depth 2 --width 8 --out residual.dot

or in a spec's [grid]: `model = "examples/residual.py:ResidualFamily"`. The family declares its fields, builds
its model and draws its batch through `memstudy.nn.init`, so the same code builds the shape-only model the
predictor runs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from memstudy.autograd import STATE, Tensor, layer_scope
from memstudy.nn import Linear, Module, init
from memstudy.nn.models import Family, Field


class ResidualMLP(Module):
    """Linear(in_features, width), then `depth` blocks h ← h + relu(Linear(h)), then Linear(width, classes)."""

    def __init__(self, in_features: int, width: int, depth: int, classes: int, dtype: str, seed: int):
        rng = np.random.default_rng(seed)
        self.embed = Linear(in_features, width, dtype=dtype, seed=rng)
        self.blocks = [Linear(width, width, dtype=dtype, seed=rng) for _ in range(depth)]
        self.head = Linear(width, classes, dtype=dtype, seed=rng)

    def parameter_layers(self) -> list[int | None]:
        depth = len(self.blocks)
        return [0, 0] + [1 + i for i in range(depth) for _ in range(2)] + [depth + 1, depth + 1]

    def forward(self, x: Any) -> Tensor:
        with layer_scope(0):
            h = self.embed(x)
        for i, block in enumerate(self.blocks):
            with layer_scope(1 + i):
                h = h + block(h).relu()  # the skip keeps h alive: each block adds one buffer more than an MLP's
        with layer_scope(len(self.blocks) + 1):
            return self.head(h)


class ResidualFamily(Family):
    name = "residual"
    description = "Linear, depth × (h + relu(Linear(h))), Linear; softmax cross-entropy"
    defaults = {"width": 128}
    fields = (
        Field("in_features", int, 64, "input features", minimum=1),
        Field("classes", int, 10, "output classes", minimum=1),
    )

    def check(self, config: dict[str, Any]) -> None:
        if config["checkpoint"] != "none":
            raise ValueError(f"checkpoint: this example implements none only, got {config['checkpoint']!r}")

    def build(self, config: dict[str, Any]) -> ResidualMLP:
        return ResidualMLP(config["in_features"], config["width"], config["depth"], config["classes"],
                           config["dtype"], config["seed"])

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        x = init.normal(rng, (config["batch_size"], config["in_features"]), config["dtype"])
        return x, init.integers(rng, 0, config["classes"], config["batch_size"])

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return ["embed"] + [f"block {i}" for i in range(config["depth"])] + ["head"]

"""A family that misuses `nn.repeat.Plan`: its first block hands on a view of a buffer twice the size of those the
other blocks make, so one block cannot stand for the others (tests/test_repeat.py: the predictor notices and runs
every block)."""
from __future__ import annotations

from typing import Any

import numpy as np

from memstudy.autograd import Tensor, apply, layer_scope, ops
from memstudy.nn import Linear, Module, init
from memstudy.nn.models import Family
from memstudy.nn.repeat import Plan


class Unchained(Module):
    def __init__(self, width: int, depth: int, classes: int, dtype: str, seed: int):
        rng = np.random.default_rng(seed)
        self.width, self.depth = width, depth
        self.plan = Plan(depth)
        self.blocks = self.plan.build(lambda i: Linear(width, 2 * width if i == 0 else width, dtype=dtype, seed=rng))
        self.head = Linear(width, classes, dtype=dtype, seed=rng)

    def forward(self, x: Any) -> Tensor:
        h = x
        for i in self.plan.blocks(0, self.depth):
            with layer_scope(i):
                z = self.blocks[i](h)
                if i == 0:  # the first half of a (batch, 2 × width) buffer
                    z = apply(ops.Slice, z, axis=1, start=0, stop=self.width)
                h = z.relu()
        with layer_scope(self.depth):
            return self.head(h)


class UnchainedFamily(Family):
    name = "unchained"
    defaults = {"width": 8, "batch_size": 3}

    def build(self, config: dict[str, Any]) -> Unchained:
        return Unchained(config["width"], config["depth"], 4, config["dtype"], config["seed"])

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        x = init.normal(rng, (config["batch_size"], config["width"]), config["dtype"])
        return x, init.integers(rng, 0, 4, config["batch_size"])

"""A user family that declares what the built-in ones declare (registry.py's docstring): its state bytes in closed
form, and its alike blocks built and run through `nn.repeat.Plan`, checkpoint segments included. A frozen input
projection makes its trainable bytes differ from its parameter bytes."""
from __future__ import annotations

from typing import Any

import numpy as np

from memstudy.autograd import STATE, Tensor, checkpoint, layer_scope
from memstudy.nn import Linear, Module, init
from memstudy.nn.models import Family, Field
from memstudy.nn.models.registry import StateBytes, checkpoint_segment_size
from memstudy.nn.repeat import Plan


class ResidualStack(Module):
    """A frozen Linear(in_features, width), `depth` blocks h ← h + relu(Linear(h)), then Linear(width, classes)."""

    def __init__(self, in_features: int, width: int, depth: int, classes: int, dtype: str, seed: int,
                 checkpoint: str = "none"):
        rng = np.random.default_rng(seed)
        self.embed = Linear(in_features, width, dtype=dtype, seed=rng)
        for p in self.embed.parameters():
            p.requires_grad = False
        self.plan = Plan(depth, checkpoint_segment_size(checkpoint, depth))
        self.blocks = self.plan.build(lambda i: Linear(width, width, dtype=dtype, seed=rng))
        self.head = Linear(width, classes, dtype=dtype, seed=rng)
        self.depth = depth

    def parameter_layers(self) -> list[int | None]:
        return [0, 0] + [1 + i for i, _ in self.blocks.items() for _ in range(2)] + [self.depth + 1] * 2

    def forward(self, x: Any) -> Tensor:
        with layer_scope(0):
            h = self.embed(x)
        if self.plan.segment_size == self.depth or not STATE.grad_enabled:
            h = self.run(h, 0, self.depth)
        else:
            for start, stop in self.plan.segments():
                params = [p for block in self.blocks[start:stop] for p in block.parameters()]
                with layer_scope(1 + start):
                    h = checkpoint(self.run, h, params, start, stop)
        with layer_scope(self.depth + 1):
            return self.head(h)

    def run(self, h: Tensor, start: int, stop: int) -> Tensor:
        for i in self.plan.blocks(start, stop):
            with layer_scope(1 + i):
                h = h + self.blocks[i](h).relu()
        return h


class DeclaredFamily(Family):
    name = "declared"
    description = "frozen Linear, depth × (h + relu(Linear(h))) through nn.repeat.Plan, Linear"
    defaults = {"width": 16, "batch_size": 4}
    fields = (
        Field("in_features", int, 12, "input features", minimum=1),
        Field("classes", int, 5, "output classes", minimum=1),
    )

    def build(self, config: dict[str, Any]) -> ResidualStack:
        return ResidualStack(config["in_features"], config["width"], config["depth"], config["classes"],
                             config["dtype"], config["seed"], config["checkpoint"])

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        x = init.normal(rng, (config["batch_size"], config["in_features"]), config["dtype"])
        return x, init.integers(rng, 0, config["classes"], config["batch_size"])

    def state_bytes(self, config: dict[str, Any]) -> StateBytes:
        width, itemsize = config["width"], np.dtype(config["dtype"]).itemsize
        frozen = (config["in_features"] + 1) * width
        trainable = config["depth"] * (width + 1) * width + (width + 1) * config["classes"]
        labels = 8 * config["batch_size"] if config["mode"] == "train" else 0
        return StateBytes((frozen + trainable) * itemsize, trainable * itemsize,
                          config["batch_size"] * config["in_features"] * itemsize + labels)

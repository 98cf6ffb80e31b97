"""A user family for tests that lists no findings: depth × tanh(Linear(width)) blocks, then a classifier.

It declares no `parameter_layers()` (each parameter belongs to the layer of the op that first takes it) and no
`findings` (its report is the generic one). Its field `classes` is not the MLP's `out_features`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from memstudy.autograd import Tensor, layer_scope
from memstudy.nn import Linear, Module, init
from memstudy.nn.models import Family, Field


class TanhStack(Module):
    def __init__(self, width: int, depth: int, classes: int, dtype: str, seed: int):
        rng = np.random.default_rng(seed)
        self.blocks = [Linear(width, width, dtype=dtype, seed=rng) for _ in range(depth)]
        self.classifier = Linear(width, classes, dtype=dtype, seed=rng)

    def forward(self, x: Any) -> Tensor:
        h = x
        for i, block in enumerate(self.blocks):
            with layer_scope(i):
                h = block(h).tanh()
        with layer_scope(len(self.blocks)):
            return self.classifier(h)


class PlainFamily(Family):
    name = "plain"
    description = "depth × tanh(Linear(width)), Linear(width, classes); softmax cross-entropy"
    defaults = {"width": 16, "batch_size": 4}
    fields = (Field("classes", int, 3, "output classes", minimum=1),)

    def check(self, config: dict[str, Any]) -> None:
        if config["checkpoint"] != "none":
            raise ValueError("checkpoint: this family implements none only")

    def build(self, config: dict[str, Any]) -> TanhStack:
        return TanhStack(config["width"], config["depth"], config["classes"], config["dtype"], config["seed"])

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        x = init.normal(rng, (config["batch_size"], config["width"]), config["dtype"])
        return x, init.integers(rng, 0, config["classes"], config["batch_size"])

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return [f"tanh block {i}" for i in range(config["depth"])] + ["classifier"]


class PlainWithFindings(PlainFamily):
    """The same family, listing a findings module of its own (tests/families/plain_findings.py)."""

    findings = ("families.plain_findings",)

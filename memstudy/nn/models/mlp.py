"""The MLP family (`model = "mlp"`): `depth` Linear+activation layers of width `width`, then an output Linear.

The studies' model since the first study; its fields, defaults and rules are declared here once.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...autograd.precision import dtype as as_dtype
from ...autograd import STATE, Tensor, layer_scope
from ...autograd import checkpoint as checkpoint_segment
from ...autograd import ops
from .. import init
from ..layers import ACTIVATIONS, Linear, Module, activation as make_activation, check_dtype
from ..lora import apply_lora_config, check_lora_config, lora_fields
from ..repeat import Plan
from .registry import (ConfigError, Family, Field, GraphNames, StateBytes, checkpoint_segment_size,
                       parse_checkpoint)


class MLP(Module):
    """`depth` hidden Linear+activation layers of width `hidden`, then one output Linear.

    Layer i (0-based) is hidden layer i; the output Linear is layer `depth`.

    `checkpoint` (none | sqrt | every:K) splits the hidden layers into segments, each run as one
    `Checkpoint` op when a graph is recorded: only each segment's input is held for backward, and the
    segment's forward is recomputed when backward reaches it. Inference runs the layers plainly whatever
    the strategy. (The saved-tensor policy is an engine setting: `autograd.saved_tensors_policy`.)
    The hidden layers are a stack of alike blocks (`nn.repeat.Plan`) from the second on: the predictor runs a
    few of them however deep the model is.
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
        self.activation_name, self.bias, self.dtype = activation, bias, check_dtype(dtype)
        self.checkpoint = parse_checkpoint(checkpoint)
        self.segment_size = checkpoint_segment_size(self.checkpoint, depth)
        self.plan = Plan(depth, self.segment_size)
        self.hidden_layers = self.plan.build(
            lambda i: Linear(in_features if i == 0 else hidden, hidden, bias, dtype, rng))
        self.activations = self.plan.build(lambda i: make_activation(activation))
        self.output = Linear(hidden, out_features, bias, dtype, rng)

    output_layer_name = "output"  # LoRA's `all-linear` leaves the output layer out, as peft does

    @property
    def linears(self) -> list[Linear]:
        return self.hidden_layers + [self.output]

    def parameter_layers(self) -> list[int | None]:
        return [i for i, linear in self.hidden_layers.items() + [(self.depth, self.output)]
                for _ in linear.parameters()]

    def forward(self, x: Any) -> Tensor:
        h = x if isinstance(x, Tensor) else Tensor(x)
        with ops.small_ufunc_buffer():  # once per forward, not once per layer's bias add
            if self.segment_size is None or not STATE.grad_enabled:
                h = self.run_layers(h, 0, self.depth)
            else:
                for start, stop in self.plan.segments():
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
                for i in self.plan.blocks(start, stop):
                    STATE.layer = i
                    z = self.hidden_layers[i].forward(h)  # .forward: one call frame less than the module call
                    h = None  # drop the layer's input before its activation exists: inference holds 2, not 3
                    h = self.activations[i].forward(z)
                    z = None
        finally:
            STATE.layer = previous_layer
        return h


class MLPFamily(Family):
    name = "mlp"
    description = "depth × (Linear(width) + activation), then Linear(width, out_features); softmax cross-entropy"
    findings = ("mlp", "remedies", "precision")  # the report's sections on this family (memstudy/findings/)
    fields = (
        Field("in_features", int, None, "input features (default: width)", minimum=1),
        Field("out_features", int, 10, "output classes", minimum=1, flag="--classes", aliases=("classes",)),
        Field("activation", str, "relu", "hidden activation", choices=ACTIVATIONS),
        Field("bias", bool, True, "Linear biases"),
        *lora_fields("all-linear"),  # the hidden layers (all-linear leaves the output layer out)
    )

    def check(self, config: dict[str, Any]) -> None:
        if config["in_features"] is None:
            config["in_features"] = config["width"]
        check_lora_config(self.base_model, config)

    def base_model(self, config: dict[str, Any]) -> MLP:
        """The model without LoRA."""
        return MLP(config["in_features"], config["width"], config["depth"], config["out_features"],
                   activation=config["activation"], bias=config["bias"], dtype=config["dtype"],
                   seed=config["seed"], checkpoint=config["checkpoint"])

    def build(self, config: dict[str, Any]) -> MLP:
        return apply_lora_config(self.base_model(config), config)

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        batch = config["batch_size"]
        x = init.normal(rng, (batch, config["in_features"]), config["dtype"])
        y = init.integers(rng, 0, config["out_features"], batch)
        return x, y

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return [f"hidden {i}" for i in range(config["depth"])] + ["output"]

    def state_bytes(self, config: dict[str, Any]) -> StateBytes | None:
        """W (out × in) and b (out) per Linear: in_features → width, depth − 1 × width → width, width → classes;
        the batch: x (batch × in_features) and int64 labels. With LoRA: None (counted from the shape-only build,
        the hidden layers built once and counted as many)."""
        if config.get("lora_rank"):
            return None
        depth, width, n_in, n_out, batch = (config["depth"], config["width"], config["in_features"],
                                            config["out_features"], config["batch_size"])
        bias = 1 if config["bias"] else 0
        weights = width * (n_in + bias) + (depth - 1) * width * (width + bias) + n_out * (width + bias)
        itemsize = as_dtype(config["dtype"]).itemsize
        labels = 8 * batch if config["mode"] == "train" else 0
        return StateBytes(weights * itemsize, weights * itemsize, batch * n_in * itemsize + labels)

    def graph_names(self, model: Any, config: dict[str, Any]) -> GraphNames:
        return seed_notation(model.linears, config["depth"])


def seed_notation(linears: list[Linear], depth: int) -> GraphNames:
    """The seed's names: W1, b1, ... for the Linears' weights and biases; z_i (a Linear's output), h_i (its
    activation's) and o (the output layer's)."""
    names = {}
    for i, linear in enumerate(linears):
        names[id(linear.weight)] = f"W{i + 1}"
        if linear.bias is not None:
            names[id(linear.bias)] = f"b{i + 1}"

    def output(op: str, layer: int | None) -> str | None:
        index = "" if layer is None else layer + 1
        if op == "linear":
            return "o" if layer == depth else f"z{index}"
        return f"h{index}" if op in ACTIVATIONS else None

    return GraphNames(names, output)


FAMILY = MLPFamily()

__all__ = ["FAMILY", "MLP", "MLPFamily", "ConfigError"]

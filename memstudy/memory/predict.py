"""Predict a step's memory from the configuration alone: no arrays are allocated, nothing is run.

The prediction replays, buffer by buffer, the allocations and frees the engine makes for an MLP step
(the order of `memstudy.nn.MLP.forward`, `autograd.engine.backward` and the ops' backward functions)
and tracks live bytes per ledger category. So its activation, parameter, gradient and optimiser-state
bytes equal the ledger's exactly, and its peak equals the ledger's tracked peak.

Where the real process peak (tracemalloc) differs: arrays an op allocates and drops inside itself
(softmax's row maxima and shifted logits, batch × classes; reductions' scratch) are not buffers the
ledger sees, so they are not predicted either; they add a few kB to tens of kB above the tracked peak.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..config import normalize
from ..optim import CHUNK_ELEMENTS, OPTIMIZERS

CATEGORIES = ("parameter", "optimizer_state", "input", "gradient", "activation", "temporary", "output")
LABEL_ITEMSIZE = np.dtype(np.int64).itemsize  # integer class labels
STATE_COPIES = dict(zip(OPTIMIZERS, (0, 1, 2)))  # optimiser state per parameter byte


class _Replay:
    """Live bytes per category under a sequence of allocations and frees; remembers the peak."""

    def __init__(self) -> None:
        self.live = dict.fromkeys(CATEGORIES, 0)
        self.maxima = dict.fromkeys(CATEGORIES, 0)
        self.peak_bytes = 0
        self.peak_split = dict(self.live)

    def alloc(self, nbytes: int, category: str) -> tuple[int, str]:
        self.live[category] += nbytes
        self.maxima[category] = max(self.maxima[category], self.live[category])
        total = sum(self.live.values())
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_split = total, dict(self.live)
        return nbytes, category

    def free(self, buffer: tuple[int, str] | None) -> None:
        if buffer is not None:
            self.live[buffer[1]] -= buffer[0]


def layer_shapes(config: dict[str, Any]) -> list[tuple[int, int]]:
    """(out, in) of every Linear: `depth` hidden layers, then the output layer."""
    widths = [config["in_features"]] + [config["width"]] * config["depth"]
    return [(widths[i + 1], widths[i]) for i in range(config["depth"])] + [(config["out_features"], config["width"])]


def predict(raw_config: dict[str, Any]) -> dict[str, Any]:
    """Bytes by category, the step's peak and total peak, for one configuration (labelled predicted)."""
    config = normalize(raw_config)
    itemsize = np.dtype(config["dtype"]).itemsize
    batch, width, classes = config["batch_size"], config["width"], config["out_features"]
    train = config["mode"] == "train"
    shapes = layer_shapes(config)
    param_sizes = [(out * inp + (out if config["bias"] else 0)) * itemsize for out, inp in shapes]
    parameter_bytes = sum(param_sizes)
    state_bytes = STATE_COPIES[config["optimizer"]] * parameter_bytes if train else 0
    input_bytes = batch * config["in_features"] * itemsize + (batch * LABEL_ITEMSIZE if train else 0)

    replay = _Replay()
    replay.alloc(parameter_bytes, "parameter")
    replay.alloc(state_bytes, "optimizer_state")
    replay.alloc(input_bytes, "input")
    baseline_bytes = replay.peak_bytes
    hidden = batch * width * itemsize  # one batch × width buffer
    logits = batch * classes * itemsize
    if train:
        _train_step(replay, config, shapes, itemsize, hidden, logits)
    else:
        _inference_step(replay, config, hidden, logits)
    activation_bytes = replay.maxima["activation"]
    return {
        "parameter_bytes": parameter_bytes,
        "gradient_bytes": parameter_bytes if train else 0,
        "optimizer_state_bytes": state_bytes,
        "input_bytes": input_bytes,
        "predicted_activation_bytes": activation_bytes,
        "predicted_saved_tensors": config["depth"] + 1 if train else 0,
        "predicted_peak_bytes": replay.peak_bytes,
        "predicted_step_peak_bytes": replay.peak_bytes - baseline_bytes,
        "predicted_peak_by_category": replay.peak_split,
    }


def _train_step(replay: _Replay, config: dict, shapes: list, itemsize: int, hidden: int, logits: int) -> None:
    depth, bias = config["depth"], config["bias"]
    # forward: each hidden layer's Linear output z is a temporary; the activation h is saved (by the
    # activation itself and by the next Linear, one buffer) until backward reaches it
    saved = []
    for _ in range(depth):
        z = replay.alloc(hidden, "temporary")
        saved.append(replay.alloc(hidden, "activation"))
        replay.free(z)
    out = replay.alloc(logits, "temporary")
    replay.alloc(itemsize, "output")  # the loss value
    probs = replay.alloc(logits, "activation")  # softmax probabilities saved by the fused loss
    replay.free(out)
    # backward
    seed = replay.alloc(itemsize, "temporary")
    grad = replay.alloc(logits, "temporary")  # ∂J/∂o
    replay.free(seed)
    replay.free(probs)
    for layer in range(depth, -1, -1):
        out_features, in_features = shapes[layer]
        if layer < depth:  # the activation's backward: one new buffer, then h is released
            new = replay.alloc(hidden, "temporary")
            replay.free(grad)
            replay.free(saved[layer])
            grad = new
        # the Linear's backward: ∂J/∂input (not for the network input), ∂J/∂W, ∂J/∂b
        new = replay.alloc(hidden, "temporary") if layer > 0 else None
        replay.alloc(out_features * in_features * itemsize, "gradient")
        if bias:
            replay.alloc(out_features * itemsize, "gradient")
        replay.free(grad)
        grad = new
    # the optimiser updates in place through one scratch buffer of at most CHUNK_ELEMENTS elements
    largest = max(out * inp for out, inp in shapes)
    replay.free(replay.alloc(min(largest, CHUNK_ELEMENTS) * itemsize, "temporary"))


def _inference_step(replay: _Replay, config: dict, hidden: int, logits: int) -> None:
    previous = None  # the network input stays with the caller
    for _ in range(config["depth"]):
        z = replay.alloc(hidden, "temporary")
        replay.free(previous)  # MLP.forward drops its input before the activation exists
        previous = replay.alloc(hidden, "temporary")
        replay.free(z)
    replay.alloc(logits, "output")
    replay.free(previous)

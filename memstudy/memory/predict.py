"""Predict a step's memory from the configuration alone: no arrays are allocated, nothing is run.

The prediction replays, buffer by buffer, the allocations and frees the engine makes for an MLP step
(the order of `memstudy.nn.MLP.forward`, `autograd.engine.apply` / `backward`, the ops' backward
functions, the checkpoint's recompute and the saved-tensor policies), in the order the ledger sees them.
Each symbolic buffer has a reference count: it is freed when its last holder (a variable of the model's
forward, a node's saved state, a pending gradient) lets go, as CPython frees the real one. When the step
is over each buffer gets its category by the ledger's rule (registered, else gradient, else saved for
backward = activation, else alive = output, else temporary). So activation, parameter, gradient and
optimiser-state bytes equal the ledger's exactly, for every checkpoint strategy and policy, and so does
the peak the ledger tracks.

Where the real process peak (tracemalloc) differs: arrays an op allocates and drops inside itself
(softmax's row maxima and shifted logits, batch × classes; reductions' scratch) are not buffers the
ledger sees, so they are not predicted either; they add a few kB to tens of kB above the tracked peak.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import normalize
from ..nn.models.registry import checkpoint_segments
from ..optim import CHUNK_ELEMENTS, OPTIMIZERS

CATEGORIES = ("parameter", "optimizer_state", "input", "gradient", "activation", "temporary", "output")
REGISTERED = ("parameter", "optimizer_state", "input")
LABEL_ITEMSIZE = np.dtype(np.int64).itemsize  # integer class labels
HALF_ITEMSIZE = 2  # float16, the `half` policy's storage
STATE_COPIES = dict(zip(OPTIMIZERS, (0, 1, 2)))  # optimiser state per parameter byte


class _Buffers:
    """Symbolic buffers: sizes, reference counts, and the events the ledger would record."""

    def __init__(self) -> None:
        self.nbytes: list[int] = []
        self.refs: list[int] = []
        self.registered: list[str | None] = []
        self.saved: list[bool] = []
        self.gradient: list[bool] = []
        self.events: list[tuple[int, int]] = []  # (buffer, delta bytes)

    def register(self, nbytes: int, category: str) -> int:
        b = self.new(nbytes)
        self.registered[b] = category
        self.refs[b] = 1 << 30  # the caller's: never freed within the step
        return b

    def new(self, nbytes: int) -> int:
        """A buffer the ledger sees now, with one reference (its creator's)."""
        self.nbytes.append(nbytes)
        self.refs.append(1)
        self.registered.append(None)
        self.saved.append(False)
        self.gradient.append(False)
        self.events.append((len(self.nbytes) - 1, nbytes))
        return len(self.nbytes) - 1

    def ref(self, b: int | None) -> int | None:
        if b is not None:
            self.refs[b] += 1
        return b

    def unref(self, b: int | None) -> None:
        if b is None:
            return
        self.refs[b] -= 1
        if self.refs[b] == 0:
            self.events.append((b, -self.nbytes[b]))

    def alive(self, b: int) -> bool:
        return self.refs[b] > 0

    def category(self, b: int) -> str:
        if self.registered[b] is not None:
            return self.registered[b]
        if self.gradient[b]:
            return "gradient"
        if self.saved[b]:
            return "activation"
        return "output" if self.alive(b) else "temporary"

    def account(self) -> dict[str, Any]:
        """The ledger's `finish`: peak (first event reaching it), its split, each category's maximum."""
        categories = [self.category(b) for b in range(len(self.nbytes))]
        live = dict.fromkeys(CATEGORIES, 0)
        maxima = dict.fromkeys(CATEGORIES, 0)
        peak, split, total = -1, dict(live), 0
        for b, delta in self.events:
            live[categories[b]] += delta
            total += delta
            maxima[categories[b]] = max(maxima[categories[b]], live[categories[b]])
            if total > peak:
                peak, split = total, dict(live)
        return {"peak": peak, "split": split, "maxima": maxima,
                "saved_tensors": sum(1 for c in categories if c == "activation")}


OUT = "out"  # in a list of saved entries: the op's own output


@dataclass
class _Node:
    """A recorded op's saved state: the buffers it holds, which of them are float16 (cast back in backward)."""

    saved: list
    halves: list
    own: int = 0  # how many of `saved` the op itself saved (the `all` policy adds the output)
    unpacked: list = field(default_factory=list)


class _Step:
    """The engine's moves for one MLP training step, on symbolic buffers (see the module docstring)."""

    def __init__(self, config: dict[str, Any], buffers: _Buffers, itemsize: int, x: int):
        self.c, self.b, self.itemsize, self.x = config, buffers, itemsize, x
        self.policy = config["policy"]
        self.hidden = config["batch_size"] * config["width"] * itemsize  # one batch × width buffer
        self.shapes = layer_shapes(config)
        self.half_copies: dict[int, int] = {}  # saved buffer -> its float16 copy (valid while the copy lives)
        self.owned: set[int] = set()  # caller-owned (leaf) inputs of this policy scope: never cast
        self.recomputing = False
        self.recomputed_ops = 0

    # --- `engine.apply` for a recorded op ---------------------------------------------------------------
    def apply(self, out_bytes: int = 0, saved: tuple = (), out: int | None = None,
              owned: tuple = ()) -> tuple[int, _Node]:
        """`out`: an existing buffer (a checkpoint's segment output) or None for a new one of `out_bytes`;
        `saved`: what the op saves, each a buffer, OUT, or ("internal", nbytes) for an array the op made
        itself (parameters and labels are left out: registered, never cast, never freed).
        Returns the output (one reference: the result tensor's) and the node."""
        b = self.b
        self.recomputed_ops += self.recomputing
        self.owned.update(owned)
        if out is None:
            out = b.new(out_bytes)  # on_forward tracks the output first, then the saved arrays
        node = _Node([], [])
        internal_sources = []
        for entry in saved:
            entry = out if entry is OUT else entry
            internal = isinstance(entry, tuple)
            if self.policy == "half" and (internal or entry not in self.owned):
                copy = None if internal else self.half_copies.get(entry)
                if copy is not None and b.alive(copy):
                    b.ref(copy)  # saved before by another op (ReLU's output, the next Linear's input)
                else:
                    nbytes = entry[1] if internal else b.nbytes[entry]
                    copy = b.new(nbytes // self.itemsize * HALF_ITEMSIZE)
                    if not internal:
                        self.half_copies[entry] = copy
                    else:
                        internal_sources.append(entry[1])
                b.saved[copy] = True
                node.saved.append(copy)
                node.halves.append(True)
                continue
            entry = b.new(entry[1]) if internal else b.ref(entry)
            b.saved[entry] = True
            node.saved.append(entry)
            node.halves.append(False)
        node.own = len(node.saved)
        if self.policy == "all" and out not in node.saved:  # every intermediate variable is kept
            node.saved.append(b.ref(out))
            node.halves.append(False)
            b.saved[out] = True
        for nbytes in internal_sources:  # the op's own float32 array `half` replaced: seen, then dropped
            b.unref(b.new(nbytes))
        return out, node

    # --- `engine._run_backward`, one node at a time ----------------------------------------------------
    def unpack(self, node: _Node) -> list:
        """`Node.saved_tensors`: what backward reads; float16 entries come back as new compute-dtype copies."""
        arrays = []
        for saved, half in zip(node.saved[: node.own], node.halves):
            if half:
                copy = self.b.new(self.b.nbytes[saved] // HALF_ITEMSIZE * self.itemsize)
                node.unpacked.append(copy)
                arrays.append(copy)
            else:
                arrays.append(saved)
        return arrays

    def finish_node(self, node: _Node, grad: int | None) -> None:
        """After the ledger saw the node's gradients: cast-back copies, the incoming gradient, the saved state."""
        for copy in node.unpacked:
            self.b.unref(copy)
        node.unpacked = []
        self.b.unref(grad)
        for saved in reversed(node.saved):  # releasing a tuple drops its items last to first
            self.b.unref(saved)
        node.saved = []

    def gradients(self, layer: int, need_x: bool) -> int | None:
        """A Linear's backward: ∂input (a pending gradient), then ∂W and ∂b (the parameters' .grad)."""
        out_features, in_features = self.shapes[layer]
        b, batch = self.b, self.c["batch_size"]
        dx = b.new(batch * in_features * self.itemsize) if need_x else None
        b.gradient[b.new(out_features * in_features * self.itemsize)] = True
        if self.c["bias"]:
            b.gradient[b.new(out_features * self.itemsize)] = True
        return dx

    # --- the model ----------------------------------------------------------------------------------------
    def run_layers(self, h: int, start: int, stop: int, recorded: bool) -> tuple[int, list]:
        """`MLP.run_layers`: the last activation (one reference, the caller's) and the recorded nodes."""
        b = self.b
        nodes = []
        b.ref(h)  # run_layers' own `h`
        for i in range(start, stop):
            if recorded:
                z, node = self.apply(self.hidden, (h,))
                nodes.append(("linear", i, node))
            else:
                z = b.new(self.hidden)
            b.unref(h)  # `h = None` before the activation exists
            if recorded:
                h, node = self.apply(self.hidden, (OUT,))
                nodes.append(("activation", i, node))
            else:
                h = b.new(self.hidden)
            b.unref(z)  # `z = None`
        return h, nodes

    def backward_layers(self, nodes: list, grad: int, need_first_x: bool) -> int | None:
        """Backward through recorded hidden layers; returns the gradient of the first layer's input."""
        first = nodes[0][1]
        for kind, layer, node in reversed(nodes):
            self.unpack(node)
            if kind == "activation":
                new = self.b.new(self.hidden)
            else:
                new = self.gradients(layer, need_x=layer != first or need_first_x)
            self.finish_node(node, grad)
            grad = new
        return grad

    def train(self) -> None:
        b, c, x = self.b, self.c, self.x
        segments = checkpoint_segments(c["checkpoint"], c["depth"])
        # forward, inside the policy's scope: the network input is a leaf, never cast
        self.owned = {x}
        graph: list = []
        if segments is None:
            h, graph = self.run_layers(x, 0, c["depth"], recorded=True)
        else:
            h = x
            for start, stop in segments:
                out, _ = self.run_layers(h, start, stop, recorded=False)  # the checkpoint's no_grad forward
                out, node = self.apply(saved=(h,), out=out)
                graph.append(("checkpoint", (start, stop, h != x), node))
                if h != x:  # `h = checkpoint(...)` drops the segment's input tensor (the network input stays)
                    b.unref(h)
                h = out
        logits, output_node = self.apply(c["batch_size"] * c["out_features"] * self.itemsize, (h,))
        if h != x:  # MLP.forward returns
            b.unref(h)
        loss, loss_node = self.apply(self.itemsize, (("internal", c["batch_size"] * c["out_features"]
                                                       * self.itemsize),))
        b.unref(logits)  # the logits tensor was a temporary of the loss expression
        # backward
        seed = b.new(self.itemsize)
        self.unpack(loss_node)
        grad = b.new(c["batch_size"] * c["out_features"] * self.itemsize)  # ∂J/∂o
        self.finish_node(loss_node, seed)
        self.unpack(output_node)
        new = self.gradients(c["depth"], need_x=True)
        self.finish_node(output_node, grad)
        grad = new
        if segments is None:
            self.backward_layers(graph, grad, need_first_x=False)
        else:
            for _, (start, stop, need_x), node in reversed(graph):
                grad = self.checkpoint_backward(node, grad, start, stop, need_x)
        # the optimiser updates in place through one scratch buffer of at most CHUNK_ELEMENTS elements
        largest = max(out * inp for out, inp in self.shapes)
        b.unref(b.new(min(largest, CHUNK_ELEMENTS) * self.itemsize))

    def checkpoint_backward(self, node: _Node, grad: int, start: int, stop: int, need_x: bool) -> int | None:
        """`Checkpoint.backward`: recompute the segment (a new policy scope), backward through it."""
        b = self.b
        (x,) = self.unpack(node)
        outer_owned, self.owned = self.owned, {x}  # the recompute's input is a leaf tensor
        self.recomputing = True
        b.ref(x)  # the leaf tensor `inp`
        h, nodes = self.run_layers(x, start, stop, recorded=True)
        self.recomputing = False
        self.owned = outer_owned
        b.unref(h)  # `out = None`: the recomputed output is held by its node (if it saved it)
        b.ref(grad)  # the inner backward's pending gradient
        dx = self.backward_layers(nodes, grad, need_first_x=need_x)
        b.unref(x)  # `inp` dies as the checkpoint's backward returns
        self.finish_node(node, grad)
        return dx

    def inference(self) -> None:
        b, c = self.b, self.c
        h, _ = self.run_layers(self.x, 0, c["depth"], recorded=False)
        b.new(c["batch_size"] * c["out_features"] * self.itemsize)  # the logits: the step's output
        b.unref(h)


def layer_shapes(config: dict[str, Any]) -> list[tuple[int, int]]:
    """(out, in) of every Linear: `depth` hidden layers, then the output layer."""
    widths = [config["in_features"]] + [config["width"]] * config["depth"]
    return [(widths[i + 1], widths[i]) for i in range(config["depth"])] + [(config["out_features"], config["width"])]


def predict(raw_config: dict[str, Any]) -> dict[str, Any]:
    """Bytes by category, the step's peak and total peak, for one configuration (labelled predicted)."""
    config = normalize(raw_config)
    itemsize = np.dtype(config["dtype"]).itemsize
    batch = config["batch_size"]
    train = config["mode"] == "train"
    param_sizes = [(out * inp + (out if config["bias"] else 0)) * itemsize for out, inp in layer_shapes(config)]
    parameter_bytes = sum(param_sizes)
    state_bytes = STATE_COPIES[config["optimizer"]] * parameter_bytes if train else 0
    input_bytes = batch * config["in_features"] * itemsize + (batch * LABEL_ITEMSIZE if train else 0)

    buffers = _Buffers()
    buffers.register(parameter_bytes, "parameter")
    buffers.register(state_bytes, "optimizer_state")
    x = buffers.register(input_bytes, "input")  # the input and the labels: one registered buffer here
    baseline_bytes = parameter_bytes + state_bytes + input_bytes
    step = _Step(config, buffers, itemsize, x)
    if train:
        step.train()
    else:
        step.inference()
    account = buffers.account()
    return {
        "parameter_bytes": parameter_bytes,
        "gradient_bytes": parameter_bytes if train else 0,
        "optimizer_state_bytes": state_bytes,
        "input_bytes": input_bytes,
        "predicted_activation_bytes": account["maxima"]["activation"],
        "predicted_saved_tensors": account["saved_tensors"],
        "predicted_recomputed_ops": step.recomputed_ops,
        "predicted_peak_bytes": account["peak"],
        "predicted_step_peak_bytes": account["peak"] - baseline_bytes,
        "predicted_peak_by_category": account["split"],
    }

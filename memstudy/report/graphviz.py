"""`memstudy graph`: the forward graph of one configuration as Graphviz DOT (and PNG when `dot` exists).

Drawn the way the seed draws computational graphs: variables are boxes (the input x, the labels y, the
parameters, each op's output), operators are circles, arrows point from inputs to outputs, the input
sits at the bottom left and the loss at the top right (rankdir=BT). Buffers that the graph holds for
backward are filled and labelled with what saved them, their shape and bytes; a buffer saved by two
ops (ReLU's output is also the next Linear's input) is one box, counted once.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ..units import format_bytes

SAVED_FILL = "#f4a582"  # an intermediate held for backward: the memory training adds
SAVED_REF_FILL = "#fddbc7"  # a parameter or input saved by reference: it exists anyway
PARAM_FILL = "#d1e5f0"
PLAIN_FILL = "white"
OP_FILL = "#f7f7f7"
# positional input names of the ops whose non-tensor inputs (x, labels) we label
ARG_NAMES = {
    "linear": ("x", "weight", "bias"), "matmul": ("a", "b"), "softmax_cross_entropy": ("logits", "labels"),
    "mse": ("pred", "target"),
}
INPUT_LABELS = {"x": "x", "labels": "y", "target": "y"}


class GraphError(RuntimeError):
    """The graph could not be drawn (bad config, or `dot` failed); one-line message."""


class _OutputRecorder:
    """A minimal engine instrument: remembers every op's output array (only while the graph is built)."""

    def __init__(self) -> None:
        self.outputs: dict[int, np.ndarray] = {}

    def on_forward(self, ctx: Any, out: np.ndarray) -> None:
        self.outputs[id(ctx)] = out

    def __getattr__(self, name: str) -> Any:  # any other hook the engine may call: ignored
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape(array: np.ndarray) -> str:
    return "×".join(str(n) for n in array.shape) if array.ndim else "scalar"


def build_graph(config: dict[str, Any]):
    """Model, input, labels, loss tensor and the outputs of every op, for a normalised config."""
    from ..autograd import STATE, Tensor
    from ..nn.models.registry import get_family

    family = get_family(config.get("model"))
    model = family.build(config)
    inputs, y = family.batch(config)
    x = Tensor(inputs, name="x")
    recorder = _OutputRecorder()
    previous = STATE.instrument
    STATE.instrument = recorder
    try:
        loss = family.loss(model, x, y)
    finally:
        STATE.instrument = previous
    return model, x, y, loss, recorder.outputs


def graph_dot(config: dict[str, Any]) -> str:
    """DOT text of the forward graph (forward pass + cross-entropy) of `config` (config fields; defaults filled)."""
    from ..autograd import Node, base_buffer
    from ..autograd.engine import walk
    from ..config import ConfigError, normalize

    try:
        config = normalize({k: v for k, v in config.items() if k != "repeat"})
    except ConfigError as exc:
        raise GraphError(str(exc)) from None
    model, x, y, loss, outputs = build_graph(config)
    nodes = list(reversed(list(walk(loss))))  # forward order

    # who saved which buffer (by base buffer, so views and shared arrays count once)
    saved_by: dict[int, list[str]] = {}
    saved_arrays: dict[int, tuple[np.ndarray, Any, str]] = {}
    op_names: dict[int, str] = {}
    counts: dict[str, int] = {}
    for node in nodes:
        name = node.fn.name
        layer = "" if node.layer is None else f"[{node.layer}]"
        op_names[id(node)] = f"{name}{layer}"
        counts[name] = counts.get(name, 0) + 1
        for role, array in zip(node.saved_roles, node.saved):
            if array is None:
                continue
            base = base_buffer(array)
            saved_by.setdefault(id(base), []).append(f"{op_names[id(node)]}.{role}")
            saved_arrays.setdefault(id(base), (base, node, role))

    from ..nn.models.registry import get_family

    param_names = {id(p): name for name, p in model.named_parameters()}
    notation = get_family(config.get("model")).graph_names(model, config)  # the seed's W1, z1, h1 for the MLPs
    if notation is not None:
        param_names.update(notation.parameters)

    lines = [
        "digraph forward {",
        "  rankdir=BT;",
        '  graph [fontname="Helvetica", fontsize=11, labelloc=t, nodesep=0.3, ranksep=0.35];',
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [arrowsize=0.7];',
    ]
    drawn: set[int] = set()  # base buffers drawn as a box
    totals = {"activation": 0, "reference": 0}

    def variable(key: str, title: str, array: np.ndarray | None, fill: str) -> str:
        label = title
        style = "filled"
        color = fill
        if array is not None:
            base = base_buffer(array)
            label += f"\n{_shape(array)} {array.dtype}, {format_bytes(array.nbytes)}"
            savers = saved_by.get(id(base))
            if savers:
                kind = "activation" if fill == PLAIN_FILL and not key.startswith("in") else "reference"
                color = SAVED_FILL if kind == "activation" else SAVED_REF_FILL
                style = "filled,bold"
                label += "\nsaved by " + ", ".join(savers)
                if id(base) not in drawn:
                    totals[kind] += base.nbytes
            drawn.add(id(base))
        lines.append(f"  {key} [shape=box, style={_quote(style)}, fillcolor={_quote(color)}, label={_quote(label)}];")
        return key

    var_of_node: dict[int, str] = {}
    leaf_keys: dict[int, str] = {}
    for index, node in enumerate(nodes):
        name = node.fn.name
        op_key = f"op{index}"
        op_label = op_names[id(node)].replace("softmax_cross_entropy", "softmax\ncross-entropy")
        lines.append(f"  {op_key} [shape=circle, style=filled, fillcolor={_quote(OP_FILL)}, fixedsize=false, "
                     f"label={_quote(op_label)}];")
        args = ARG_NAMES.get(name, ())
        for position, parent in enumerate(node.parents or ()):
            if type(parent) is Node:
                source = var_of_node.get(id(parent))
                if source is None:  # cannot happen in forward order, but never draw a dangling edge
                    continue
            elif parent is not None:  # a leaf tensor that requires grad: a parameter
                source = leaf_keys.get(id(parent))
                if source is None:
                    title = param_names.get(id(parent), parent.name or f"param{len(leaf_keys)}")
                    source = variable(f"p{len(leaf_keys)}", title, parent.data, PARAM_FILL)
                    leaf_keys[id(parent)] = source
            else:  # no grad flows: the network input or the labels; show it if the op saved it
                arg = args[position] if position < len(args) else f"input{position}"
                array = None
                if arg in node.saved_roles:
                    array = node.saved[node.saved_roles.index(arg)]
                if array is None and name == "linear" and position == 0:
                    array = x.data
                if array is None and name == "softmax_cross_entropy" and position == 1:
                    array = y
                title = INPUT_LABELS.get(arg, arg)
                source = variable(f"in{index}_{position}", title, array, PLAIN_FILL)
            lines.append(f"  {source} -> {op_key};")
        out = outputs.get(id(node))
        title = notation.output(name, node.layer) if notation is not None else None
        if title is None:
            title = "L" if name in ("softmax_cross_entropy", "mse") else f"v{index}"
        out_key = variable(f"v{index}", title, out, PLAIN_FILL)
        var_of_node[id(node)] = out_key
        lines.append(f"  {op_key} -> {out_key};")
        # buffers this op saved that are no variable of the graph (softmax probabilities): their own box
        for role, array in zip(node.saved_roles, node.saved):
            if array is None:
                continue
            base = base_buffer(array)
            if id(base) in drawn or saved_arrays[id(base)][1] is not node:
                continue
            key = variable(f"s{index}_{role}", f"{role} (internal)", array, PLAIN_FILL)
            lines.append(f"  {op_key} -> {key} [style=dashed, arrowhead=none];")

    caption = (f"{get_family(config.get('model')).describe(config)}.\nBoxes: variables; circles: operators; "
               f"orange: intermediates held for backward ({format_bytes(totals['activation'])}, the memory training "
               f"adds); pale orange: parameters and inputs saved by reference "
               f"({format_bytes(totals['reference'])}, present anyway); blue: parameters not saved")
    lines.append(f"  label={_quote(caption)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(config: dict[str, Any], out_path: str | Path) -> list[Path]:
    """Write the DOT file (always) and a PNG (when Graphviz's `dot` is on PATH); returns the paths written.

    `out_path` may end in .dot/.gv (PNG next to it) or .png (DOT next to it); its folder must exist (no folder
    is created). Each file is written under a temporary name and renamed. Raises GraphError, or PathError for
    a path that cannot be written.
    """
    from ..run.results.folder import output_file, replace_atomically, write_text_atomically

    out_path = output_file(out_path, "--out")
    if out_path.suffix.lower() == ".png":
        dot_path, png_path = output_file(out_path.with_suffix(".dot"), "--out"), out_path
    else:
        dot_path, png_path = out_path, output_file(out_path.with_suffix(".png"), "--out")
    text = graph_dot(config)
    write_text_atomically(dot_path, text)
    written = [dot_path]
    program = shutil.which("dot")
    if program is None:
        return written
    with replace_atomically(png_path) as tmp:
        try:
            done = subprocess.run([program, "-Tpng", str(dot_path), "-o", str(tmp)], capture_output=True, text=True,
                                  timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GraphError(f"dot failed: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise GraphError(f"dot failed: {last}")
    written.append(png_path)
    return written


__all__ = ["GraphError", "build_graph", "graph_dot", "write_graph"]

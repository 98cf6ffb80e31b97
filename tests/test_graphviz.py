"""The forward graph as DOT: boxes and circles, arrows forward, saved buffers highlighted and counted once."""
from __future__ import annotations

import os
import re
import stat
import sys

import pytest

from memstudy.report.graphviz import GraphError, graph_dot, write_graph

CONFIG = {"depth": 2, "width": 4, "batch_size": 3, "out_features": 3}


def nodes(dot: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^  (\w+) \[(.*)\];$", dot, re.M)}


def edges(dot: str) -> list[tuple[str, str]]:
    return re.findall(r"^  (\w+) -> (\w+)", dot, re.M)


def label(attrs: str) -> str:
    return re.search(r'label="((?:[^"\\]|\\.)*)"', attrs).group(1)


def test_layout_boxes_circles_and_direction():
    dot = graph_dot(CONFIG)
    assert dot.startswith("digraph forward {") and "rankdir=BT;" in dot
    found = nodes(dot)
    ops = {k: v for k, v in found.items() if "shape=circle" in v}
    boxes = {k: v for k, v in found.items() if "shape=box" in v}
    assert [label(ops[k]) for k in sorted(ops, key=lambda k: int(k[2:]))] == [
        "linear[0]", "relu[0]", "linear[1]", "relu[1]", "linear[2]", "softmax\\ncross-entropy"]
    titles = {label(v).split("\\n")[0] for v in boxes.values()}
    assert {"x", "y", "W1", "b1", "W2", "b2", "W3", "b3", "z1", "h1", "z2", "h2", "o", "L"} <= titles
    # every edge joins a variable and an operator, and the graph flows from x to L
    for a, b in edges(dot):
        assert ("shape=circle" in found[a]) != ("shape=circle" in found[b])
    by_title = {label(v).split("\\n")[0]: k for k, v in boxes.items()}
    assert (by_title["x"], "op0") in edges(dot)
    assert ("op5", by_title["L"]) in edges(dot)


def test_saved_buffers_are_highlighted_once_with_shape_and_bytes():
    dot = graph_dot(CONFIG)
    boxes = {label(v).split("\\n")[0]: v for v in nodes(dot).values() if "shape=box" in v}
    # a ReLU output is saved by the ReLU and by the next Linear: one box, both savers named
    assert "saved by relu[0].out, linear[1].x" in label(boxes["h1"])
    assert "3×4 float32, 48 B" in label(boxes["h1"])
    assert "#f4a582" in boxes["h1"] and "bold" in boxes["h1"]
    # Linear outputs are not saved (ReLU keeps its output, not its input)
    assert "saved by" not in label(boxes["z1"]) and "#f4a582" not in boxes["z1"]
    # the first weight is not needed (x needs no gradient); later weights are saved for ∂J/∂h
    assert "saved by" not in label(boxes["W1"])
    assert "saved by linear[1].weight" in label(boxes["W2"])
    assert "saved by linear[0].x" in label(boxes["x"])
    assert "saved by softmax_cross_entropy.probs" in label(boxes["probs (internal)"])
    # activations held for backward: h1, h2 (3×4 float32 each) and the softmax probabilities (3×3)
    assert f"({2 * 48 + 36} B, the memory training adds)" in dot


def test_config_defaults_and_errors():
    dot = graph_dot({"depth": 1})
    assert "width 256" in dot and "batch 64" in dot
    with pytest.raises(GraphError, match="depth"):
        graph_dot({"depth": 0})
    with pytest.raises(GraphError, match="activation"):
        graph_dot({"activation": "gelu"})


def test_write_graph_dot_only_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    written = write_graph(CONFIG, tmp_path / "g.dot")
    assert written == [tmp_path / "g.dot"]
    assert (tmp_path / "g.dot").read_text().startswith("digraph")


def test_write_graph_calls_dot_for_png(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text(f"#!{sys.executable}\n"
                    "import sys\n"
                    "args = sys.argv[1:]\n"
                    "assert args[0] == '-Tpng' and args[2] == '-o'\n"
                    "src = open(args[1]).read()\n"
                    "assert src.startswith('digraph')\n"
                    "open(args[3], 'wb').write(b'\\x89PNG fake')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    (tmp_path / "out").mkdir()  # write_graph creates no folder
    written = write_graph(CONFIG, tmp_path / "out" / "graph.png")
    assert written == [tmp_path / "out" / "graph.dot", tmp_path / "out" / "graph.png"]
    assert (tmp_path / "out" / "graph.png").read_bytes().startswith(b"\x89PNG")


def test_failing_dot_is_a_graph_error(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(GraphError, match="syntax error"):
        write_graph(CONFIG, tmp_path / "g.dot")


def test_only_the_families_that_use_the_seeds_notation_get_it():
    """Issue 22: W1, b1, z1, h1, o are the MLPs' names (their family says so), not every model with Linears."""
    gpt = graph_dot({"model": "gpt", "depth": 1, "width": 8, "heads": 2, "seq_len": 4, "vocab": 10, "batch_size": 2})
    titles = {label(v).split("\\n")[0] for v in nodes(gpt).values() if "shape=box" in v}
    assert not titles & {"W1", "b1", "z1", "h1", "o"}, titles
    assert "transformer.wte.weight" in titles and "lm_head.weight" not in titles  # tied: one box, wte's name
    seed = graph_dot({"model": "seed", "width": 4, "batch_size": 3})
    titles = {label(v).split("\\n")[0] for v in nodes(seed).values() if "shape=box" in v}
    assert {"W1", "W2", "z1", "h1", "o", "L"} <= titles and "b1" not in titles  # the seed has no biases

"""The CNN report section: its findings are computed from the rows, and say "not so" when the rows say so."""
from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from memstudy.findings import cnn
from memstudy.report import markdown
from memstudy.report.context import Study
from memstudy.report.document import Document, Figure
from memstudy.run.sweep import LAYER_COLUMNS

BASE = dict(model="cnn", width=4, in_channels=3, classes=10, batch_norm=True, dtype="float32", optimizer="sgd",
            policy="minimal", seed=0)


def per_layer(depth, side, batch, conv_save, width=4, channels=3, item=4):
    """(layer, op, activation bytes, input bytes) as the ledger attributes them (see test_cnn's hand count)."""
    rows = []
    for i in range(depth):
        out = width * 2 ** i
        plane = batch * side * side
        if conv_save == "columns":
            rows.append((str(i), "conv2d", plane * channels * 9 * item, 0))
        else:
            rows.append((str(i), "conv2d", 0 if i == 0 else plane * channels * item, plane * channels * item
                         if i == 0 else 0))
        rows.append((str(i), "batch_norm", plane * out * item + 2 * out * item, 0))
        rows.append((str(i), "relu", plane * out * item, 0))
        rows.append((str(i), "max_pool2d", batch * out * (side // 2) ** 2, 0))
        channels, side = out, side // 2
    rows.append((str(depth), "linear", batch * channels * item, 0))
    rows.append(("loss", "softmax_cross_entropy", batch * 10 * item, batch * 8))
    return rows


def study(tmp_path: Path, image_power: float = 2.0, conv_factor: float = 1.0, shrink_block0: bool = False):
    """A synthetic CNN study: cells, and layers.csv in tmp_path; `image_power` bends the activation law,
    `conv_factor` scales what the convolutions keep under `columns`."""
    cells, layers = [], []
    grid = itertools.product([2, 3], [8, 16, 32], [4, 8], ["input", "columns"], ["none", "sqrt"],
                             ["train", "inference"])
    for depth, side, batch, conv_save, checkpoint, mode in grid:
        cell = f"c{len(cells)}"
        entries = per_layer(depth, side, batch, conv_save)
        if conv_save == "columns":
            entries = [(l, op, a * conv_factor if op == "conv2d" else a, i) for l, op, a, i in entries]
        if shrink_block0 and side == 32 and batch == 8 and depth == 2 and conv_save == "input":
            entries = [(l, op, a / 100 if l == "0" else a, i) for l, op, a, i in entries]
        activation = sum(a for _, _, a, _ in entries) * (side / 16) ** (image_power - 2)
        train = mode == "train"
        sqrt = checkpoint == "sqrt"
        cells.append(dict(BASE, cell=cell, depth=depth, image_size=side, batch_size=batch, conv_save=conv_save,
                          checkpoint=checkpoint, mode=mode,
                          activation_bytes=(activation * (0.8 if sqrt else 1.0)) if train else 0,
                          peak_bytes=(2.0 if train else 1.0) * activation, step_seconds=1.3 if sqrt else 1.0,
                          recomputed_ops=4 * depth if sqrt and train else 0))
        if train:
            layers += [dict(experiment="s", cell=cell, repeat=0, layer=l, op=op, activation_bytes=a, input_bytes=i)
                       for l, op, a, i in entries]
    pd.DataFrame(layers, columns=LAYER_COLUMNS).to_csv(tmp_path / "layers.csv", index=False)
    return pd.DataFrame(cells)


def sections(cells: pd.DataFrame, out: Path) -> list:
    return cnn.blocks(Study.of_cells(cells, out))


def text(tmp_path, **kwargs) -> str:
    return markdown.render(Document("t", sections(study(tmp_path, **kwargs), tmp_path)))


def test_the_section_states_computed_findings(tmp_path):
    md = text(tmp_path)
    assert "Activation bytes ∝ image_size²: so" in md
    assert "∝ batch: so" in md
    assert "`columns` ÷ `input` = 9.0000–9.0000 over 12 pairs" in md and "so, exactly." in md
    assert "Block 0 holds more than any other layer in 24 of 24 cells: so in every cell." in md
    assert "Checkpointing lowers the activation bytes in 24 of 24 pairs" in md
    assert "`input`: training peak ÷ inference peak 2.00–2.00×" in md
    assert "the ratio rises in 0 of 8 configurations: not so, it does not grow with the image." in md


def test_the_section_says_not_so(tmp_path):
    md = text(tmp_path, image_power=1.5, conv_factor=8 / 9, shrink_block0=True)
    assert "Activation bytes ∝ image_size²: not so" in md
    assert "`columns` ÷ `input` = 8.0000–8.0000" in md and "not so." in md
    assert "Block 0 holds more than any other layer in 23 of 24 cells: not so in every cell." in md


def test_without_layers_csv_the_breakdown_says_why(tmp_path):
    cells = study(tmp_path)
    (tmp_path / "layers.csv").unlink()
    md = markdown.render(Document("t", sections(cells, tmp_path)))
    assert "No layers.csv in this directory" in md
    assert "Activation bytes ∝ image_size²: so" in md  # the rows alone still give the law


def test_figures_are_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    figures = [b for b in sections(study(tmp_path), tmp_path) if isinstance(b, Figure)]
    assert {f.name for f in figures} == {"cnn_activation_law.png", "cnn_blocks.png"}
    assert all(f.draw(tmp_path / f.name).stat().st_size > 0 for f in figures)


def algo_study(tmp_path, batched_time: float):
    """The synthetic study twice, conv_algo per_example and batched: batched holds 1.5× the workspace and takes
    `batched_time` × per_example's step time."""
    cells = study(tmp_path)
    per = cells.assign(conv_algo="per_example", conv_workspace=4 * 2 ** 30, conv_workspace_bytes=1000.0,
                       foreign_cores=0.1)
    batched = per.assign(conv_algo="batched", cell=per["cell"] + "b", conv_workspace_bytes=1500.0,
                         step_seconds=per["step_seconds"] * batched_time)
    return pd.concat([per, batched], ignore_index=True)


@pytest.mark.parametrize("batched_time,verdict", [(0.8, "more workspace buys time, so."),
                                                  (1.25, "not so: the larger workspace does not buy time here.")])
def test_the_conv_algo_part_compares_workspace_and_time(tmp_path, batched_time, verdict):
    blocks = sections(algo_study(tmp_path, batched_time), tmp_path)
    md = markdown.render(Document("t", blocks))
    assert "Convolution algorithm: workspace against time" in md
    assert f"`batched` holds more convolution workspace than `per_example` in 96 of 96 pairs and its step takes " \
           f"{batched_time:.3f}× per_example's (median): {verdict}" in md
    assert "| `batched` | 96 | 1.500–1.500 |" in md
    # the other parts compare memory at per_example only: the same figures as without the batched cells
    assert "Block 0 holds more than any other layer in 24 of 24 cells: so in every cell." in md
    if batched_time < 1:
        pytest.importorskip("matplotlib")
        figure = next(b for b in blocks if isinstance(b, Figure) and b.name == "cnn_conv_algo.png")
        assert figure.draw(tmp_path / figure.name).stat().st_size > 0


def test_without_a_second_algorithm_there_is_no_conv_algo_part(tmp_path):
    assert "Convolution algorithm" not in text(tmp_path)


REAL_SPEC = """
[study]
name = "cnn-tiny"

[grid]
model = "cnn"
image_size = [8, 16]
batch_size = [2, 4]
conv_save = ["input", "columns"]
checkpoint = ["none", "sqrt"]
mode = "train"
depth = 2
width = 4

[run]
repeats = 1
budget = "1GiB"
timeout_seconds = 120
jobs = 2
"""


def test_a_real_cnn_sweep_and_its_report(tmp_path):
    """Real cells: layers.csv adds up to each cell's activation bytes, and the report's findings follow."""
    from memstudy.report import write_report
    from memstudy.run.spec import load_spec
    from memstudy.run.sweep import run_sweep

    (tmp_path / "cnn.toml").write_text(REAL_SPEC)
    out = tmp_path / "out"
    outcome = run_sweep(load_spec(tmp_path / "cnn.toml"), out, progress=False)
    assert (outcome.ok, outcome.failed, outcome.skipped) == (16, 0, 0)
    runs = pd.read_csv(out / "runs.csv")
    layers = pd.read_csv(out / "layers.csv", dtype={"layer": str})
    plain = runs[runs["checkpoint"] == "none"]
    held = layers.groupby("cell")["activation_bytes"].sum()
    assert (plain.set_index("cell")["activation_bytes"] == held.reindex(plain["cell"]).to_numpy()).all()
    assert (runs["activation_bytes"] == runs["predicted_activation_bytes"]).all()
    write_report(out, figures=False)
    md = (out / "report.md").read_text()
    assert "## Where a CNN keeps its memory" in md and "## The laws" not in md
    assert "`columns` ÷ `input` = 9.0000–9.0000 over 4 pairs" in md and "so, exactly." in md
    assert "Block 0 holds more than any other layer in 8 of 8 cells: so in every cell." in md

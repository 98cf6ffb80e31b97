"""The CNN section's figures (matplotlib, Agg backend, the report's styles): each writes one PNG, returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..report.figures import bytes_axis, log2_x, save, plt


def activation_law(cells: pd.DataFrame, p: float, q: float, path: Path, title: str) -> Path | None:
    """Activation bytes against image size, one colour per batch; the fitted power law and a slope-2 guide."""
    data = cells.dropna(subset=["activation_bytes"]).sort_values("image_size")
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    batches = sorted(data["batch_size"].unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(batches), 1)))
    for color, batch in zip(colors, batches):
        part = data[data["batch_size"] == batch]
        x = part["image_size"].astype(float).to_numpy()
        y = part["activation_bytes"].astype(float).to_numpy()
        ax.scatter(x, y, s=16, color=color, label=f"batch {int(batch)}")
        anchor = y[-1] / (x[-1] ** p)
        ax.plot(x, anchor * x ** p, color=color, lw=0.8)
    top = data[data["batch_size"] == batches[-1]]  # the guide runs through the largest batch's largest image
    x_top, y_top = float(top["image_size"].iloc[-1]), float(top["activation_bytes"].iloc[-1])
    guide = np.array([float(data["image_size"].min()), x_top])
    ax.plot(guide, y_top * (guide / x_top) ** 2, ":", color="black", lw=1, label="∝ image_size²")
    log2_x(ax)
    ax.set_yscale("log")
    bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel("image size (pixels per side)")
    ax.set_ylabel("activation bytes held for backward (ledger)")
    ax.set_title(f"{title}\nfit: image_size^{p:.2f} · batch^{q:.2f}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def blocks(per_layer: pd.DataFrame, cells: pd.DataFrame, layers: Sequence[str], path: Path, title: str) -> Path | None:
    """Bars of activation bytes per layer, one group per layer, one bar per conv_save."""
    if per_layer.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    width = 0.8 / max(len(cells), 1)
    colors = plt.cm.tab10(np.arange(len(cells)))
    for i, (color, (_, cell)) in enumerate(zip(colors, cells.iterrows())):
        values = [per_layer[(per_layer["cell"] == cell["cell"]) & (per_layer["layer"] == layer)]["activation_bytes"]
                  .sum() for layer in layers]
        ax.bar(np.arange(len(layers)) + i * width, values, width=width, color=color,
               label=f"conv_save = {cell['conv_save']}")
    ax.set_xticks(np.arange(len(layers)) + width * (len(cells) - 1) / 2,
                  [f"block {layer}" if layer not in ("loss",) and int(layer) < int(cells["depth"].iloc[0])
                   else ("head" if layer != "loss" else "loss") for layer in layers])
    bytes_axis(ax.yaxis, log=False)
    ax.set_ylabel("activation bytes the layer's ops saved (ledger)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return save(fig, path)


def conv_algo(cells: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Each cell's convolution workspace (x) against its step time (y), one colour per conv_algo; a grey line joins
    the cells of one configuration."""
    data = cells.dropna(subset=["conv_workspace_bytes", "step_seconds"])
    data = data[data["conv_workspace_bytes"] > 0]
    if data.empty or data["conv_algo"].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.8, 4.8))
    keys = [c for c in ("image_size", "batch_size", "depth", "conv_save") if c in data.columns]
    for _, group in data.groupby(keys):
        group = group.sort_values("conv_workspace_bytes")
        ax.plot(group["conv_workspace_bytes"].astype(float), group["step_seconds"].astype(float) * 1e3, color="0.8",
                lw=0.7, zorder=1)
    algos = sorted(data["conv_algo"].unique(), key=lambda a: a != "per_example")
    for color, algo in zip(plt.cm.tab10(np.arange(len(algos))), algos):
        part = data[data["conv_algo"] == algo]
        ax.scatter(part["conv_workspace_bytes"].astype(float), part["step_seconds"].astype(float) * 1e3, s=16,
                   color=color, label=f"conv_algo = {algo}", zorder=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    bytes_axis(ax.xaxis, log=True)
    ax.set_xlabel("convolution workspace, most live at once (ledger)")
    ax.set_ylabel("step time, ms (median)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)

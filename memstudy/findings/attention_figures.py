"""The attention section's figures (matplotlib, Agg): each function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..report.figures import bytes_axis, save, plt

STRATEGY_STYLE = {"none": "-", "selective": "--"}


def log2_x(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))


def loglog(layers: pd.DataFrame, path: Path) -> Path | None:
    """Per-layer activation bytes against s on log-log axes, one line per (batch, heads), slopes 1 and 2 drawn."""
    if layers.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for (b, a), part in layers.groupby(["batch_size", "heads"]):
        part = part.sort_values("seq_len")
        ax.plot(part["seq_len"], part["per_layer_bytes"], marker="o", label=f"batch {b}, heads {a}")
    s = np.array(sorted(layers["seq_len"].unique()), dtype=float)
    low = layers.groupby("seq_len")["per_layer_bytes"].min().reindex(s).to_numpy(float)
    for slope, style in ((1, ":"), (2, "-.")):
        ax.plot(s, low[0] * (s / s[0]) ** slope / 2, color="grey", linestyle=style, linewidth=1,
                label=f"slope {slope}")
    log2_x(ax)
    ax.set_yscale("log", base=2)
    bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel("sequence length s")
    ax.set_ylabel("activation bytes per layer")
    ax.set_title("Per-layer activation bytes against sequence length (log-log)", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def inference(cells: pd.DataFrame, path: Path) -> Path | None:
    """Inference step peak against s, one line per depth (at the largest batch × heads)."""
    if cells.empty:
        return None
    ba = cells["batch_size"].astype(int) * cells["heads"].astype(int)
    part = cells[ba == ba.max()]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for depth, d in part.groupby("depth"):
        d = d.sort_values("seq_len")
        ax.plot(d["seq_len"], d["step_peak_bytes"], marker="o", label=f"depth {depth}",
                linestyle="-" if depth == part["depth"].min() else "--")
    log2_x(ax)
    ax.set_yscale("log", base=2)
    bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel("sequence length s")
    ax.set_ylabel("inference step peak (ledger)")
    b, a = int(part["batch_size"].iloc[0]), int(part["heads"].iloc[0])
    ax.set_title(f"Inference working memory, one line per depth (batch {b}, heads {a})", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def checkpoint(cells: pd.DataFrame, strategies: Sequence[str], path: Path, title: str) -> Path | None:
    """Two panels against s, one line per strategy: activation bytes, and step time."""
    if cells.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for strategy in strategies:
        part = cells[cells["checkpoint"] == strategy].sort_values("seq_len")
        style = STRATEGY_STYLE.get(strategy, "-.")
        left.plot(part["seq_len"], part["activation_bytes"], marker="o", linestyle=style, label=strategy)
        right.plot(part["seq_len"], 1000 * part["step_seconds"], marker="o", linestyle=style, label=strategy)
    for ax in (left, right):
        log2_x(ax)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("sequence length s")
        ax.legend(fontsize=7)
    bytes_axis(left.yaxis, log=True)
    right.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    left.set_ylabel("activation bytes (largest live)")
    right.set_ylabel("step time (ms)")
    fig.suptitle(f"Selective vs full checkpointing ({title})", fontsize=9)
    return save(fig, path)

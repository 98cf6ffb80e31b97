"""The remedies finding's figures (matplotlib, through the report's helpers): checkpointing, policies, optimisers,
dtypes. Each function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..report.figures import FuncFormatter, NullFormatter, bytes_axis, log2_x, plt, positive, save
from ..run.select import nearest_batch


def checkpoint_tradeoff(data: pd.DataFrame, strategies: Sequence[str], path: Path, title: str) -> Path | None:
    """Left: layers' worth of activations vs depth per strategy, with depth and 2√depth drawn beside them.
    Right: the same memory against the step time relative to no checkpointing (one point per depth)."""
    data = data.dropna(subset=["activation_bytes"])
    if data.empty:
        return None
    batches = sorted(data["batch_size"].unique())
    batch = nearest_batch(batches)
    part = data[data["batch_size"] == batch]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    colors = dict(zip(strategies, plt.cm.tab10(np.arange(len(strategies)))))
    for strategy in strategies:
        line = part[part["checkpoint"] == strategy].sort_values("depth")
        if line.empty:
            continue
        left.plot(line["depth"], line["layers"], marker="o", ms=4, color=colors[strategy], label=strategy)
        timed = line.dropna(subset=["time_ratio"])
        right.plot(timed["time_ratio"], timed["layers"], marker="o", ms=4, color=colors[strategy], label=strategy)
        if strategy == "sqrt":
            for _, r in timed.iterrows():
                right.annotate(f"d{int(r['depth'])}", (r["time_ratio"], r["layers"]), fontsize=7,
                               textcoords="offset points", xytext=(4, -8))
    depths = np.array(sorted(part["depth"].unique()), dtype=float)
    grid = np.geomspace(depths.min(), depths.max(), 50)
    left.plot(grid, grid, ":", color="black", lw=1, label="depth (every layer held)")
    left.plot(grid, 2 * np.sqrt(grid), "--", color="grey", lw=1.2, label="2√depth (Chen et al.)")
    for ax in (left, right):
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    log2_x(left)
    left.set_xlabel("depth (hidden layers)")
    left.set_ylabel("activations held for backward, max\n(layers' worth: ÷ batch × width × itemsize)")
    left.set_title(f"memory vs depth (batch {batch})", fontsize=9)
    right.axvline(1.0, color="black", lw=0.6)
    right.set_xlabel("step time ÷ step time without checkpointing (same depth)")
    right.set_ylabel("layers' worth held")
    right.set_title("memory vs recompute time (one point per depth)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


POLICY_COLORS = {"minimal": "#4c72b0", "all": "#c44e52", "half": "#55a868"}


def policy_bytes(data: pd.DataFrame, policies: Sequence[str], slopes: dict[str, float], reference: float,
                 path: Path, title: str) -> Path | None:
    """Left: fitted bytes per layer per example per policy, PyTorch's width × itemsize as a line.
    Right: activation bytes vs depth per policy at the largest batch."""
    if data.empty or not policies:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    values = [slopes.get(p, np.nan) for p in policies]
    left.bar(range(len(policies)), values, color=[POLICY_COLORS.get(p, "grey") for p in policies], width=0.6)
    for i, v in enumerate(values):
        if np.isfinite(v):
            left.text(i, v, f"{v:,.0f} B", ha="center", va="bottom", fontsize=8)
    left.axhline(reference, ls="--", color="black", lw=1,
                 label=f"PyTorch: one width-sized buffer per\nLinear+activation layer ({reference:,.0f} B)")
    left.set_xticks(range(len(policies)), policies)
    left.set_ylabel("bytes held per layer per example (fitted)")
    left.set_ylim(0, max([v for v in values if np.isfinite(v)] + [reference]) * 1.2)
    left.legend(fontsize=7, loc="upper left")
    batch = max(data["batch_size"].unique())
    for policy in policies:
        line = data[(data["policy"] == policy) & (data["batch_size"] == batch)].sort_values("depth")
        right.plot(line["depth"], positive(line["activation_bytes"].astype(float)), marker="o", ms=4,
                   color=POLICY_COLORS.get(policy, "grey"), label=policy)
    log2_x(right)
    right.set_yscale("log")
    bytes_axis(right.yaxis, log=True)
    right.set_xlabel("depth")
    right.set_ylabel("activation bytes held for backward (ledger)")
    right.set_title(f"batch {batch}", fontsize=9)
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


OPTIMIZER_COLORS = {"sgd": "#4c72b0", "momentum": "#dd8452", "adam": "#c44e52"}


def optimizer_peak(data: pd.DataFrame, optimizers: Sequence[str], path: Path, title: str) -> Path | None:
    """The parameter side's share of the peak vs width (left) and vs batch (right), one colour per optimiser;
    solid at the smallest value of the other axis, dashed at the largest."""
    data = data.dropna(subset=["parameter_share"])
    if data.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, x, other in ((axes[0], "width", "batch_size"), (axes[1], "batch_size", "width")):
        others = sorted(data[other].unique())
        ends = [(others[0], "-")] + ([(others[-1], "--")] if len(others) > 1 else [])
        for optimizer in optimizers:
            for value, style in ends:
                line = data[(data["optimizer"] == optimizer) & (data[other] == value)].sort_values(x)
                if line.empty:
                    continue
                ax.plot(line[x], 100 * line["parameter_share"], style, marker="o", ms=4,
                        color=OPTIMIZER_COLORS.get(optimizer, "grey"),
                        label=f"{optimizer}, {other.replace('_size', '')} {value}")
        log2_x(ax)
        ax.set_xlabel(x.replace("_size", " size"))
        ax.set_ylim(0, 100)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("parameters + gradients + optimiser state\n(% of the step's peak, ledger)")
    axes[0].set_title("as width grows: parameter-dominated", fontsize=9)
    axes[1].set_title("as the batch grows: activation-dominated", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def dtype_ratio(ratios: dict[str, tuple[float, float, float]], path: Path, title: str) -> Path | None:
    """One horizontal bar per quantity: the median float32 ÷ float64 ratio, its range as an error bar."""
    if not ratios:
        return None
    labels = list(ratios)
    med = np.array([ratios[k][0] for k in labels])
    lo = med - np.array([ratios[k][1] for k in labels])
    hi = np.array([ratios[k][2] for k in labels]) - med
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(labels) + 1.6))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, med, xerr=[lo, hi], color="#4c72b0", height=0.6, capsize=3)
    for yi, m, h in zip(y, med, hi):
        ax.text(m + max(h, 0.0) + 0.015, yi, f"{m:.3f}", va="center", fontsize=7)
    ax.axvline(0.5, ls="--", color="black", lw=1, label="one half")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, max(1.05, float(np.nanmax(med + hi)) + 0.1))
    ax.set_xlabel("float32 ÷ float64")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)

"""The report's figures (matplotlib, Agg backend): each function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, Locator, LogLocator, MaxNLocator, NullFormatter, NullLocator  # noqa: E402

from ..units import format_bytes  # noqa: E402
from .fields import CATEGORIES  # noqa: E402
from .select import nearest_batch  # noqa: E402

MODE_STYLE = {"train": "-", "inference": "--"}
CATEGORY_LABELS = {
    "parameter": "parameters", "optimizer_state": "optimiser state", "input": "input", "gradient": "gradients",
    "activation": "activations (held for backward)", "temporary": "temporaries", "output": "output",
}
CATEGORY_COLORS = dict(zip(CATEGORIES, ("#4c72b0", "#8172b2", "#937860", "#dd8452", "#c44e52", "#ccb974", "#55a868")))
PNG_METADATA = {"Software": None}  # keep PNGs byte-stable across matplotlib versions where possible


def _short_bytes(value: float, _pos: Any = None) -> str:
    if value <= 0:
        return "0"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return str(value)  # pragma: no cover


class _BytesLocator(Locator):
    """Linear ticks at round numbers of the axis's own unit (KiB, MiB, ...), not of decimal bytes."""

    def __call__(self):
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin, vmax):
        top = max(abs(vmin), abs(vmax), 1.0)
        unit = 1024 ** int(np.floor(np.log(top) / np.log(1024)))
        return MaxNLocator(nbins=6, steps=[1, 2, 2.5, 4, 5, 10]).tick_values(vmin / unit, vmax / unit) * unit


def _bytes_axis(axis: Any, log: bool) -> None:
    if log:
        axis.set_major_locator(LogLocator(base=2, numticks=8))
        axis.set_minor_locator(NullLocator())
    else:
        axis.set_major_locator(_BytesLocator())
    axis.set_major_formatter(FuncFormatter(_short_bytes))
    axis.set_minor_formatter(NullFormatter())


def _save(fig: plt.Figure, path: Path) -> Path:
    from .folder import replace_atomically

    fig.tight_layout()
    try:
        with replace_atomically(path) as tmp:  # a figure is whole or absent
            fig.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA)
    finally:
        plt.close(fig)
    return path


def _positive(values: pd.Series) -> pd.Series:
    return values.where(values > 0)


def peak_lines(cells: pd.DataFrame, x: str, line: str, path: Path, title: str, logx: bool = False) -> Path | None:
    """Median total peak over `x`, one colour per value of `line`, train solid, inference dashed, log y."""
    data = cells.dropna(subset=["peak_bytes"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    values = sorted(data[line].unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(values), 1)))
    for color, value in zip(colors, values):
        for mode, style in MODE_STYLE.items():
            part = data[(data[line] == value) & (data["mode"] == mode)].sort_values(x)
            if part.empty:
                continue
            ax.plot(part[x], _positive(part["peak_bytes"]), style, marker="o", ms=3.5, color=color,
                    label=f"{line.replace('_size', '')} {value}, {mode}")
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    _bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("total peak (ledger)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def breakdown(train: pd.Series | None, inference: pd.Series | None, path: Path, title: str) -> Path | None:
    """Stacked bars of the ledger's live bytes by category at the peak, train and inference side by side."""
    bars = [(label, row) for label, row in (("train", train), ("inference", inference)) if row is not None]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    top = 0.0
    for i, (label, row) in enumerate(bars):
        bottom = 0.0
        for category in CATEGORIES:
            value = float(row.get(f"peak_{category}_bytes", 0) or 0)
            if not np.isfinite(value):
                value = 0.0
            ax.bar(i, value, bottom=bottom, color=CATEGORY_COLORS[category], width=0.6,
                   label=CATEGORY_LABELS[category] if i == 0 else None)
            bottom += value
        ax.text(i, bottom, format_bytes(bottom), ha="center", va="bottom", fontsize=8)
        top = max(top, bottom)
    ax.set_ylim(0, top * 1.1 if top > 0 else 1)
    ax.set_xticks(range(len(bars)), [label for label, _ in bars])
    _bytes_axis(ax.yaxis, log=False)
    ax.set_ylabel("live bytes at the step's peak (ledger)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def timeline(events: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Stacked live bytes by category over the ledger's events, phases shaded."""
    columns = [c for c in CATEGORIES if f"{c}_bytes" in events.columns]
    if events.empty or not columns:
        return None
    x = events["event"].to_numpy() if "event" in events.columns else np.arange(len(events))
    ys = [events[f"{c}_bytes"].fillna(0).to_numpy(dtype=float) for c in columns]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    ax.stackplot(x, ys, labels=[CATEGORY_LABELS[c] for c in columns], colors=[CATEGORY_COLORS[c] for c in columns],
                 step="post")
    if "phase" in events.columns:
        phases = events["phase"].astype(str).to_numpy()
        start = 0
        shade = False
        span = float(x[-1] - x[0]) or 1.0
        placed: list[tuple[float, float, int]] = []  # (left, right, level) of each label, in axis fractions
        for i in range(1, len(phases) + 1):
            if i == len(phases) or phases[i] != phases[start]:
                end = x[i] if i < len(x) else x[-1]
                if shade:
                    ax.axvspan(x[start], end, color="grey", alpha=0.08, lw=0)
                # a label that would overlap the previous one on its line goes one line up (short phases,
                # e.g. a checkpoint's recompute right after a short backward)
                centre = ((x[start] + end) / 2 - x[0]) / span
                half = 0.0035 * len(phases[start])
                level = 0
                while any(lv == level and left < centre + half and centre - half < right for left, right, lv in placed):
                    level += 1
                placed.append((centre - half, centre + half, level))
                ax.text((x[start] + end) / 2, 1.0 + 0.045 * level, phases[start], transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=7)
                shade = not shade
                start = i
    _bytes_axis(ax.yaxis, log=False)
    ax.set_xlabel("ledger event (allocation or free), in order")
    ax.set_ylabel("live bytes")
    levels = max((lv for _, _, lv in placed), default=0) if "phase" in events.columns else 0
    ax.set_title(title, fontsize=10, pad=14 + 9 * levels)
    ax.legend(fontsize=7, loc="upper left")
    ax.margins(x=0)
    return _save(fig, path)


def predicted_vs_measured(rows: pd.DataFrame, probes: Sequence[tuple[str, str]], path: Path) -> Path | None:
    """One log-log panel per probe: measured step peak against the predicted step peak, with y = x."""
    data = rows.dropna(subset=["predicted_step_peak_bytes"])
    data = data[data["predicted_step_peak_bytes"] > 0]
    if data.empty:
        return None
    fig, axes = plt.subplots(1, len(probes), figsize=(3.6 * len(probes), 3.8), squeeze=False)
    for ax, (label, column) in zip(axes[0], probes):
        if column not in data.columns:
            ax.set_visible(False)
            continue
        shown = data.dropna(subset=[column])
        hidden = int((shown[column] <= 0).sum())
        shown = shown[shown[column] > 0]
        for mode, marker in (("train", "o"), ("inference", "^")):
            part = shown[shown["mode"] == mode]
            if not part.empty:
                ax.scatter(part["predicted_step_peak_bytes"], part[column], s=12, marker=marker, alpha=0.7, label=mode)
        lo = float(min(data["predicted_step_peak_bytes"].min(), shown[column].min() if len(shown) else np.inf))
        hi = float(max(data["predicted_step_peak_bytes"].max(), shown[column].max() if len(shown) else 0))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _bytes_axis(ax.xaxis, log=True)
        _bytes_axis(ax.yaxis, log=True)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("predicted step peak", fontsize=8)
        ax.set_ylabel(f"{label} step peak", fontsize=8)
        note = f"\n({hidden} rows ≤ 0 not shown)" if hidden else ""
        ax.set_title(f"{label}{note}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def activation_law(cells: pd.DataFrame, x: str, xlabel: str, slope: float, intercept_by_batch: bool,
                   coef: dict[str, float], path: Path, title: str) -> Path | None:
    """Measured training activation bytes against the law's main term, fitted values as a line per batch."""
    data = cells.dropna(subset=["activation_bytes", x])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    batches = sorted(data["batch_size"].unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(batches), 1)))
    for color, batch in zip(colors, batches):
        part = data[data["batch_size"] == batch].sort_values(x)
        ax.scatter(part[x], part["activation_bytes"], s=14, color=color, label=f"batch {batch}")
        fitted = slope * part[x] + coef.get("batch", 0.0) * batch + coef.get("const", 0.0)
        ax.plot(part[x], fitted, color=color, lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    _bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("activation bytes held for backward (ledger)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


# --- what buys the memory back ----------------------------------------------------------------------

def _log2_x(ax: Any) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


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
    _log2_x(left)
    left.set_xlabel("depth (hidden layers)")
    left.set_ylabel("activations held for backward, max\n(layers' worth: ÷ batch × width × itemsize)")
    left.set_title(f"memory vs depth (batch {batch})", fontsize=9)
    right.axvline(1.0, color="black", lw=0.6)
    right.set_xlabel("step time ÷ step time without checkpointing (same depth)")
    right.set_ylabel("layers' worth held")
    right.set_title("memory vs recompute time (one point per depth)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


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
        right.plot(line["depth"], _positive(line["activation_bytes"].astype(float)), marker="o", ms=4,
                   color=POLICY_COLORS.get(policy, "grey"), label=policy)
    _log2_x(right)
    right.set_yscale("log")
    _bytes_axis(right.yaxis, log=True)
    right.set_xlabel("depth")
    right.set_ylabel("activation bytes held for backward (ledger)")
    right.set_title(f"batch {batch}", fontsize=9)
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


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
        _log2_x(ax)
        ax.set_xlabel(x.replace("_size", " size"))
        ax.set_ylim(0, 100)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("parameters + gradients + optimiser state\n(% of the step's peak, ledger)")
    axes[0].set_title("as width grows: parameter-dominated", fontsize=9)
    axes[1].set_title("as the batch grows: activation-dominated", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


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
    return _save(fig, path)

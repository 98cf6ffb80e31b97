"""The generic report's PNG figures (matplotlib, Agg backend): each function writes one PNG and returns its path.

The findings draw theirs with the same helpers (`bytes_axis`, `log2_x`, `save`), so every PNG reads alike.
"""
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
from ..run.results.fields import CATEGORIES  # noqa: E402
from .formats import short_bytes_text  # noqa: E402
from .style import CATEGORY_COLORS, CATEGORY_LABELS  # noqa: E402

MODE_STYLE = {"train": "-", "inference": "--", "generate": ":"}
PNG_METADATA = {"Software": None}  # keep PNGs byte-stable across matplotlib versions where possible


def short_bytes(value: float, _pos: Any = None) -> str:
    """An axis tick in binary units (matplotlib's FuncFormatter passes the tick's position too)."""
    return short_bytes_text(value)


class BytesLocator(Locator):
    """Linear ticks at round numbers of the axis's own unit (KiB, MiB, ...), not of decimal bytes."""

    def __call__(self):
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin, vmax):
        top = max(abs(vmin), abs(vmax), 1.0)
        unit = 1024 ** int(np.floor(np.log(top) / np.log(1024)))
        return MaxNLocator(nbins=6, steps=[1, 2, 2.5, 4, 5, 10]).tick_values(vmin / unit, vmax / unit) * unit


def bytes_axis(axis: Any, log: bool) -> None:
    if log:
        axis.set_major_locator(LogLocator(base=2, numticks=8))
        axis.set_minor_locator(NullLocator())
    else:
        axis.set_major_locator(BytesLocator())
    axis.set_major_formatter(FuncFormatter(short_bytes))
    axis.set_minor_formatter(NullFormatter())


def save(fig: plt.Figure, path: Path) -> Path:
    from ..run.results.folder import replace_atomically

    fig.tight_layout()
    try:
        with replace_atomically(path) as tmp:  # a figure is whole or absent
            fig.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA)
    finally:
        plt.close(fig)
    return path


def positive(values: pd.Series) -> pd.Series:
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
            ax.plot(part[x], positive(part["peak_bytes"]), style, marker="o", ms=3.5, color=color,
                    label=f"{line.replace('_size', '')} {value}, {mode}")
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("total peak (ledger)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, path)


def breakdown(train: pd.Series | None, inference: pd.Series | None, path: Path, title: str,
              generate: pd.Series | None = None) -> Path | None:
    """Stacked bars of the ledger's live bytes by category at the peak, train, inference (and generate) side by
    side."""
    bars = [(label, row) for label, row in (("train", train), ("inference", inference), ("generate", generate))
            if row is not None]
    if not bars:
        return None
    # a category the rows predate (empty in every row: a runs.csv from before it) is left out
    categories = [c for c in CATEGORIES if any(pd.notna(row.get(f"peak_{c}_bytes")) for _, row in bars)]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    top = 0.0
    for i, (label, row) in enumerate(bars):
        bottom = 0.0
        for category in categories:
            value = row.get(f"peak_{category}_bytes")
            value = float(value) if pd.notna(value) else 0.0
            if not np.isfinite(value):
                value = 0.0
            ax.bar(i, value, bottom=bottom, color=CATEGORY_COLORS[category], width=0.6,
                   label=CATEGORY_LABELS[category] if i == 0 else None)
            bottom += value
        ax.text(i, bottom, format_bytes(bottom), ha="center", va="bottom", fontsize=8)
        top = max(top, bottom)
    ax.set_ylim(0, top * 1.1 if top > 0 else 1)
    ax.set_xticks(range(len(bars)), [label for label, _ in bars])
    bytes_axis(ax.yaxis, log=False)
    ax.set_ylabel("live bytes at the step's peak (ledger)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, path)


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
    bytes_axis(ax.yaxis, log=False)
    ax.set_xlabel("ledger event (allocation or free), in order")
    ax.set_ylabel("live bytes")
    levels = max((lv for _, _, lv in placed), default=0) if "phase" in events.columns else 0
    ax.set_title(title, fontsize=10, pad=14 + 9 * levels)
    ax.legend(fontsize=7, loc="upper left")
    ax.margins(x=0)
    return save(fig, path)


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
        for mode, marker in (("train", "o"), ("inference", "^"), ("generate", "s")):
            part = shown[shown["mode"] == mode]
            if not part.empty:
                ax.scatter(part["predicted_step_peak_bytes"], part[column], s=12, marker=marker, alpha=0.7, label=mode)
        lo = float(min(data["predicted_step_peak_bytes"].min(), shown[column].min() if len(shown) else np.inf))
        hi = float(max(data["predicted_step_peak_bytes"].max(), shown[column].max() if len(shown) else 0))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        bytes_axis(ax.xaxis, log=True)
        bytes_axis(ax.yaxis, log=True)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("predicted step peak", fontsize=8)
        ax.set_ylabel(f"{label} step peak", fontsize=8)
        note = f"\n({hidden} rows ≤ 0 not shown)" if hidden else ""
        ax.set_title(f"{label}{note}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, path)


# --- helpers the findings' figures share ----------------------------------------------------------------

def log2_x(ax: Any) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())



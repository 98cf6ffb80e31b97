"""The parallelism finding's figure (matplotlib, Agg): one PNG, its path returned."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..report.figures import bytes_axis, plt, save
from ..report.style import CATEGORY_COLORS, CATEGORY_LABELS
from ..units import format_bytes


def stacked(data: pd.DataFrame, categories: Sequence[str], path: Path, title: str) -> Path | None:
    """Horizontal stacked bars, one per strategy (`data["label"]`), of its bytes at the peak by category."""
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(data) + 2.2))
    positions = range(len(data))[::-1]  # the reference on top
    left = pd.Series(0.0, index=data.index)
    for category in categories:
        values = data[category].astype(float).fillna(0.0)
        ax.barh(list(positions), values, left=left, color=CATEGORY_COLORS[category], height=0.65,
                label=CATEGORY_LABELS[category])
        left = left + values
    for y, total in zip(positions, left):
        ax.text(total, y, " " + format_bytes(total), va="center", fontsize=7)
    # long labels wrapped: tight_layout keeps the axes wide and would clip them
    ax.set_yticks(list(positions), [textwrap.fill(str(label), 34) for label in data["label"]], fontsize=7)
    ax.set_xlim(0, float(left.max()) * 1.18 or 1)
    bytes_axis(ax.xaxis, log=False)
    ax.set_xlabel("bytes at the rank's peak")
    ax.set_title(title, fontsize=10)
    # below the bars: the strategies' labels are long, and a legend beside the axes would crowd them off the figure
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    return save(fig, path)

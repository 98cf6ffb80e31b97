"""The parallelism finding's figure (matplotlib, Agg): one PNG, its path returned."""
from __future__ import annotations

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
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(data) + 1.6))
    positions = range(len(data))[::-1]  # the reference on top
    left = pd.Series(0.0, index=data.index)
    for category in categories:
        values = data[category].astype(float).fillna(0.0)
        ax.barh(list(positions), values, left=left, color=CATEGORY_COLORS[category], height=0.65,
                label=CATEGORY_LABELS[category])
        left = left + values
    for y, total in zip(positions, left):
        ax.text(total, y, " " + format_bytes(total), va="center", fontsize=7)
    ax.set_yticks(list(positions), list(data["label"]), fontsize=7)
    ax.set_xlim(0, float(left.max()) * 1.18 or 1)
    bytes_axis(ax.xaxis, log=False)
    ax.set_xlabel("bytes at the rank's peak")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, path)

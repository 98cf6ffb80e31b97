"""The generation finding's figure (matplotlib, Agg backend, the report's styles): writes one PNG, returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..report.figures import bytes_axis, log2_x, plt, save

STYLES = {"training": ("-", "o"), "inference (one forward)": ("--", "^"), "generation (whole step)": (":", "s"),
          "generation: prefill": ("-.", "v"), "generation: largest decode step": (":", "D")}


def context_peaks(cells: pd.DataFrame, fits: Sequence[tuple[str, str, tuple, dict[str, Any]]], path: Path,
                  title: str) -> Path | None:
    """Each peak against the context (points), with its fit fixed + linear·s + quadratic·s² (line)."""
    if not fits:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.cm.tab10(np.arange(len(fits)))
    for color, (label, column, modes, fit) in zip(colors, fits):
        part = cells[cells["mode"].isin(modes)].dropna(subset=[column]).sort_values("context")
        line, marker = STYLES.get(label, ("-", "o"))
        ax.scatter(part["context"], part[column], color=color, marker=marker, s=22, zorder=3)
        s = np.geomspace(float(part["context"].min()), float(part["context"].max()), 64)
        c = fit["coef"]
        ax.plot(s, c["fixed"] + c["linear"] * s + c["quadratic"] * s ** 2, line, color=color, lw=1.2,
                label=f"{label} (quadratic {100 * fit['share']['quadratic']:.0f}% at s = {fit['top']})")
    log2_x(ax)
    ax.set_yscale("log")
    bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel("context s (tokens: seq_len; prompt_len + new_tokens for a generation)")
    ax.set_ylabel("total peak (ledger)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)

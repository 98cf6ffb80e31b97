"""The MLP finding's figure (matplotlib, through the report's helpers): the activation law, measured and fitted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..report.figures import FuncFormatter, NullFormatter, bytes_axis, plt, save


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
    bytes_axis(ax.yaxis, log=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("activation bytes held for backward (ledger)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)

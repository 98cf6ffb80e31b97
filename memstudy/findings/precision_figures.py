"""The precision finding's figures (matplotlib, PNG only): float32 ÷ float64 per category, bytes per category per
precision. Each function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..report.figures import save  # noqa: E402
from ..report.style import CATEGORY_COLORS  # noqa: E402
from .remedies_figures import dtype_ratio  # noqa: F401,E402  (the float32 ÷ float64 figure, drawn as before)

COLUMN_CATEGORY = {"parameter_bytes": "parameter", "peak_gradient_bytes": "gradient",
                   "optimizer_state_bytes": "optimizer_state", "activation_bytes": "activation",
                   "peak_temporary_bytes": "temporary"}


def precision_bytes(rep: Any, labels: list[str], columns: list[str], precisions: list[str], path: Path,
                    title: str) -> Path | None:
    """One stacked bar per precision: the training step's bytes per category."""
    if rep.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(precisions) + 1.8))
    y = np.arange(len(precisions))[::-1]
    left = np.zeros(len(precisions))
    for label, column in zip(labels, columns):
        values = np.array([float(rep[rep["precision"] == p][column].iloc[0]) for p in precisions]) / 2 ** 20
        ax.barh(y, values, left=left, height=0.6, label=label,
                color=CATEGORY_COLORS.get(COLUMN_CATEGORY.get(column, ""), None))
        left += values
    ax.set_yticks(y, precisions, fontsize=8)
    ax.set_xlabel("MiB")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)

"""The PNG renderer: each `Figure` block's file, drawn by its own `draw` (matplotlib, loaded only here)."""
from __future__ import annotations

from pathlib import Path

from .document import Document


def render(document: Document, out: Path) -> dict[str, Path]:
    """Draw every figure of `document` into `out`; the figures drawn, by file name (a figure whose data cannot
    support it draws nothing)."""
    drawn: dict[str, Path] = {}
    for figure in document.figures():
        if figure.draw is None or figure.name in drawn:
            continue
        path = figure.draw(out / figure.name)
        if path:
            drawn[figure.name] = Path(path)
    return drawn

"""Reports of a sweep's rows: `write_report(DIR)` writes summary.csv, report.md, report.html and PNG figures.

The data flow: `load` (runs.csv -> rows, summary) -> `context.Study` -> the generic `sections` and the findings
that apply (`memstudy.findings`) build one `document` -> the renderers (`markdown`, `html`, `png`, and
`terminal` for `memstudy run` / `predict`) draw it. `fit` holds the slices and least squares every section
uses, `formats` how each kind of number is written, `charts` and `figures` the interactive and PNG drawings.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ReportError", "write_report"]


def __getattr__(name: str) -> Any:
    """`write_report` and `ReportError` load pandas on first use, not when a submodule is imported."""
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'memstudy.report' has no attribute {name!r}")

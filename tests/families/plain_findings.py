"""A findings module of a user's own (for tests): the one signature every findings module has."""
from __future__ import annotations

from memstudy.report.document import Heading, Paragraph

FIGURES: tuple[str, ...] = ()


def applies(study) -> bool:
    return study.varies("depth")


def blocks(study) -> list:
    cells = study.cells_declaring("families.plain_findings")
    return [Heading("Depths of my own"), Paragraph(f"{cells['depth'].nunique()} depths ran.")]

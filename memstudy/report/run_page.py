"""`memstudy run --html FILE`: one run's page, each measured step's timeline and the run's tables.

The tables are `terminal.run_document`'s blocks, the ones the terminal prints; every mode that ran gets its own
timeline chart (one step each), its layers named as the family names them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .charts import timeline_chart
from .document import Chart, Document, Heading, Paragraph
from .html import write_run_page
from .terminal import describe, layer_names, run_document
from .timeline import read_timeline


def run_page_document(results: dict[str, list[dict[str, Any]]], timelines: dict[str, str],
                      by_layer: bool = False) -> Document:
    tables = run_document(results, by_layer)
    document = Document("memstudy run", [Paragraph(tables.title.removeprefix("memstudy run: "))])
    for index, (mode, rows) in enumerate(results.items()):
        path = timelines.get(mode)
        if path is None or not Path(path).is_file():
            continue
        config = rows[0]
        chart = timeline_chart(read_timeline(path), f"Live bytes by category over one {mode} step\n"
                               f"{describe(config)}", chart_id="timeline" if index == 0 else f"timeline-{mode}",
                               names={str(k): v for k, v in layer_names(config).items()})
        if chart:
            document.add([Heading(f"One {mode} step over time", anchor="timeline" if index == 0 else
                                  f"timeline-{mode}"), Chart(chart)])
    document.add([Heading("The run's figures", anchor="tables")] + tables.blocks)
    return document


def write_run_html(path: str | Path, results: dict[str, list[dict[str, Any]]], timelines: dict[str, str],
                   by_layer: bool = False) -> Path:
    """The page, self-contained (plotly.js inline), with the machine's provenance."""
    from ..run.results.provenance import collect_env

    return write_run_page(Path(path), run_page_document(results, timelines, by_layer), collect_env())

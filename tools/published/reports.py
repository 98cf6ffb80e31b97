"""Blocks quoted from the reports themselves: a study's findings section, the index of every study's report, and
the size of each report page."""
from __future__ import annotations

from pathlib import Path

from memstudy import findings
from memstudy.report import markdown
from memstudy.report.context import Study
from memstudy.report.document import Document
from memstudy.units import format_bytes

from .results import Results


def finding_block(study_name: str, finding: str):
    """The block renderer of `finding`'s section of results/<study_name>/report.md, rendered by the report's own
    Markdown renderer from the committed runs.csv (figures left out: the docs link the PNGs themselves)."""
    def render(results: Results) -> list[str]:
        data = results.study(study_name)
        study = Study(results.path("results") / study_name, data.runs, data.summary, data.env)
        document = Document(study_name)
        document.add(findings.load(finding).blocks(study))
        text = markdown.render(document)
        return text.split("\n", 2)[2].rstrip("\n").split("\n")  # without the document's own title

    return render


def flash_block(results: Results) -> list[str]:
    """The fused-attention part of the attention finding (`attention.flash_blocks`) over results/flash, rendered as
    `finding_block` renders a section."""
    from memstudy.findings import attention

    data = results.study("flash")
    study = Study(results.path("results") / "flash", data.runs, data.summary, data.env)
    document = Document("flash")
    document.add(attention.flash_blocks(study))
    text = markdown.render(document)
    return text.split("\n", 2)[2].rstrip("\n").split("\n")


def reports_block(results: Results) -> list[str]:
    """Every committed study with its description and a link to its report."""
    lines = []
    for name in results.study_names():
        env = results.study(name).env or {}
        description = ((env.get("spec") or {}).get("description") or "").strip().rstrip(".")
        folder = f"results/{name}"
        lines.append(f"- [`{name}`]({folder}/report.md)" + (f": {description}." if description else ""))
    return lines


def pages_block(results: Results) -> list[str]:
    """Each committed report.html's size, and the one shared plotly.js they load."""
    shared = sorted(results.path("results/_static").glob("plotly-*.min.js"))
    script = f"+ shared {shared[-1].name}" if shared else "+ shared plotly.js"
    size = format_bytes(shared[-1].stat().st_size) if shared else "not committed"
    lines = [f"| page | HTML | {script} |", "|---|--:|--:|"]
    for name in results.study_names():
        page: Path = results.path("results") / name / "report.html"
        if page.is_file():
            lines.append(f"| results/{name}/report.html | {format_bytes(page.stat().st_size)} | {size} |")
    return lines

"""report.md: a `Document` as Markdown (GitHub's tables); figures as image links when their PNG was drawn."""
from __future__ import annotations

from typing import Collection

from .document import Bullets, Document, Figure, Heading, Paragraph, Table


def table_lines(block: Table) -> list[str]:
    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(block.header) + " |", "|" + "|".join("---" for _ in block.header) + "|"]
    lines += ["| " + " | ".join(escape(c.text) for c in row) + " |" for row in block.rows]
    return lines


def render(document: Document, drawn: Collection[str] = ()) -> str:
    """The document as Markdown; `drawn` names the figures whose PNG exists (the others are left out)."""
    lines = [f"# {document.title}", ""]
    for block in document.blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += ([block.caption, ""] if block.caption else []) + table_lines(block) + [""]
        elif isinstance(block, Figure) and block.name in drawn:
            lines += [f"![{block.alt}]({block.name})", ""]
    return "\n".join(lines).rstrip() + "\n"

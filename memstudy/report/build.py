"""`memstudy report DIR`: summary.csv, report.md, report.html and the PNG figures, from one document.

The generic sections (`sections.HEAD`, then `sections.TAIL`) frame the findings that apply to the rows
(`memstudy.findings`); every renderer (`markdown`, `html`, `png`) draws that one document, so report.md and
report.html hold the same tables and numbers by construction.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .. import findings
from ..run.results.folder import FolderLock, replace_atomically, results_folder, write_text_atomically
from ..run.results.provenance import read_env
from . import html, markdown, png
from .context import Study
from .document import Document
from .load import ReportError, load_runs, summarize
from .sections import FIGURES, HEAD, TAIL


def study_document(study: Study) -> Document:
    """The report of one study: the generic sections around the findings its rows support."""
    document = Document(f"Memory study: {study.experiment}")
    for section in HEAD:
        document.add(section(study))
    for finding in findings.applicable(study):
        document.add(finding.blocks(study))
    for section in TAIL:
        document.add(section(study))
    return document


def write_report(results_dir: str | Path, figures: bool = True,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Write summary.csv, report.md, report.html and the figures into `results_dir`; returns the paths written.

    `figures=False` skips the PNGs (and their links, and removes figures an earlier report left), e.g. for quick
    text-only checks. `warn` receives one line per problem found in runs.csv (also stated in report.md).
    Raises ReportError when the directory has no (readable) runs.csv, PathError when it cannot be written or
    another process (a sweep) is writing into it. Every file is written whole (temporary name, then rename).
    """
    if str(results_dir).strip() and not Path(results_dir).exists():
        raise ReportError(f"{results_dir}: no such folder")
    out = results_folder(results_dir, "report folder", create=False)
    with FolderLock(out, "report"):
        return _write_report(out, figures, warn)


def _write_report(out: Path, figures: bool, warn: Callable[[str], None] | None) -> list[Path]:
    runs = load_runs(out)
    env = read_env(out)
    for problem in runs.attrs.get("problems", []):
        if warn is not None:
            warn(problem)
    summary = summarize(runs)
    summary_path = out / "summary.csv"
    with replace_atomically(summary_path) as tmp:
        summary.to_csv(tmp, index=False)

    study = Study(out, runs, summary, env)
    document = study_document(study)
    drawn = png.render(document, out) if figures else {}
    report_path = out / "report.md"
    write_text_atomically(report_path, markdown.render(document, drawn))
    page = html.write_study_page(out, document, env, list(drawn))
    # a figure this report does not draw (this data no longer supports it, or --no-figures) must not linger
    declared = tuple(name for finding in findings.declared(study) for name in findings.load(finding).FIGURES)
    for name in FIGURES + findings.all_figures() + declared:
        if name not in drawn and (out / name).exists():
            (out / name).unlink()
    return [summary_path, report_path, page, *drawn.values()]


__all__ = ["ReportError", "study_document", "write_report"]

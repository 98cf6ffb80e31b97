"""The HTML renderer: report.html (a study) and `memstudy run --html FILE` (one step), pages that work from disk.

A page renders a `Document` block by block, as report.md does: the same headings, prose and tables (each cell
written from its value by `formats`, the value kept in `data-value` for sorting), and where report.md links a
PNG the page draws its interactive chart (or shows the PNG when the figure has no chart). The charts' data sit
in one JSON block, numbers rounded to `SIGNIFICANT_DIGITS` (a fit's last digits differ across machines and BLAS
builds; the page must not); a small script of our own (static/page.js) draws them with plotly.js. A study's
page loads plotly.js from `_static/` beside the study folders, one copy per results tree
(`results/_static/plotly-<version>.min.js`); a single step's page carries it inline, so it can be mailed around.
Nothing is fetched: a Content-Security-Policy forbids every request but the page's own files.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from .document import Bullets, Cell, Chart, Document, Figure, Heading, Paragraph, Table, slug, spans

STATIC_DIR = "_static"
# default-src 'none': no fetch, no font from anywhere; scripts and images only inline or from files on disk
CSP = ("default-src 'none'; script-src 'unsafe-inline' file:; style-src 'unsafe-inline'; img-src data: blob: file:; "
       "font-src data:")
SIGNIFICANT_DIGITS = 9  # of every non-integer number the page embeds


class PageError(ValueError):
    """The page cannot be written where asked; one-line message."""


# --- files -------------------------------------------------------------------------------------------

def check_output_path(path: str | os.PathLike, flag: str = "--html") -> Path:
    """`path` as a file to create: its folder exists and takes a new file, and it is not a folder itself."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise PageError(f"{flag} {path} is a folder, not a file")
    if not folder.is_dir():
        raise PageError(f"{flag} folder {folder} does not exist")
    try:  # access() says yes to root even on a read-only mount: try for real
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".memstudy-check-"):
            pass
    except OSError as exc:
        raise PageError(f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return target


def write_atomic(path: Path, text: str) -> Path:
    """Write to a temporary name in the same folder, then rename: a reader never sees half a page."""
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def plotly_source() -> Path:
    """plotly.min.js as the plotly package ships it (the pip package is how it reaches this machine)."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise PageError(f"plotly.js not found at {path} (reinstall the plotly package)")
    return path


def plotly_version(source: Path) -> str:
    with open(source, encoding="utf-8") as handle:
        head = handle.read(200)
    match = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    return match.group(1) if match else "unknown"


def shared_plotly(results_dir: Path) -> Path:
    """The results tree's one copy of plotly.js (`<parent of the study>/_static/`), copied there if missing."""
    source = plotly_source()
    target = results_dir.resolve().parent / STATIC_DIR / f"plotly-{plotly_version(source)}.min.js"
    if not (target.is_file() and target.stat().st_size == source.stat().st_size):
        try:
            target.parent.mkdir(exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise PageError(f"cannot write the shared plotly.js into {target.parent} ({exc.strerror or exc})") from None
    return target


def _asset(name: str) -> str:
    return (resources.files("memstudy.report") / "static" / name).read_text(encoding="utf-8")


# --- pieces of a page ----------------------------------------------------------------------------------

def json_ready(value: Any) -> Any:
    """JSON-ready data: NaN and infinities become null (JSON has neither), numpy scalars Python numbers, and a
    non-integer number keeps SIGNIFICANT_DIGITS significant digits."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def inline(text: str) -> str:
    """Prose as HTML: the document's two spans (`code`, **strong**), line breaks, everything else escaped."""
    out = []
    for kind, part in spans(str(text)):
        escaped = html.escape(part).replace("\n", "<br>")
        out.append(f"<code>{escaped}</code>" if kind == "code" else
                   f"<strong>{escaped}</strong>" if kind == "strong" else escaped)
    return "".join(out)


def _cell(cell: Cell, tag: str = "td") -> str:
    value = cell.sort_value
    sort = f' data-value="{value:.{SIGNIFICANT_DIGITS}g}"' if value is not None else ""
    return f"<{tag}{sort}>{inline(cell.text)}</{tag}>"


def table_html(block: Table) -> str:
    """A sortable table (click a column's header: numbers sort by their values); cells as report.md shows them."""
    head = "".join(f'<th scope="col">{inline(h)}</th>' for h in block.header)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block.rows)
    caption = f"<caption>{inline(block.caption.rstrip(':'))}</caption>" if block.caption else ""
    return (f'<table class="sortable">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>\n{body}\n</tbody></table>")


def chart_html(chart: dict[str, Any]) -> str:
    parts = [f'<div class="ms-chart" id="{html.escape(chart["id"])}" role="img" '
             f'aria-label="{html.escape(chart["title"])}"></div>']
    if chart.get("note"):
        parts.insert(0, f'<p class="ms-note">{html.escape(chart["note"])}</p>')
    layers = chart.get("layers") or []
    if layers:
        buttons = "".join(
            f'<button type="button" class="ms-layer" data-chart="{chart["id"]}" data-layer="{html.escape(layer)}" '
            f'aria-pressed="false">{html.escape(label)}</button>' for layer, label in layers)
        parts.append(f'<div class="ms-layers"><span>Highlight:</span>{buttons}</div>'
                     f'<p class="ms-status" id="{chart["id"]}-layer-status" aria-live="polite"></p>')
    return "\n".join(parts)


def blocks_html(document: Document, drawn: Sequence[str] = ()) -> tuple[str, list[tuple[str, str]]]:
    """The document's blocks as HTML, and (anchor, heading) for each section (level-2 heading), for the nav."""
    parts, links, seen = [], [], set()
    for block in document.blocks:
        if isinstance(block, Heading):
            anchor = block.anchor or slug(block.text)
            while anchor in seen:
                anchor += "-"
            seen.add(anchor)
            level = min(max(block.level, 2), 4)
            parts.append(f'<h{level} id="section-{anchor}">{inline(block.text)}</h{level}>')
            if level == 2:
                links.append((anchor, block.text))
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append(table_html(block))
        elif isinstance(block, Figure):
            if block.chart is not None:
                parts.append(chart_html(block.chart))
            elif block.name in drawn:
                parts.append(f'<p><img src="{html.escape(block.name)}" alt="{html.escape(block.alt)}"></p>')
        elif isinstance(block, Chart):
            parts.append(chart_html(block.spec))
    return "\n".join(parts), links


def provenance_html(env: dict[str, Any] | None) -> str:
    """env.json as recorded, folded away: the prose above already says what it means."""
    if not env:
        return ""
    return ('<h2 id="section-provenance">Provenance</h2>\n<details><summary>env.json, as recorded</summary><pre>'
            + html.escape(json.dumps(env, indent=2, default=str)) + "</pre></details>")


def render_page(title: str, intro: str, body: str, charts: list[dict[str, Any]], plotly_tag: str) -> str:
    payload = json.dumps(json_ready({"charts": [{k: c[k] for k in ("id", "data", "layout")} for c in charts]}),
                         separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>\n{_asset('page.css')}</style>", plotly_tag, "</head>",
        "<body>", f"<h1>{html.escape(title)}</h1>", intro,
        "<noscript><p>The charts need JavaScript; the tables below do not.</p></noscript>", body,
        f'<script type="application/json" id="memstudy-data">{payload}</script>',
        f"<script>\n{_asset('page.js')}</script>", "</body>", "</html>", ""])


def _nav(links: list[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#section-{a}">{inline(t)}</a>' for a, t in links) + "</nav>"


def render(document: Document, env: dict[str, Any] | None, intro: str, plotly_tag: str,
           drawn: Sequence[str] = ()) -> str:
    """A whole page: the document's blocks, env.json folded at the end, and the charts' data."""
    body, links = blocks_html(document, drawn)
    provenance = provenance_html(env)
    if provenance:
        links.append(("provenance", "Provenance"))
    return render_page(document.title, f"<p>{intro}</p>\n{_nav(links)}", body + "\n" + provenance,
                       document.charts(), plotly_tag)


# --- the two pages ----------------------------------------------------------------------------------------

def write_study_page(out: Path, document: Document, env: dict[str, Any] | None, drawn: Sequence[str] = ()) -> Path:
    """report.html beside report.md: the same document, its figures drawn as interactive charts."""
    script = shared_plotly(out)
    src = Path(os.path.relpath(script, out.resolve())).as_posix()
    intro = ('The interactive companion of <a href="report.md">report.md</a>: the same sections, tables and numbers '
             "(rendered from the same document), with each figure as a chart: values on hover, click a legend entry "
             "to hide or show its series, click a column's header to sort a table.")
    page = render(document, env, intro, f'<script src="{html.escape(src)}"></script>', drawn)
    return write_atomic(out / "report.html", page)


def write_run_page(path: Path, document: Document, env: dict[str, Any] | None) -> Path:
    """A self-contained page for one `memstudy run` (plotly.js inline)."""
    plotly_tag = "<script>\n" + plotly_source().read_text(encoding="utf-8") + "\n</script>"
    intro = "One `memstudy run`: each measured step's timeline (hover a buffer) and the run's tables."
    return write_atomic(path, render(document, env, inline(intro), plotly_tag))


__all__ = ["CSP", "PageError", "SIGNIFICANT_DIGITS", "check_output_path", "json_ready", "render", "shared_plotly",
           "write_run_page", "write_study_page"]

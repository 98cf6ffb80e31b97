"""report.html (a study) and `memstudy run --html FILE` (one step): interactive pages that work from disk.

A page is one HTML file: the charts' data as a JSON block, a small script of our own (static/page.js) and
plotly.js to draw them. A study's page loads plotly.js from `_static/` beside the study folders, one copy
per results tree (`results/_static/plotly-<version>.min.js`); a single step's page carries it inline, so it
can be mailed around. Nothing is fetched: a Content-Security-Policy forbids every request but the page's own
script files.
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
from typing import Any, Iterable, Sequence

from ..units import format_bytes
from . import webcharts
from .bands import TimelineError, read_timeline

STATIC_DIR = "_static"
# default-src 'none': no fetch, no image, no font from anywhere; scripts only inline or from files on disk
CSP = ("default-src 'none'; script-src 'unsafe-inline' file:; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:")


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
    return (resources.files("memstudy.study") / "static" / name).read_text(encoding="utf-8")


# --- pieces of a page ----------------------------------------------------------------------------------

EMBEDDED_DIGITS = 12  # significant digits of a float the page embeds


def _json_ready(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither); numpy scalars become Python numbers; floats are rounded
    to EMBEDDED_DIGITS significant digits, so that a least-squares fit's last-digit noise (which differs between
    machines and BLAS thread counts) does not reach the file: a chart needs no more."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.{EMBEDDED_DIGITS}g}") if math.isfinite(value) else None
    return value


def _inline_markdown(text: str) -> str:
    """A table cell's `code` and **bold** as HTML; everything else escaped."""
    escaped = html.escape(str(text))
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def table_html(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], note: str = "") -> str:
    """A sortable table (click a column's header); cells as report.md shows them."""
    head = "".join(f'<th scope="col">{_inline_markdown(h)}</th>' for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_inline_markdown(v)}</td>" for v in row) + "</tr>" for row in rows)
    caption = _inline_markdown(title) + (f'<div class="ms-note">{_inline_markdown(note)}</div>' if note else "")
    caption = f"<caption>{caption}</caption>" if caption else ""
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
            f'aria-pressed="false">{"no layer" if layer == "" else "layer " + html.escape(layer)}</button>'
            for layer in layers)
        parts.append(f'<div class="ms-layers"><span>Highlight:</span>{buttons}</div>'
                     f'<p class="ms-status" id="{chart["id"]}-layer-status" aria-live="polite"></p>')
    return "\n".join(parts)


def provenance_items(env: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(label, text) pairs from env.json (or a run's collect_env()): where the numbers came from."""
    if not env:
        return [("Provenance", "unknown (no env.json)")]
    from .report import _blas_summary

    items = []
    spec = env.get("spec") or {}
    if spec:
        items.append(("Study", f"{spec.get('name')}: {spec.get('description') or ''} (spec hash {spec.get('hash')})"))
    git = env.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12]
    items.append(("Code", f"memstudy {env.get('memstudy_version')}, git {commit}"
                  + (" (uncommitted changes)" if git.get("dirty") else "")))
    python, numpy_info = env.get("python") or {}, env.get("numpy") or {}
    items.append(("Software", f"Python {python.get('version')}, numpy {numpy_info.get('version')}, BLAS "
                  f"{_blas_summary(numpy_info.get('blas') or {})}"))
    packages = env.get("packages") or {}
    if packages:
        items.append(("Packages", ", ".join(f"{k} {v}" for k, v in packages.items() if v)))
    machine = env.get("machine") or {}
    items.append(("Machine", f"{machine.get('cpu_model')}, {machine.get('logical_cores')} logical cores "
                  f"({machine.get('usable_cores')} usable), {format_bytes(machine.get('total_memory_bytes'))} "
                  f"memory; {(env.get('os') or {}).get('platform')}"))
    cell_env = env.get("cell_environment") or {}
    if cell_env:
        items.append(("Cell environment", ", ".join(f"{k}={v}" for k, v in cell_env.items())))
    items.append(("Recorded", str(env.get("recorded_at"))))
    return items


def provenance_html(env: dict[str, Any] | None, extra: Sequence[tuple[str, str]] = ()) -> str:
    items = list(extra) + provenance_items(env)
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    raw = ""
    if env:
        raw = ("<details><summary>env.json, as recorded</summary><pre>"
               + html.escape(json.dumps(env, indent=2, default=str)) + "</pre></details>")
    return f'<h2 id="section-provenance">Provenance</h2>\n<dl class="ms-provenance">{rows}</dl>\n{raw}'


def render_page(title: str, intro: str, body: str, charts: list[dict[str, Any]], plotly_tag: str) -> str:
    payload = json.dumps(_json_ready({"charts": [{k: c[k] for k in ("id", "data", "layout")} for c in charts]}),
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


def _section(anchor: str, heading: str, parts: list[str]) -> str:
    return f'<h2 id="section-{anchor}">{html.escape(heading)}</h2>\n' + "\n".join(parts) if parts else ""


def _nav(links: list[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#section-{a}">{html.escape(t)}</a>' for a, t in links) + "</nav>"


# --- a study's report.html ---------------------------------------------------------------------------

def report_tables(lines: Sequence[Any]) -> list[tuple[str, str, Any]]:
    """report.md's tables as (section heading, caption, table): each table was built once as data (it keeps
    its header and rows), and the heading and the sentence introducing it are the lines report.md puts
    before it."""
    found = []
    heading, previous = "", ""
    for line in lines:
        if hasattr(line, "header") and hasattr(line, "rows"):
            found.append((heading, previous if previous.endswith(":") else "", line))
            previous = ""
        elif isinstance(line, str) and line.startswith("#"):
            heading, previous = line.lstrip("#").strip(), ""
        elif isinstance(line, str) and line.strip():
            previous = line.strip()
    return found


def study_charts(out: Path, runs: Any, summary: Any, env: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """The study page's charts by section, computed from the same frames and fits as report.md."""
    from .report import (_coef, _describe_fixed, _pick_depth_batch, _ratio, _timeline_cell, fix_others,
                         training_law, varying_fields)

    sections: dict[str, list[dict[str, Any]]] = {"timeline": [], "peak": [], "modes": [], "laws": [], "probes": []}
    path = out / "timeline.csv"
    if path.is_file():
        try:
            rows = read_timeline(path)
        except TimelineError:
            rows = []
        cell = _timeline_cell(env)
        chart = webcharts.timeline_chart(rows, "Live bytes by category over one training step"
                                         + (f": {cell}" if cell else ""))
        if chart:
            sections["timeline"].append(chart)
    ok_cells = summary[summary["ok_repeats"] > 0]
    if ok_cells.empty:
        return sections
    vary = varying_fields(ok_cells)
    charted: list[str] = []
    for field in [f for f in vary if f not in ("mode", "seed")]:
        # a field that moves in step with this one (in_features = width) is not held fixed, and not charted twice
        tied = tuple(f for f in vary if f != field and ok_cells.groupby(field)[f].nunique().max() == 1
                     and ok_cells.groupby(f)[field].nunique().max() == 1)
        if any(f in charted for f in tied):
            continue
        charted.append(field)
        series = next((f for f in ("batch_size", "depth", "width") if f in vary and f != field and f not in tied),
                      None)
        sliced, fixed = fix_others(ok_cells, keep=(field,) + tied + ((series,) if series else ()))
        chart = webcharts.peak_chart(sliced, field, fixed, series, tied)
        if chart:
            sections["peak"].append(chart)
    sliced, fixed = fix_others(ok_cells, keep=("depth", "batch_size"))
    pick = _pick_depth_batch(sliced)
    if pick is not None:
        depth, batch = pick
        at = sliced[(sliced["depth"] == depth) & (sliced["batch_size"] == batch)]
        rows_by_mode = {m: (at[at["mode"] == m].iloc[0] if (at["mode"] == m).any() else None)
                        for m in ("train", "inference")}
        where = f"depth {depth}, batch {batch}" + (f", {_describe_fixed(fixed)}" if fixed else "")
        chart = webcharts.breakdown_chart(rows_by_mode, where)
        if chart:
            sections["modes"].append(chart)
    train_cells = ok_cells[ok_cells["mode"] == "train"]
    laws = training_law(train_cells) if not train_cells.empty else []
    chart = webcharts.law_chart(train_cells, [law for law in laws if math.isfinite(law["r2"])], _coef, _ratio)
    if chart:
        sections["laws"].append(chart)
    chart = webcharts.predicted_chart(runs[runs["status"] == "ok"])
    if chart:
        sections["probes"].append(chart)
    return sections


def write_study_page(out: Path, runs: Any, summary: Any, env: dict[str, Any] | None,
                     md_lines: Sequence[Any]) -> Path:
    """report.html beside report.md: the timeline, the study's charts, report.md's tables, provenance."""
    experiment = runs["experiment"].dropna().iloc[0] if len(runs) else out.name
    charts = study_charts(out, runs, summary, env)
    script = shared_plotly(out)
    src = Path(os.path.relpath(script, out.resolve())).as_posix()
    titles = {"timeline": "One training step over time", "peak": "Peak memory against each swept field",
              "modes": "Train against inference", "laws": "The laws", "probes": "Probes and prediction"}
    body, links = [], []
    for key, title in titles.items():
        if charts[key]:
            body.append(_section(key, title, [chart_html(c) for c in charts[key]]))
            links.append((key, title))
    tables = report_tables(md_lines)
    if tables:
        parts, current = [], None
        for heading, caption, table in tables:
            if heading != current:
                parts.append(f"<h3>{html.escape(heading)}</h3>")
                current = heading
            parts.append(table_html(caption.rstrip(":"), table.header, table.rows))
        body.append(_section("tables", "Tables (as in report.md; click a column to sort)", parts))
        links.append(("tables", "Tables"))
    links.append(("provenance", "Provenance"))
    body.append(provenance_html(env))
    intro = (f"<p>The interactive companion of <a href=\"report.md\">report.md</a>: the same measurements "
             f"({len(summary)} cells, {len(runs)} rows in runs.csv), with values on hover; click a legend entry "
             f"to hide or show its series.</p>\n{_nav(links)}")
    page = render_page(f"Memory study: {experiment}", intro, "\n".join(body),
                       [c for key in titles for c in charts[key]], f'<script src="{html.escape(src)}"></script>')
    return write_atomic(out / "report.html", page)


# --- one step's page (memstudy run --html) -----------------------------------------------------------

def write_run_page(path: Path, description: str, tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]],
                   notes: Sequence[str], timeline_rows: list[dict[str, str]], env: dict[str, Any] | None,
                   mode: str) -> Path:
    """A self-contained page for one `memstudy run`: the first mode's step timeline, the run's tables."""
    chart = webcharts.timeline_chart(timeline_rows, f"Live bytes by category over one {mode} step")
    charts = [chart] if chart else []
    body = []
    if chart:
        body.append(_section("timeline", f"One {mode} step over time", [chart_html(chart)]))
    parts = [table_html("" if title == header[0] else title, header, rows) for title, header, rows in tables]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    body.append(_section("tables", "The run's figures (click a column to sort)", parts))
    body.append(provenance_html(env))
    links = ([("timeline", "Timeline")] if chart else []) + [("tables", "Tables"), ("provenance", "Provenance")]
    intro = f"<p>memstudy run: {html.escape(description)}</p>\n{_nav(links)}"
    plotly_tag = "<script>\n" + plotly_source().read_text(encoding="utf-8") + "\n</script>"
    page = render_page("memstudy run", intro, "\n".join(body), charts, plotly_tag)
    return write_atomic(path, page)


__all__ = ["PageError", "check_output_path", "report_tables", "shared_plotly", "write_run_page",
           "write_study_page"]

"""report.html and its timeline bands, without a browser (tests/test_browser.py drives the pages in one)."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from memstudy.report.timeline import TimelineError, bands, has_buffers, live_by_category, polygon, read_timeline
from memstudy.run.results.fields import CATEGORIES
from memstudy.report import write_report
from memstudy.report.html import STATIC_DIR, plotly_source

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent.name for p in (ROOT / "results").glob("*/runs.csv"))
# a shape-only study (`[run] measure = false`) measures no step, so it has no timeline.csv
MEASURED = [s for s in STUDIES if '"measure": false' not in (ROOT / "results" / s / "env.json").read_text()]


def copy_study(name: str, into: Path) -> Path:
    out = into / name
    shutil.copytree(ROOT / "results" / name, out, ignore=shutil.ignore_patterns("*.png", "report.html"))
    return out


def md_tables(text: str) -> list[list[list[str]]]:
    """report.md's tables as lists of cell rows (header first, the --- line dropped)."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if current is None:
                current = []
                tables.append(current)
            if not all(set(c) <= {"-"} for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


def html_tables(text: str) -> list[list[list[str]]]:
    import html

    tables = []
    for body in re.findall(r'<table class="sortable">(.*?)</table>', text, flags=re.S):
        rows = []
        for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S):
            cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)
            # back to report.md's spelling: <code>x</code> was `x`, <strong>x</strong> was **x**
            rows.append([html.unescape(re.sub(r"</?strong>", "**", re.sub(r"</?code>", "`", c))) for c in cells])
        tables.append(rows)
    return tables


# --- the bands ------------------------------------------------------------------------------------

@pytest.mark.parametrize("study", MEASURED)
def test_committed_timelines_carry_buffers_whose_bands_stack_to_the_ledgers_categories(study):
    rows = read_timeline(ROOT / "results" / study / "timeline.csv")
    assert has_buffers(rows), f"results/{study}/timeline.csv lacks the buffer columns"
    all_bands = bands(rows)
    for event, row in enumerate(rows):
        # a category the file predates (kv_cache) is absent: it held none
        assert live_by_category(all_bands, event) == {c: int(row.get(f"{c}_bytes", 0)) for c in CATEGORIES}, event
    for band in all_bands:
        xs, ys = polygon(band)
        assert (xs[0], ys[0]) == (xs[-1], ys[-1])  # closed
        assert min(xs) == band.born and max(xs) == (band.died if band.died is not None else len(rows))
        assert max(ys) - min(ys) >= band.nbytes  # at least its own height


def test_bands_refuse_rows_that_contradict_themselves():
    rows = read_timeline(ROOT / "results" / "default" / "timeline.csv")
    broken = [dict(r) for r in rows]
    first_death = next(i for i, r in enumerate(broken) if int(r["delta_bytes"]) < 0)
    broken[first_death]["died"] = str(first_death + 1)
    for r in broken:  # every row of that buffer says it dies one event later
        if r["key"] == broken[first_death]["key"]:
            r["died"] = str(first_death + 1)
    with pytest.raises(TimelineError, match="dies at event"):
        bands(broken)
    old = [{k: v for k, v in r.items() if k not in ("key", "born", "died")} for r in rows]
    assert not has_buffers(old)
    with pytest.raises(TimelineError, match="no buffer columns"):
        bands(old)


# --- the study page -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """results/default and results/checkpointing, reported afresh (no PNGs) into one results tree."""
    tree = tmp_path_factory.mktemp("results")
    outs = {name: copy_study(name, tree) for name in ("default", "checkpointing")}
    for out in outs.values():
        write_report(out, figures=False)
    return tree, outs


def test_report_writes_report_html_that_loads_one_shared_plotly(built):
    tree, outs = built
    scripts = list((tree / STATIC_DIR).iterdir())
    assert len(scripts) == 1 and scripts[0].read_bytes() == plotly_source().read_bytes()
    for out in outs.values():
        page = (out / "report.html").read_text()
        src = re.findall(r'<script src="([^"]+)"', page)
        assert src == [f"../{STATIC_DIR}/{scripts[0].name}"]
        assert (out / src[0]).resolve() == scripts[0].resolve()
        assert "http://" not in page and "https://" not in page  # nothing to fetch, not even a link
        assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_report_md_is_unchanged_and_report_html_shows_its_tables(built):
    _, outs = built
    for name, out in outs.items():
        report = (out / "report.md").read_text()
        committed = (ROOT / "results" / name / "report.md").read_text()
        # the refactor changed no text (built without figures, so without the figures' lines)
        assert report == re.sub(r"!\[[^\]]*\]\([^)]*\.png\)\n\n", "", committed)
        expected = md_tables(report)
        assert expected and html_tables((out / "report.html").read_text()) == expected


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
RELATIVE_TOLERANCE = 1e-6  # a least-squares fit's last digits differ across machines and BLAS builds


def meaning(page: str) -> tuple[str, list[float]]:
    """A page as its structure (every number replaced by #) and its numbers: what it says, not its last digits.
    The plotly.js file name follows the installed plotly's version and is left out."""
    page = re.sub(r'<script src="[^"]*"', '<script src=""', page)
    return NUMBER.sub("#", page), [float(n) for n in NUMBER.findall(page)]


def test_committed_report_html_is_what_report_writes(built):
    """The committed page says what a fresh report says: the same structure exactly, every number within
    RELATIVE_TOLERANCE (the page itself rounds what it embeds, html.SIGNIFICANT_DIGITS)."""
    _, outs = built
    for name, out in outs.items():
        committed = ROOT / "results" / name / "report.html"
        assert committed.exists(), f"results/{name}/report.html is not committed: run memstudy report"
        # built without figures (as report.md's test): the committed page's PNGs are left out
        old_structure, old_numbers = meaning(re.sub(r'<p><img src="[^"]*\.png"[^>]*></p>\n', "",
                                                    committed.read_text()))
        new_structure, new_numbers = meaning((out / "report.html").read_text())
        assert old_structure == new_structure, f"results/{name}/report.html is stale (run memstudy report)"
        assert new_numbers == pytest.approx(old_numbers, rel=RELATIVE_TOLERANCE, abs=1e-9), \
            f"results/{name}/report.html holds other numbers (run memstudy report)"


def test_the_page_comparison_sees_a_changed_number_and_ignores_a_last_digit():
    page = '<td data-value="33408">32.62 KiB</td><script>{"y":[33407.99999999906]}</script>'
    structure, numbers = meaning(page)
    assert meaning(page.replace("33407.99999999906", "33408.00000000012"))[0] == structure
    assert meaning(page.replace("33407.99999999906", "33408.00000000012"))[1] == pytest.approx(numbers, rel=1e-6)
    assert meaning(page.replace("32.62", "32.63"))[1] != pytest.approx(numbers, rel=RELATIVE_TOLERANCE)
    assert meaning(page.replace("<td", "<th"))[0] != structure


def test_the_page_rounds_what_it_embeds():
    from memstudy.report.html import SIGNIFICANT_DIGITS, json_ready

    assert json_ready({"y": [33407.99999999906, 2, float("nan")]}) == {"y": [33408.0, 2, None]}
    assert json_ready(1 / 3) == float(f"{1 / 3:.{SIGNIFICANT_DIGITS}g}")


def test_report_html_without_buffer_columns_still_draws_the_categories(tmp_path):
    out = copy_study("optimizers", tmp_path)
    with open(out / "timeline.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keep = [c for c in rows[0] if c not in ("key", "buffer_op", "role", "shape", "dtype", "nbytes", "born", "died")]
    with open(out / "timeline.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keep, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    written = write_report(out, figures=False)
    assert out / "report.html" in written
    page = (out / "report.html").read_text()
    assert "predates the buffer columns" in page and 'class="ms-layer"' not in page


@pytest.mark.parametrize("study", STUDIES)
def test_each_committed_report_html_holds_report_mds_tables(study):
    """report.md and report.html are rendered from one document: the same tables, cell for cell."""
    md = (ROOT / "results" / study / "report.md").read_text()
    assert md_tables(md) == html_tables((ROOT / "results" / study / "report.html").read_text())


def test_a_fit_that_differs_in_its_last_digits_writes_a_page_that_means_the_same(tmp_path, monkeypatch):
    """Another machine's BLAS, imitated: every least-squares solution moved by 3e-14 relative. The page says the
    same (report.md too: a rounded figure must not flip, e.g. 32.62 KiB to 32.63 KiB), and what it embeds is rounded,
    so such noise does not reach the file."""
    import numpy as np

    from memstudy.report.html import SIGNIFICANT_DIGITS

    lstsq = np.linalg.lstsq

    def other_blas(*args, **kwargs):
        solution, *rest = lstsq(*args, **kwargs)
        return (solution * (1 + 3e-14), *rest)

    monkeypatch.setattr(np.linalg, "lstsq", other_blas)
    out = copy_study("default", tmp_path)
    write_report(out, figures=False)
    committed = ROOT / "results" / "default"
    assert (out / "report.md").read_text() == re.sub(r"!\[[^\]]*\]\([^)]*\.png\)\n\n", "",
                                                     (committed / "report.md").read_text())
    structure, numbers = meaning(re.sub(r'<p><img src="[^"]*\.png"[^>]*></p>\n', "",
                                        (committed / "report.html").read_text()))
    got_structure, got_numbers = meaning((out / "report.html").read_text())
    assert got_structure == structure and got_numbers == pytest.approx(numbers, rel=RELATIVE_TOLERANCE)
    payload = re.search(r'<script type="application/json" id="memstudy-data">(.*?)</script>',
                        (out / "report.html").read_text(), re.S).group(1)
    floats = [float(x) for x in NUMBER.findall(payload) if "." in x or "e" in x.lower()]
    assert floats and all(float(f"{v:.{SIGNIFICANT_DIGITS}g}") == v for v in floats)

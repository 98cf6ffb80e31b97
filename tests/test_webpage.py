"""report.html and its timeline bands, without a browser (tests/test_browser.py drives the pages in one)."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from memstudy.study.bands import TimelineError, bands, has_buffers, live_by_category, polygon, read_timeline
from memstudy.study.fields import CATEGORIES
from memstudy.study.report import write_report
from memstudy.study.webpage import STATIC_DIR, plotly_source

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent.name for p in (ROOT / "results").glob("*/runs.csv"))


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

@pytest.mark.parametrize("study", STUDIES)
def test_committed_timelines_carry_buffers_whose_bands_stack_to_the_ledgers_categories(study):
    rows = read_timeline(ROOT / "results" / study / "timeline.csv")
    assert has_buffers(rows), f"results/{study}/timeline.csv lacks the buffer columns"
    all_bands = bands(rows)
    for event, row in enumerate(rows):
        assert live_by_category(all_bands, event) == {c: int(row[f"{c}_bytes"]) for c in CATEGORIES}, event
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


# Floating-point results of BLAS differ in their last digits between machines and thread counts (a fitted line's
# point reads 33407.999999999105 here and 33407.99999999906 there): a page is compared by what it means, its text
# and markup exactly and every number in it to NUMBER_TOLERANCE (relative, or absolute near zero).
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
NUMBER_TOLERANCE = dict(rel_tol=1e-9, abs_tol=1e-6)


def page_meaning(path: Path) -> tuple[list[str], list[float]]:
    """A page as (its text with every number cut out, its numbers); the plotly.js file name (which follows the
    installed plotly's version) left out."""
    text = re.sub(r'<script src="[^"]*"', '<script src=""', path.read_text())
    return NUMBER.split(text), [float(n) for n in NUMBER.findall(text)]


def assert_same_meaning(expected: Path, got: Path) -> None:
    import math

    skeleton, numbers = page_meaning(expected)
    got_skeleton, got_numbers = page_meaning(got)
    assert got_skeleton == skeleton, (
        f"{got} differs from {expected} in its text or markup, first at piece "
        f"{next(i for i, (a, b) in enumerate(zip(skeleton, got_skeleton)) if a != b) if got_skeleton[:len(skeleton)] != skeleton[:len(got_skeleton)] else min(len(skeleton), len(got_skeleton))}")
    off = [(a, b) for a, b in zip(numbers, got_numbers) if not math.isclose(a, b, **NUMBER_TOLERANCE)]
    assert not off, f"{len(off)} numbers of {got} differ from {expected} beyond {NUMBER_TOLERANCE}, e.g. {off[:3]}"


def test_committed_report_html_is_what_report_writes(built):
    _, outs = built
    for name, out in outs.items():
        committed = ROOT / "results" / name / "report.html"
        assert committed.exists(), f"results/{name}/report.html is not committed: run memstudy report"
        assert_same_meaning(committed, out / "report.html")


def test_page_comparison_sees_a_changed_number_and_a_changed_word(tmp_path):
    """The comparison is not blind: a byte count off by one, or a word changed, is a different page."""
    committed = ROOT / "results" / "default" / "report.html"
    text = committed.read_text()
    first = NUMBER.search(text[text.index('id="memstudy-data"'):])
    for changed in (text.replace("Provenance", "Provenience", 1), text.replace('"x":[', '"x":[1,', 1)):
        (tmp_path / "page.html").write_text(changed)
        with pytest.raises(AssertionError):
            assert_same_meaning(committed, tmp_path / "page.html")
    assert first is not None


def test_a_fit_that_differs_in_its_last_digits_writes_a_page_that_means_the_same(tmp_path, monkeypatch):
    """Another machine's BLAS, imitated: every least-squares solution moved by 3e-14 relative. The page says the
    same, and what it embeds is rounded to 12 significant digits, so such noise does not reach the file."""
    import json

    import numpy as np

    lstsq = np.linalg.lstsq

    def other_blas(*args, **kwargs):
        solution, *rest = lstsq(*args, **kwargs)
        return (solution * (1 + 3e-14), *rest)

    monkeypatch.setattr(np.linalg, "lstsq", other_blas)
    out = copy_study("default", tmp_path)
    write_report(out, figures=False)
    assert_same_meaning(ROOT / "results" / "default" / "report.html", out / "report.html")
    page = (out / "report.html").read_text()
    payload = re.search(r'<script type="application/json" id="memstudy-data">(.*?)</script>', page, re.S).group(1)
    floats = []

    def collect(value):
        if isinstance(value, float):
            floats.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    collect(json.loads(payload.replace("<\\/", "</")))
    assert floats and all(float(f"{v:.12g}") == v for v in floats), [v for v in floats if float(f"{v:.12g}") != v][:5]


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

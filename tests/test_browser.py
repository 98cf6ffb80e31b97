"""report.html and `memstudy run --html` in a real browser: headless Chromium, driven by selenium.

One browser for the module. Each page must load from disk with no console error and no request but its own
files, draw every chart, show a buffer's op and bytes when the mouse is over its band, and show the numbers
the CSVs hold. Skipped, with the reason, where no browser exists (CI installs one: .ci/run).
"""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import browser
from memstudy.findings.mlp import training_law
from memstudy.measure.ledger import CATEGORIES
from memstudy.report import write_report
from memstudy.report.formats import ratio_text as _ratio
from memstudy.report.load import load_runs, summarize
from memstudy.report.style import CATEGORY_LABELS

ROOT = Path(__file__).resolve().parents[1]
REASON = browser.missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no browser: {REASON}")


@pytest.fixture(scope="module")
def driver():
    driver = browser.start()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """results/default and results/checkpointing reported afresh (no PNGs) into one results tree."""
    root = tmp_path_factory.mktemp("results")
    for name in ("default", "checkpointing"):
        shutil.copytree(ROOT / "results" / name, root / name, ignore=shutil.ignore_patterns("*.png", "report.html"))
        write_report(root / name, figures=False)
    return root


@pytest.fixture(scope="module")
def run_page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    page, timeline = folder / "step.html", folder / "step.csv"
    done = subprocess.run([sys.executable, "-m", "memstudy", "run", "--depth", "3", "--width", "64", "--batch", "32",
                           "--mode", "both", "--html", str(page), "--timeline", str(timeline)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return page, timeline


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def load(driver, page: Path) -> None:
    browser.open_page(driver, page)
    assert driver.execute_script("return document.body.dataset.ready") == "yes"
    errors = browser.console_errors(driver)
    assert errors == [], errors
    urls = browser.requests(driver)
    assert urls and all(u.startswith("file://") for u in urls), urls  # no network request of any kind
    assert urls[0] == page.resolve().as_uri()


def show(driver, page: Path) -> None:
    """`load` the page unless it is the one showing (tests leave it as they found it): plotly.js is 4.8 MB
    to parse, so each page loads once per module."""
    if driver.current_url != page.resolve().as_uri():
        load(driver, page)
    else:
        assert browser.console_errors(driver) == [] and browser.requests(driver) == []


def charts(driver) -> list[dict]:
    return driver.execute_script("""return Array.from(document.querySelectorAll('.ms-chart')).map(gd => ({
        id: gd.id, rendered: gd.dataset.rendered, traces: (gd.data || []).length,
        drawn: gd.querySelectorAll('g.trace').length, title: (gd.querySelector('.gtitle') || {}).textContent}))""")


def bands_meta(driver, chart: str = "timeline") -> list[dict]:
    return driver.execute_script(
        "return document.getElementById(arguments[0]).data.filter(t => t.meta && t.meta.key !== undefined)"
        ".map(t => t.meta)", chart)


def exact(nbytes: int | str) -> str:
    return f"= {int(float(nbytes)):,} B"


def hover_band(driver, band: dict) -> str:
    """Put the mouse in the middle of a band's widest run; the hover label as one string."""
    start, stop, bottom = max(band["runs"], key=lambda run: run[1] - run[0])
    lines = browser.hover(driver, "timeline", (start + stop) / 2, bottom + band["nbytes"] / 2)
    return " | ".join(lines)


def check_timeline_hover(driver, timeline_csv: Path) -> None:
    """For the biggest buffer of every category, the hover label names the CSV's op, bytes, birth and death."""
    rows = csv_rows(timeline_csv)
    births = {r["key"]: r for r in rows if int(r["delta_bytes"]) > 0}
    meta = {str(m["key"]): m for m in bands_meta(driver)}
    assert set(meta) == set(births)  # one band per buffer the ledger saw
    # a band under a few pixels tall (the 4-byte loss) cannot be aimed at, in a browser as in memory_viz
    tall = [r for r in births.values() if int(r["nbytes"]) * 40 >= max(int(r["live_bytes"]) for r in rows)]
    checked = 0
    for category in sorted({r["category"] for r in tall}):
        row = max((r for r in tall if r["category"] == category), key=lambda r: int(r["nbytes"]))
        label = hover_band(driver, meta[row["key"]])
        assert label.startswith(f"{row['buffer_op']} ({row['role']})"), (row, label)
        assert exact(row["nbytes"]) in label and f"{row['shape']} {row['dtype']}" in label, (row, label)
        assert f"born event {row['born']} ({row['phase']})" in label, (row, label)
        died = f"died event {row['died']}" if row["died"] else "alive at the end of the step"
        assert died in label, (row, label)
        checked += 1
    assert checked >= 3


def check_layer_highlight(driver, timeline_csv: Path, layer: str) -> None:
    rows = csv_rows(timeline_csv)
    expected = {r["key"] for r in rows if int(r["delta_bytes"]) > 0 and r["layer"] == layer}
    button = driver.find_element("css selector", f"button.ms-layer[data-chart='timeline'][data-layer='{layer}']")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    deadline = time.monotonic() + 3
    while driver.find_element("id", "timeline-layer-status").get_attribute("data-buffers") != str(len(expected)):
        assert time.monotonic() < deadline, driver.find_element("id", "timeline-layer-status").text
        time.sleep(0.05)
    lit = driver.execute_script("""return document.getElementById('timeline').data
        .filter(t => t.meta && t.meta.key !== undefined && t.opacity === 1).map(t => String(t.meta.key))""")
    assert set(lit) == expected
    button.click()  # pressed again: every band lit
    assert driver.execute_script("""return document.getElementById('timeline').data
        .filter(t => t.meta && t.meta.key !== undefined).every(t => t.opacity === 1)""")


# --- the study page ------------------------------------------------------------------------------------

def test_study_page_loads_offline_and_draws_every_chart(driver, tree):
    for name in ("default", "checkpointing"):
        load(driver, tree / name / "report.html")
        drawn = charts(driver)
        ids = [c["id"] for c in drawn]
        assert {"timeline", "peak-depth", "peak-batch_size", "breakdown", "law-activation", "predicted"} <= set(ids)
        for chart in drawn:
            assert chart["rendered"] == "yes" and chart["traces"] > 0 and chart["drawn"] == chart["traces"], chart
    assert "peak-checkpoint" in ids  # the checkpointing study sweeps the strategy


def test_hovering_a_timeline_band_shows_that_buffer(driver, tree):
    for name in ("checkpointing", "default"):
        show(driver, tree / name / "report.html")
        check_timeline_hover(driver, tree / name / "timeline.csv")


def test_bands_stack_to_the_csvs_live_bytes(driver, tree):
    show(driver, tree / "default" / "report.html")
    rows = csv_rows(tree / "default" / "timeline.csv")
    meta = bands_meta(driver)
    for event in (0, len(rows) // 2, max(range(len(rows)), key=lambda i: int(rows[i]["live_bytes"])), len(rows) - 1):
        covered = sum(m["nbytes"] for m in meta if any(a <= event < b for a, b, _ in m["runs"]))
        top = max(bottom + m["nbytes"] for m in meta for a, b, bottom in m["runs"] if a <= event < b)
        assert covered == top == int(rows[event]["live_bytes"]), event


def test_clicking_a_layer_highlights_its_buffers(driver, tree):
    show(driver, tree / "default" / "report.html")
    check_layer_highlight(driver, tree / "default" / "timeline.csv", "3")


def test_peak_charts_show_the_summarys_numbers_on_hover(driver, tree):
    out = tree / "default"
    show(driver, out / "report.html")
    summary = {r["cell"]: r for r in csv_rows(out / "summary.csv")}
    for chart in ("peak-depth", "peak-batch_size"):
        traces = driver.execute_script("return document.getElementById(arguments[0]).data"
                                       ".map(t => ({x: t.x, y: t.y, cells: t.customdata}))", chart)
        for trace in traces:  # every value drawn is the summary's median
            assert [int(summary[c]["peak_bytes"]) for c in trace["cells"]] == trace["y"]
        for trace, index in ((traces[0], 0), (traces[-1], -1), (traces[len(traces) // 2], 1)):
            label = " | ".join(browser.hover(driver, chart, trace["x"][index], trace["y"][index]))
            # lines cross, so the label may be a neighbour's: it names its cell, whose CSV value it must show
            named = re.fullmatch(r"(depth|batch) (\d+), (depth|batch) (\d+), (train|inference) \| "
                                 r"total peak [\d.]+ \w+ = ([\d,]+) B", label)
            assert named, label
            fields = {named[1]: named[2], named[3]: named[4]}
            cells = [r for r in summary.values() if r["depth"] == fields["depth"]
                     and r["batch_size"] == fields["batch"] and r["mode"] == named[5]]
            assert len(cells) == 1 and int(cells[0]["peak_bytes"]) == int(named[6].replace(",", "")), label


def test_breakdown_law_and_probe_charts_hold_the_csvs_numbers(driver, tree):
    out = tree / "default"
    show(driver, out / "report.html")
    summary = {r["cell"]: r for r in csv_rows(out / "summary.csv")}
    bars = driver.execute_script("return document.getElementById('breakdown').data"
                                 ".map(t => ({name: t.name, y: t.y, cells: t.customdata}))")
    by_label = {label: category for category, label in CATEGORY_LABELS.items()}
    drawn = [by_label[trace["name"]] for trace in bars]  # each bar named by its category, in the ledger's order
    assert drawn == [c for c in CATEGORIES if c in drawn] and {"parameter", "gradient", "activation"} <= set(drawn)
    for category, trace in zip(drawn, bars):
        assert trace["y"] == [int(summary[c][f"peak_{category}_bytes"]) for c in trace["cells"]]
    label = " | ".join(browser.hover(driver, "breakdown", "train", bars[0]["y"][0] / 2))
    assert exact(bars[0]["y"][0]) in label and "parameters" in label
    # the law's legend shows the fit's R², as report.md prints it
    law = training_law(summarize(load_runs(out)).query("mode == 'train'"))[0]
    legend = driver.execute_script("return Array.from(document.querySelectorAll('#law-activation .legendtext'))"
                                   ".map(t => t.textContent).join(' | ')")
    assert f"R² = {_ratio(law['r2'])}" in legend
    points = driver.execute_script("return document.getElementById('law-activation').data[0]"
                                   ".customdata.map((c, i) => [c, document.getElementById('law-activation').data[0].y[i]])")
    assert all(int(summary[c]["activation_bytes"]) == y for c, y in points)
    runs = csv_rows(out / "runs.csv")
    ledger = driver.execute_script("return document.getElementById('predicted').data[0]")
    assert ledger["name"] == "ledger" and len(ledger["y"]) == sum(int(float(r["step_peak_bytes"])) > 0 for r in runs)


def test_legend_click_toggles_a_series(driver, tree):
    show(driver, tree / "default" / "report.html")
    item = driver.find_elements("css selector", "#peak-depth .legend .traces")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", item)
    item.click()
    deadline = time.monotonic() + 3
    while driver.execute_script("return document.getElementById('peak-depth').data[0].visible") != "legendonly":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    item.click()  # and back
    while driver.execute_script("return document.getElementById('peak-depth').data[0].visible") is not True:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_tables_are_report_mds_and_sort_by_their_numbers(driver, tree):
    show(driver, tree / "default" / "report.html")
    table = driver.execute_script("""return Array.from(document.querySelectorAll('table.sortable'))
        .findIndex(t => t.querySelector('thead').textContent.includes('train peak'))""")
    assert table >= 0
    header = driver.find_elements("css selector", "table.sortable")[table].find_elements("css selector", "th")[2]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", header)
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}

    def column() -> list[float]:
        cells = driver.execute_script("return Array.from(document.querySelectorAll('table.sortable')[arguments[0]]"
                                      ".tBodies[0].rows).map(r => r.cells[2].textContent)", table)
        return [float(v) * units[u] for v, u in (c.split() for c in cells)]

    before = column()
    header.click()
    assert column() == sorted(before)
    header.click()
    assert column() == sorted(before, reverse=True)


# --- the single step's page -------------------------------------------------------------------------

def test_run_html_page_is_self_contained_and_hovers_buffers(driver, run_page):
    page, timeline = run_page
    text = page.read_text()
    assert "<script src=" not in text  # plotly.js inline: the page travels alone
    load(driver, page)
    drawn = charts(driver)
    # both modes' steps are drawn (issue 21 item 10), each under its own heading
    assert [c["id"] for c in drawn] == ["timeline", "timeline-inference"]
    assert all(c["drawn"] == c["traces"] > 0 for c in drawn)
    assert "train step" in drawn[0]["title"] and "inference step" in drawn[1]["title"]
    assert "mlp: depth 3, width 64" in drawn[0]["title"]  # what was measured, not a cell key
    check_timeline_hover(driver, timeline)
    check_layer_highlight(driver, timeline, "1")
    # the layer buttons use the family's names for its layers
    buttons = [b.text for b in driver.find_elements("css selector", "button.ms-layer[data-chart='timeline']")]
    assert "hidden 1 (layer 1)" in buttons and "output (layer 3)" in buttons and "no layer" in buttons
    tables = driver.execute_script("return Array.from(document.querySelectorAll('table.sortable thead'))"
                                   ".map(t => t.textContent)")
    assert any("breakdown at the peak" in t for t in tables) and any("by probe" in t for t in tables)
    assert re.search(r"train / inference peak: \d+\.\d\dx", driver.find_element("tag name", "body").text)

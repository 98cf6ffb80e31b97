"""Findings are plug-ins chosen from what the rows' families declare; the generic report is right for any family.

Rows come from the predictor (exact bytes, made-up times: test_remedies.predicted_rows), so no cell runs.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from memstudy import findings
from memstudy.report import write_report
from memstudy.report.context import Study
from memstudy.report.load import load_runs, summarize
from memstudy.run.results.runs import format_rows, header_line
from test_remedies import predicted_rows
from test_webpage import html_tables, md_tables

ROOT = Path(__file__).resolve().parents[1]
PLAIN = f"{ROOT}/tests/families/plain.py:PlainFamily"
GENERIC = ["What was run", "Peak memory", "Activation bytes against what was swept", "What is live at the peak",
           "One training step over time", "Do the probes and the prediction agree with the ledger?",
           "Skipped and failed cells"]
# remedy fields vary too: a family that does not list the remedies finding must not get it
GRID = {"depth": [1, 2, 4], "batch_size": [2, 8], "mode": ["train", "inference"], "policy": ["minimal", "all"]}


def write_study(out: Path, rows: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.csv").write_text(header_line() + format_rows(rows))
    return out


def headings(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def test_a_family_without_findings_gets_the_generic_report_only(tmp_path):
    out = write_study(tmp_path / "plain", predicted_rows({"model": [PLAIN], **GRID}))
    write_report(out, figures=False)
    md = (out / "report.md").read_text()
    assert headings(md) == GENERIC
    for wrong in ("The laws", "width × itemsize", "What buys the memory back", "PyTorch's figure", "Attention",
                  "CNN", "in_features"):
        assert wrong not in md, wrong
    runs = load_runs(out)
    assert findings.applicable(Study(out, runs, summarize(runs))) == []
    # the generic fit is over the swept sizes, per policy: activations double with depth and with batch here
    assert "| policy minimal | 6 |" in md and "p (depth)" in md and "p (batch)" in md
    assert md_tables(md) == html_tables((out / "report.html").read_text())


def test_the_mlp_gets_its_laws_and_remedies_from_its_declaration(tmp_path):
    out = write_study(tmp_path / "mlp", predicted_rows({"model": ["mlp"], "width": [16], **GRID}))
    write_report(out, figures=False)
    found = headings((out / "report.md").read_text())
    assert found == GENERIC[:3] + ["The laws", "What buys the memory back"] + GENERIC[3:]


def test_a_family_may_list_a_findings_module_of_its_own(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    out = write_study(tmp_path / "own", predicted_rows({"model": [PLAIN.replace("PlainFamily", "PlainWithFindings")],
                                                        **GRID}))
    write_report(out, figures=False)
    md = (out / "report.md").read_text()
    assert headings(md) == GENERIC[:3] + ["Depths of my own"] + GENERIC[3:]
    assert "3 depths ran." in md


def test_a_findings_module_without_the_signature_is_refused():
    with pytest.raises(findings.FindingsError, match="has no FIGURES"):
        findings.load("memstudy.report.formats")


def test_a_slice_holds_a_strategy_at_the_familys_default(tmp_path):
    """Issue 21 item 10: the peak tables held checkpoint at every:K (the first value as text), not at none."""
    out = write_study(tmp_path / "ck", predicted_rows({"model": ["mlp"], "width": [16], "depth": [2, 4],
                                                       "batch_size": [2, 8], "mode": ["train", "inference"],
                                                       "checkpoint": ["none", "every:1"]}))
    write_report(out, figures=False)
    md = (out / "report.md").read_text()
    assert "Total peak at checkpoint none:" in md and "at the step's peak, depth 4, batch 8, checkpoint none:" in md


def test_measured_not_predicted_is_shown_wherever_a_row_has_both(tmp_path):
    rows = predicted_rows({"model": ["mlp"], "width": [16], "depth": [1, 2], "batch_size": [4]}, repeats=2)
    out = write_study(tmp_path / "same", rows)
    write_report(out, figures=False)
    assert "Measured = predicted: in all 4 rows" in (out / "report.md").read_text()
    rows[1]["predicted_activation_bytes"] += 512  # the prediction missed one buffer in one repeat
    out = write_study(tmp_path / "differ", rows)
    write_report(out, figures=False)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "**Warning: measured ≠ predicted** in 1 of 4 rows (1 cell)" in md
    measured = rows[1]["activation_bytes"]
    assert (f"| `{rows[1]['cell']}` | 1 | activation bytes | {measured} B | {measured + 512} B | "
            f"{512 / measured:+.2%} |") in md
    assert md_tables(md) == html_tables(page)  # the same table on the page


def test_a_row_that_says_its_prediction_does_not_match_is_shown(tmp_path):
    """`prediction_matches` (a row column from the cell) is read when present, beside the columns' own check."""
    rows = predicted_rows({"model": ["mlp"], "width": [16], "depth": [1, 2], "batch_size": [4]})
    out = write_study(tmp_path / "flag", rows)
    runs = pd.read_csv(out / "runs.csv")
    runs["prediction_matches"] = [True, False]
    runs.to_csv(out / "runs.csv", index=False)
    write_report(out, figures=False)
    md = (out / "report.md").read_text()
    assert "**Warning: measured ≠ predicted** in 1 of 2 rows" in md and "prediction_matches false" in md


def test_every_timing_shows_its_load_and_a_loaded_one_is_flagged(tmp_path):
    rows = predicted_rows({"model": ["mlp"], "width": [16], "depth": [4, 16], "batch_size": [8],
                           "checkpoint": ["none", "sqrt"]})
    for row in rows:
        row["foreign_cores"] = 1.25 if (row["depth"], row["checkpoint"]) == (16, "sqrt") else 0.05
    out = write_study(tmp_path / "load", rows)
    write_report(out, figures=False)
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| 16 | 8 | sqrt")]
    assert table and "| 1.25 (loaded) |" in table[0]
    assert "| 4 | 8 | sqrt |" in md and "| 0.05 |" in md
    assert "(timed under load: other processes kept 1.25 cores busy)" in md  # the sqrt sentence says so too

"""README's attention section: the GPT-2 small block is generated, and the study's figures are the report's."""
from __future__ import annotations

from pathlib import Path

from tools import worked

ROOT = Path(__file__).resolve().parents[1]


def test_readme_gpt2_small_block_is_the_predictors_output():
    configs, results, seconds = worked.accounts(worked.GPT2_SMALL)
    expected = worked.readme_block(worked.table_lines(configs, results))
    assert expected in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README's GPT-2 small block differs from the predictor's: run `python -m tools.worked --readme`")
    assert max(seconds.values()) < 2.0


def test_readme_study_figures_are_in_the_committed_report():
    report = (ROOT / "results" / "attention" / "report.md").read_text(encoding="utf-8")
    for figure in ("α = 66.2500", "β = 9.0000", "R² = 1.000000", "largest residual 0 B", "s* = α·h/(β·a) = 471",
                   "s* = α·h/(β·a) = 236", "64→128: 1.22", "512→1024: 1.68", "17% of a layer's bytes",
                   "75% at s = 1024", "at most 0.00% apart over 60 groups", "2.00 × 4 B", "in 20 of 20 cell groups",
                   "The measured share equals the formula's for this dtype in every row", "70.2% removed"):
        assert figure in report, figure

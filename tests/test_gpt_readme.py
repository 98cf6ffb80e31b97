"""README's attention section: the GPT-2 small block is generated, and the study's figures are the report's."""
from __future__ import annotations

from pathlib import Path

from memstudy.study import worked

ROOT = Path(__file__).resolve().parents[1]


def test_readme_gpt2_small_block_is_the_predictors_output():
    lines, seconds = worked.all_lines()
    expected = worked.readme_block(lines)
    assert expected in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README's GPT-2 small block differs from the predictor's: run `python -m memstudy.study.worked --readme`")
    assert max(seconds.values()) < 2.0


def test_the_bfloat16_table_shows_the_papers_34_and_5_and_zeros_16_bytes_per_parameter():
    lines, _ = worked.all_lines()
    text = "\n".join(lines)
    assert "12 × s·b·h·(34 + 5·a·s/h)" in text and "the paper's own 34 and 5" in text
    assert "12 × s·b·h·(66 + 9·a·s/h)" in text  # the float32 table beside it
    zero = [line for line in lines if line.startswith("| GPT")]
    assert len(zero) == 2 and all(line.endswith("| 2/2/12 |") for line in zero)


def test_readme_study_figures_are_in_the_committed_report():
    report = (ROOT / "results" / "attention" / "report.md").read_text(encoding="utf-8")
    for figure in ("α = 66.2500", "β = 9.0000", "R² = 1.000000", "largest residual 0 B", "s* = α·h/(β·a) = 471",
                   "s* = α·h/(β·a) = 236", "64→128: 1.22", "512→1024: 1.68", "17% of a layer's bytes",
                   "75% at s = 1024", "at most 0.00% apart over 60 groups", "2.00 × 4 B", "in 20 of 20 cell groups",
                   "The measured share equals the formula's for this dtype in every row", "70.2% removed"):
        assert figure in report, figure

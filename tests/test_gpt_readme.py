"""docs/attention.md's GPT-2 small table is the predictor's output (tools/worked.py), predicted in bounded time."""
from __future__ import annotations

from pathlib import Path

from tools import published, worked

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpt2_small_block_is_the_predictors_output_and_cheap():
    lines, seconds = worked.all_lines()
    block = next(b for b in published.BLOCKS if b.name == "gpt2")
    body = "\n".join(lines)
    assert body in published.render(block, published.Results(ROOT))
    assert body in (ROOT / "docs" / "attention.md").read_text(encoding="utf-8"), (
        "docs/attention.md's GPT-2 small block differs from the predictor's: run `make readme`")
    assert max(seconds.values()) < 2.0


def test_the_bfloat16_table_shows_the_papers_34_and_5_and_zeros_16_bytes_per_parameter():
    lines, _ = worked.all_lines()
    text = "\n".join(lines)
    assert "12 × s·b·h·(34 + 5·a·s/h)" in text and "the paper's own 34 and 5" in text
    assert "12 × s·b·h·(66 + 9·a·s/h)" in text  # the float32 table beside it
    zero = [line for line in lines if line.startswith("| GPT")]
    assert len(zero) == 2 and all(line.endswith("| 2/2/12 |") for line in zero)

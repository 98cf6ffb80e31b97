"""docs/attention.md's GPT-2 small table is the predictor's output (tools/worked.py), predicted in bounded time."""
from __future__ import annotations

from pathlib import Path

from tools import published, worked

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpt2_small_block_is_the_predictors_output_and_cheap():
    configs, results, seconds = worked.accounts(worked.GPT2_SMALL)
    block = next(b for b in published.BLOCKS if b.name == "gpt2")
    body = "\n".join(worked.table_lines(configs, results))
    assert body in published.render(block, published.Results(ROOT))
    assert body in (ROOT / "docs" / "attention.md").read_text(encoding="utf-8"), (
        "docs/attention.md's GPT-2 small block differs from the predictor's: run `make readme`")
    assert max(seconds.values()) < 2.0

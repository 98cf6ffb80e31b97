"""docs/generation.md's real-scale table is what tools/generation_table.py writes (the predictor's numbers, never
typed): the whole block regenerated with the dtype and budget its first line records (slow: 112 predicted
generations of Llama-3-8B and -70B, about 40 s), and, in the fast suite, a few of its cells predicted again."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tools/ is not an installed package

from tools import generation_table as table  # noqa: E402
from tools import published  # noqa: E402
from memstudy.autograd.precision import dtype as as_dtype  # noqa: E402
from memstudy.units import format_bytes  # noqa: E402


BLOCK = next(b for b in published.BLOCKS if b.name == "generation-table")
PAGE = ROOT / "docs" / "generation.md"


def page() -> tuple[str, str, str]:
    text = PAGE.read_text(encoding="utf-8")
    start, end = published.start_marker(BLOCK), published.end_marker(BLOCK)
    assert start in text and end in text, f"{PAGE} has no generation-table block"
    return text[text.index(start):text.index(end) + len(end)], table.DTYPE, table.BUDGET


@pytest.mark.slow
def test_the_page_block_is_what_the_script_writes():
    block, _, _ = page()
    assert block == published.render(BLOCK, published.Results(ROOT))


def row_of(block: str, model: str, caption: str, batch: int) -> list[str]:
    """The cells of one batch's row in a model's table that follows `caption`."""
    section = block[block.index(f"### {model}"):]
    section = section[section.index(caption):]
    line = next(line for line in section.splitlines() if line.startswith(f"| {batch} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


@pytest.mark.parametrize("batch,context", [(1, 1024), (64, 131072)])
def test_cells_of_the_page_are_predicted_again(batch, context):
    block, dtype, budget = page()
    name, path = table.MODELS[0]
    figures = table.predicted(path, batch, context, dtype)
    column = table.CONTEXTS.index(context)
    assert row_of(block, name, "KV cache (predicted)", batch)[column] == format_bytes(figures["kv_cache_bytes"])
    shown = row_of(block, name, "Total: the decode step's peak", batch)[column]
    assert shown.removesuffix(" ✗") == format_bytes(figures["decode_peak_bytes"])
    cfg = table.config(path, batch, context, dtype)
    per_token = 2 * cfg["depth"] * cfg["kv_heads"] * (cfg["width"] // cfg["heads"]) * as_dtype(dtype).itemsize
    assert figures["kv_cache_bytes"] == per_token * batch * context
    assert f"KV cache per token per sequence: {per_token:,} B" in block


def test_bad_budget_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        table.main(["--budget", "lots"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("--budget must be a size like 4GiB, 500MB or 75%, got 'lots'")

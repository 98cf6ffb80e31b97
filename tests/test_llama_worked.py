"""docs/llama.md's Llama-3-8B worked example is what tools/llama_worked.py writes (the predictor's numbers and
tools/calculators.py's, never typed): the whole block regenerated (slow: four real-scale predictions), and in the
fast suite one variant predicted again and the calculators' figures found in it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tools/ is not an installed package

from tools import calculators, llama_worked, published  # noqa: E402
from memstudy.units import format_bytes  # noqa: E402

BLOCK = next(b for b in published.BLOCKS if b.name == "llama-8b")
PAGE = ROOT / "docs" / "llama.md"


def page_block() -> str:
    text = PAGE.read_text(encoding="utf-8")
    start, end = published.start_marker(BLOCK), published.end_marker(BLOCK)
    assert start in text and end in text, f"{PAGE} has no llama-8b block"
    return text[text.index(start):text.index(end) + len(end)]


def row(block: str, label: str) -> list[str]:
    line = next(line for line in block.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


@pytest.mark.slow
def test_the_page_block_is_what_the_script_writes():
    assert page_block() == published.render(BLOCK, published.Results(ROOT))


def test_the_lora_column_is_predicted_again_and_the_calculators_are_their_formulas():
    block = page_block()
    names = [name for name, _ in llama_worked.VARIANTS]
    cfg, account = llama_worked.predicted(llama_worked.VARIANTS[1][1])  # LoRA r=16 on q and v
    column = names.index(llama_worked.VARIANTS[1][0])
    assert row(block, "total peak")[column] == format_bytes(account.peak_bytes)
    assert row(block, "parameters")[column] == format_bytes(account.registered_bytes["parameter"])
    assert row(block, "adam state")[column] == format_bytes(account.registered_bytes["optimizer_state"])
    # peft's trainable count; float32 adapters: Adam's two float32 moments, no master copy (8 B, not 12)
    assert account.trainable_parameter_count == 6_815_744
    assert account.registered_bytes["optimizer_state"] == 8 * 6_815_744
    assert "12 B per trainable parameter under full fine-tuning, 8 B under LoRA" in block
    peaks = row(block, "**peak**")
    assert peaks[1] == format_bytes(calculators.accelerate_estimate(cfg, "float16")["training_peak"])
    assert peaks[2] == format_bytes(calculators.llm_analysis_training(cfg, 4096, 1)["peak"])
    assert peaks[3] == format_bytes(calculators.llm_analysis_training(cfg, 4096, 1, flash_attn=False)["peak"])
    assert "(= V·h, the untied lm_head)" in block and "exactly 12·V·h apart, the lm_head" in block

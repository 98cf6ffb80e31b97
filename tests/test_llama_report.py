"""The llama finding (memstudy/findings/llama.py): each statement computed from the rows, "not so" when they disagree.

The rows are the predictor's (prediction = ledger, tests/test_predict.py), with layers.csv from the same accounts."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from memstudy import findings
from memstudy.config import normalize
from memstudy.findings import llama
from memstudy.measure.predict import predicted_account
from memstudy.report.context import Study
from memstudy.report.load import load_runs, summarize
from memstudy.run.results.runs import format_rows
from memstudy.run.sweep import LAYER_COLUMNS
from test_remedies import predicted_rows
from test_report_findings import write_study

SHAPE = {"model": ["llama"], "depth": [2], "width": [32], "heads": [4], "ffn": [24], "vocab": [64],
         "optimizer": ["adam"], "batch_size": [2]}
GRID = {**SHAPE, "mode": ["train", "inference"], "seq_len": [8, 16], "kv_heads": [4, 1], "lora_rank": [0, 4]}


def write(out: Path, grid: dict) -> Path:
    rows, layers = predicted_rows(grid), []
    for row in rows:
        account = predicted_account(normalize({k: row[k] for k in grid}))
        row["max_gradient_bytes"] = account.max_by_category["gradient"]
        layers += [{"experiment": row["experiment"], "cell": row["cell"], "repeat": 0, **r} for r in account.by_op()]
    write_study(out, rows)
    (out / "layers.csv").write_text(",".join(LAYER_COLUMNS) + "\n" + format_rows(layers, LAYER_COLUMNS))
    return out


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("llama") / "llama", GRID)


def study_of(out: Path) -> Study:
    runs = load_runs(out)
    return Study(out, runs, summarize(runs))


def text_of(study: Study) -> str:
    from memstudy.report import markdown
    from memstudy.report.document import Document

    document = Document("t")
    document.add(llama.blocks(study))
    return markdown.render(document, {})


def test_applies_when_kv_heads_or_lora_rank_varies(tmp_path):
    assert "llama" in findings.BUILTIN
    plain = write(tmp_path / "plain", {**SHAPE, "mode": ["train", "inference"], "seq_len": [8, 16]})
    assert llama not in findings.applicable(study_of(plain))  # a Llama grid that varies neither


def test_every_part_computes_its_statement(study_dir):
    study = study_of(study_dir)
    assert llama in findings.applicable(study)
    text = text_of(study)
    for heading in ("What fewer K/V heads save", "What LoRA saves, category by category", "Training ÷ inference"):
        assert heading in text, heading
    pairs = re.search(r"exactly that in (\d+) of (\d+) training pairs that differ in kv_heads alone, LoRA ranks "
                      r"included \(so\)", text)
    assert pairs and pairs.group(1) == pairs.group(2) == "4"  # 2 seq_len × 2 ranks
    assert "exactly the measured difference (so)" in text
    assert re.search(r"the Linear ops keep [\d.]+ \w+ with full fine-tuning and [\d.]+ \w+ at lora_rank 4", text)
    assert "the same (so): under LoRA only the adapters keep inputs" in text
    # LoRA's optimiser state: Adam's two moments of the adapters only, from the rows
    runs = pd.read_csv(study_dir / "runs.csv")
    lora = runs[(runs["mode"] == "train") & (runs["lora_rank"] == 4)]
    full = runs[(runs["mode"] == "train") & (runs["lora_rank"] == 0)]
    assert (lora["optimizer_state_bytes"] < full["optimizer_state_bytes"].min()).all()
    assert re.search(r"Training needs [\d.]+× to [\d.]+× inference's total peak over these 8 settings", text)


def test_disagreeing_rows_are_called_not_so(study_dir, tmp_path):
    runs = pd.read_csv(study_dir / "runs.csv")
    cell = runs.index[(runs["mode"] == "train") & (runs["kv_heads"] == 1) & (runs["lora_rank"] == 0)][0]
    runs.loc[cell, "activation_bytes"] += 8  # one GQA step that keeps more than k and v's formula says
    lora = runs.index[(runs["mode"] == "train") & (runs["lora_rank"] == 4) & (runs["kv_heads"] == 4)
                      & (runs["seq_len"] == 16)][0]
    runs.loc[lora, "activation_bytes"] += 8  # and a LoRA step that keeps more than the formula's terms (a GQA pair too)
    out = tmp_path / "bad"
    out.mkdir()
    runs.to_csv(out / "runs.csv", index=False)
    (out / "layers.csv").write_text((study_dir / "layers.csv").read_text())
    text = text_of(study_of(out))
    assert re.search(r"exactly that in 2 of 4 training pairs .* \(not so\)", text)
    assert "not the measured difference (not so" in text

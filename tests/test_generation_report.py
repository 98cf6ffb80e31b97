"""The generation finding (memstudy/findings/generation.py) applies from the rows (mode generate present, a family
that lists it), computes every statement from them and says "not so" when they disagree; a generation's timeline
is drawn with its phases. Rows are the predictor's (exact bytes, made-up times), so no cell runs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memstudy import findings
from memstudy.config import normalize
from memstudy.findings import generation
from memstudy.measure.generation import generation_figures
from memstudy.measure.predict import predict, predicted_account
from memstudy.report import write_report
from memstudy.report.context import Study
from memstudy.report.load import load_runs, summarize
from memstudy.run.spec import cell_id
from test_remedies import predicted_rows
from test_report_findings import write_study
from test_webpage import html_tables, md_tables

LLAMA = {"model": ["llama"], "depth": [2], "width": [16], "heads": [4], "ffn": [24], "vocab": [64]}
GRID = {**LLAMA, "mode": ["train", "inference", "generate"], "seq_len": [8, 16, 32], "batch_size": [1, 3],
        "kv_heads": [4, 1], "dtype": ["float32", "float64"], "new_tokens": [2]}


def rows_of(grid: dict) -> list[dict]:
    """predicted_rows, with each generation's columns from its prediction (measured = predicted)."""
    rows = predicted_rows(grid)
    for row in rows:
        config = normalize({k: row[k] for k in grid})
        p = predict(config)
        row.update(generation_figures(predicted_account(config)))
        row.update({k: p[k] for k in ("predicted_kv_cache_bytes", "predicted_prefill_peak_bytes",
                                      "predicted_decode_peak_bytes")})
        row["peak_kv_cache_bytes"] = p["predicted_peak_by_category"]["kv_cache"]
    return rows


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = write_study(tmp_path_factory.mktemp("gen") / "generation", rows_of(GRID))
    return out


def study_of(out: Path) -> Study:
    runs = load_runs(out)
    return Study(out, runs, summarize(runs))


def text_of(study: Study) -> str:
    from memstudy.report.document import Document
    from memstudy.report import markdown

    document = Document("t")
    document.add(generation.blocks(study))
    return markdown.render(document, {})


def test_the_finding_applies_from_the_rows_not_the_model(tmp_path):
    no_generation = write_study(tmp_path / "plain", predicted_rows({**LLAMA, "mode": ["train", "inference"],
                                                                    "seq_len": [8, 16]}))
    assert "generation" not in [m.__name__.rsplit(".", 1)[1] for m in findings.applicable(study_of(no_generation))]
    gpt = write_study(tmp_path / "gpt", rows_of({"model": ["gpt"], "depth": [1], "width": [16], "heads": [2],
                                                 "vocab": [32], "seq_len": [8, 16], "mode": ["train", "generate"],
                                                 "new_tokens": [2]}))
    names = [m.__name__.rsplit(".", 1)[1] for m in findings.applicable(study_of(gpt))]
    assert names == ["attention", "generation"]  # the GPT lists both; each applies from its rows


def test_every_part_computes_its_statement(study_dir):
    text = text_of(study_of(study_dir))
    for heading in ("Training ÷ generation, per sequence, at equal length", "What is fixed, what grows linearly",
                    "Sequences a generation holds", "What fewer K/V heads buy", "What a smaller dtype buys",
                    "Prefill against decode", "The cache, token by token"):
        assert heading in text, heading
    assert "keep exactly that (so)" in text  # kv 1 ÷ kv 4: the cache is a quarter in every pair
    assert re.search(r"the itemsizes' ratio exactly in (\d+) of them \(so\)", text)
    assert "A decode step reads one query against the cache, so its peak should have no quadratic part: so" in text
    assert re.search(r"exactly that in (\d+) of \1 dynamic cells \(so\)", text)
    assert "No 16-bit dtype ran in this study" in text


def test_context_fit_recovers_a_polynomial_and_needs_three_contexts():
    part = pd.DataFrame({"context": [8, 16, 32, 64], "y": [1000 + 3 * s + 0.5 * s * s for s in (8, 16, 32, 64)]})
    fit = generation.context_fit(part, "y")
    assert fit["coef"]["fixed"] == pytest.approx(1000) and fit["coef"]["linear"] == pytest.approx(3)
    assert fit["coef"]["quadratic"] == pytest.approx(0.5) and fit["residual"] < 1e-6
    assert fit["share"]["quadratic"] == pytest.approx(0.5 * 64 ** 2 / (1000 + 3 * 64 + 0.5 * 64 ** 2), abs=1e-6)
    assert generation.context_fit(part.head(2), "y") is None


def test_disagreeing_rows_are_called_not_so(study_dir, tmp_path):
    runs = pd.read_csv(study_dir / "runs.csv")
    gen = runs.index[(runs["mode"] == "generate") & (runs["kv_heads"] == 1)][0]
    runs.loc[gen, "kv_cache_bytes"] += 8  # one cache that is not a quarter of its MHA twin's
    runs.loc[gen, "kv_cache_step_bytes"] += 8  # nor grows by the formula
    train = runs.index[runs["mode"] == "train"][0]
    runs.loc[train, "peak_bytes"] = 1  # a training step below its generation
    out = tmp_path / "bad"
    out.mkdir()
    runs.to_csv(out / "runs.csv", index=False)
    text = text_of(study_of(out))
    assert re.search(r"generation pairs keep exactly that \(not so\)", text)
    assert "training needs more than the generation of the same length in" in text and ": not so in 1" in text
    assert re.search(r"dynamic cells \(not so\)", text)


def test_report_draws_the_generation_timeline_with_its_phases(study_dir, tmp_path):
    out = tmp_path / "with_timeline"
    out.mkdir()
    (out / "runs.csv").write_text((study_dir / "runs.csv").read_text())
    config = normalize({**{k: v[0] for k, v in LLAMA.items()}, "mode": "generate", "seq_len": 16, "batch_size": 3,
                        "kv_heads": 1, "new_tokens": 2, "dtype": "float32"})
    account = predicted_account(config)
    account.write_timeline(str(out / "timeline.csv"))
    (out / "env.json").write_text(json.dumps({"sweep": {"timeline_cell": cell_id(config)}}))
    write_report(out, figures=False)
    md = (out / "report.md").read_text()
    assert "## One generation over time" in md and "`prefill`, `decode 1` (2 phases)" in md
    cache = [p["live_bytes"]["kv_cache"] for p in account.by_phase() if p["phase"] != "baseline"]
    assert cache[0] < cache[1]
    assert md_tables(md) == html_tables((out / "report.html").read_text())
    page = (out / "report.html").read_text()
    assert '"text":"prefill"' in page and '"text":"decode 1"' in page  # the chart marks each phase
    assert '"name":"KV cache"' in page
    assert np.isfinite(cache).all()

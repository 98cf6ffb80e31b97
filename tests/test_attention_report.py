"""The attention report section on cells measured here under the ledger (small sizes, the same engine)."""
from __future__ import annotations

import itertools
import time

import pandas as pd
import pytest

from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import normalize
from memstudy.findings import attention
from memstudy.report import markdown
from memstudy.report.context import Study
from memstudy.report.document import Document, Figure

FIXED = dict(model="gpt", width=32, vocab=40, dtype="float32", dropout=0.1, optimizer="sgd", policy="minimal",
             bias=True, seed=0)


def measured_cells(lengths=(16, 32, 64), strategies=("none", "selective", "every:1")) -> pd.DataFrame:
    rows = []
    grid = itertools.product(lengths, (1, 2), (2, 4), (1, 2))
    for s, b, a, depth in grid:
        for mode, strategy in [("train", st) for st in strategies] + [("inference", "none")]:
            config = normalize({**FIXED, "seq_len": s, "batch_size": b, "heads": a, "depth": depth, "mode": mode,
                                "checkpoint": strategy})
            work = Workload(config)
            start = time.perf_counter()
            account = work.ledger_step()
            rows.append({**config, "activation_bytes": account.activation_bytes, "peak_bytes": account.peak_bytes,
                         "step_peak_bytes": account.step_peak_bytes, "recomputed_ops": account.recomputed_ops,
                         "step_seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cells():
    return measured_cells()


def test_per_layer_fit_reproduces_66_and_9_exactly(cells):
    layers = attention.per_layer(cells[cells["mode"] == "train"])
    plain = layers[layers["checkpoint"] == "none"]
    assert len(plain) == 3 * 2 * 2
    assert plain["heads"].nunique() >= 2  # β is then fixed by the data: a law without `a` cannot fit them all
    fit = attention.fit_formula(plain)
    assert fit["r2"] > 1 - 1e-12 and fit["worst_residual_bytes"] < 1e-3  # the law's form first, then its values
    statistics = 4 * 4 / 32  # mean and 1/std of two layer norms per position, float32, over h = 32
    assert fit["alpha"] == pytest.approx(66 + statistics, abs=1e-6) and fit["beta"] == pytest.approx(9, abs=1e-6)
    assert fit["alpha_expected"] == 66 + statistics and (fit["linear"], fit["quadratic"]) == (66, 9)
    assert fit["r2"] == pytest.approx(1.0) and fit["worst_residual_bytes"] < 1e-3
    selective = attention.fit_formula(layers[layers["checkpoint"] == "selective"])
    assert selective["alpha"] == pytest.approx(66 + statistics, abs=1e-6) and abs(selective["beta"]) < 1e-9
    slopes = attention.local_slopes(plain)
    assert [k for _, _, k in slopes] == sorted(k for _, _, k in slopes) and 1 < slopes[0][2] < slopes[-1][2] < 2


def section_text(cells: pd.DataFrame, out) -> tuple[str, list]:
    """The section as report.md writes it, and its figure blocks."""
    blocks = attention.blocks(Study.of_cells(cells, out))
    return markdown.render(Document("t", blocks)), [b for b in blocks if isinstance(b, Figure)]


def test_section_states_findings_from_the_numbers(cells, tmp_path):
    lines, figures = section_text(cells, tmp_path)
    assert "so the ledger reproduces the formula's coefficients exactly" in lines
    assert "the quadratic term is gone exactly (β = 0)" in lines
    assert "The measured share equals the formula's for this dtype in every row." in lines
    assert "flat in depth" in lines and "equal the sweep's row" in lines
    assert "NO" not in lines.replace("NOT", "")  # every term of the one cell run again equals the formula's
    assert "70.2% removed" in lines
    assert {f.name for f in figures} == {"attention_loglog.png", "attention_inference.png",
                                        "attention_checkpoint.png"}
    assert all(f.draw(tmp_path / f.name).stat().st_size > 0 for f in figures)


def test_section_says_not_so_when_the_rows_disagree(cells, tmp_path):
    broken = cells.copy()
    train = broken["mode"] == "train"
    broken.loc[train, "activation_bytes"] = broken.loc[train, "activation_bytes"] * 1.5  # not the formula
    lines, _ = section_text(broken, tmp_path)
    assert "not so: the ledger's coefficients differ from the formula's" in lines
    assert "do NOT equal the sweep's row" in lines


def test_applies_to_families_that_list_it_when_seq_len_varies(cells, tmp_path):
    assert attention.applies(Study.of_cells(cells, tmp_path))
    assert not attention.applies(Study.of_cells(cells[cells["seq_len"] == 16], tmp_path))
    # the family's declaration decides, never the model's name: the MLP lists no attention finding
    assert not attention.applies(Study.of_cells(cells.assign(model="mlp"), tmp_path))


# --- the fit on rows made by the formula itself (no study needed): the law's form is tested by R² ---------------

def formula_rows(heads=(1, 2, 4, 8), widths=(64, 128), dropouts=(0.1, 0.0)) -> pd.DataFrame:
    """Training cells at depth 1 and 2 whose activation bytes are exactly what the Megatron terms and the layer-norm
    statistics say per layer, plus a fixed amount outside the blocks."""
    from memstudy.findings import megatron

    rows = []
    for s, b, a, h, p, depth in itertools.product((64, 128, 256, 512), (1, 2), heads, widths, dropouts, (1, 2)):
        per_layer = megatron.layer_bytes(s, b, h, a, 4, p) + megatron.statistics_bytes(s, b, 4)
        rows.append({**FIXED, "width": h, "dropout": p, "seq_len": s, "batch_size": b, "heads": a, "depth": depth,
                     "mode": "train", "checkpoint": "none", "activation_bytes": 4 * s * b * 40 + depth * per_layer})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dropout, linear, quadratic", [(0.1, 66, 9), (0.0, 64, 4)])
def test_the_fit_recovers_the_terms_over_several_head_counts_and_widths(dropout, linear, quadratic):
    rows = formula_rows()
    layers = attention.per_layer(rows[rows["dropout"] == dropout])
    assert layers["heads"].nunique() == 4 and layers["width"].nunique() == 2
    fit = attention.fit_formula(layers)
    # R² first: a regressor that dropped `a` from a·s²·b (or any other wrong form) fails here over 4 head counts,
    # whatever coefficients it then reports (without `a` these rows give R² < 0.8)
    assert fit["r2"] > 1 - 1e-12 and fit["worst_residual_bytes"] < 1e-3 * layers["per_layer_bytes"].max()
    assert (fit["linear"], fit["quadratic"]) == (linear, quadratic)
    assert fit["alpha"] == pytest.approx(linear, rel=1e-9) and fit["beta"] == pytest.approx(quadratic, rel=1e-9)
    assert fit["gamma"] == pytest.approx(16, rel=1e-9)  # the statistics' 4 values of 4 B per position


def test_one_head_count_would_not_tell_a_from_no_a():
    """Why the tests and the study vary the heads: with one head count, s²·b and a·s²·b are proportional, so a law
    without `a` fits exactly too, and only the coefficient's value could tell them apart."""
    rows = formula_rows(heads=(2,), widths=(64,))
    layers = attention.per_layer(rows[rows["dropout"] == 0.1])
    without_a = layers.assign(as2b=layers["seq_len"] ** 2 * layers["batch_size"])
    assert attention.fit_formula(without_a)["r2"] > 1 - 1e-12
    several = attention.per_layer(formula_rows(widths=(64,)).query("dropout == 0.1"))
    assert attention.fit_formula(several.assign(as2b=several["seq_len"] ** 2 * several["batch_size"]))["r2"] < 0.9


def test_the_committed_attention_study_varies_the_heads():
    from pathlib import Path

    from memstudy.run.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "experiments" / "attention.toml")
    assert len(spec.grid["heads"]) >= 2 and len(spec.grid["seq_len"]) >= 3
def test_bfloat16_cells_fit_the_papers_own_34_and_5_beside_float32s_66_and_9(tmp_path):
    global FIXED
    saved = FIXED
    try:
        parts = []
        for dtype in ("float32", "bfloat16"):
            FIXED = {**saved, "dtype": dtype}
            parts.append(measured_cells(lengths=(16, 32), strategies=("none",)))
    finally:
        FIXED = saved
    cells = pd.concat(parts, ignore_index=True)
    layers = attention.per_layer(cells[cells["mode"] == "train"])
    bf16 = attention.fit_formula(layers[layers["dtype"] == "bfloat16"])
    statistics = 4 * 4 / 32  # the layer norms' statistics stay float32 beside 16-bit activations
    assert (bf16["linear"], bf16["quadratic"]) == (34, 5)
    assert bf16["alpha"] == pytest.approx(34 + statistics, abs=1e-6) and bf16["beta"] == pytest.approx(5, abs=1e-6)
    text, _ = section_text(cells, tmp_path)
    assert "**bfloat16, dropout 0.1** (activations 2 B, masks 1 B; the paper's own 34 and 5)" in text
    assert "the paper's 34 and 5 become 66 and 9" in text
    assert text.count("### The formula term by term (") == 2 and "NO" not in text.split("|")

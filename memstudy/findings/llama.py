"""The Llama finding: what grouped-query attention and LoRA save, category by category, and training ÷ inference.

Read from the per-cell medians (summary.csv) of the training and inference cells whose family lists `llama`, and
from layers.csv (the bytes each op saved, per layer: the ledger's buffers by the op that kept them). It applies
when kv_heads or lora_rank varies among them. Each part computes its numbers from those rows and says "not so"
where they disagree with what it tests:
- GQA: the training step's activations against kv_heads, every other field equal, beside the formula's difference
  (`llama_terms`: k and v are kv·d per position each, so 2·(a − kv)·d·s·b·p per layer under full fine-tuning);
  what a generation of the same model would cache (2·depth·kv·d·s·b·p, the law the generation study measures);
- LoRA: each category (parameters, gradients at their peak, optimiser state, activations, total peak) against
  lora_rank 0, every other field equal; the evidence from the ledger's buffers: the bytes Linear ops keep (their
  inputs, for their weights' gradients), which a frozen Linear does not keep; and the activations' difference
  against `llama_terms`' held-after-forward terms;
- training ÷ inference total peak for every setting.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..report import document as doc
from ..report.context import Study
from ..report.document import Block, Heading, Paragraph
from ..report.fit import itemsize, representative
from ..report.formats import bytes_text
from . import llama_terms

NAME = "llama"
FIGURES: tuple[str, ...] = ()
NUMERIC = ("seq_len", "batch_size", "depth", "width", "heads", "kv_heads", "ffn", "vocab", "lora_rank")
CATEGORIES = (  # (label, column): the row's bytes per category
    ("parameters", "parameter_bytes"), ("gradients (largest live)", "max_gradient_bytes"),
    ("optimiser state", "optimizer_state_bytes"), ("activations (largest live)", "activation_bytes"),
    ("total peak", "peak_bytes"))


def applies(study: Study) -> bool:
    """Training cells of a family that lists this finding, with kv_heads or lora_rank varying."""
    cells = study.cells_declaring(NAME)
    if cells.empty or not (cells["mode"] == "train").any():
        return False
    return any(c in cells.columns and cells[c].nunique() > 1 for c in ("kv_heads", "lora_rank"))


def prepare(cells: pd.DataFrame) -> pd.DataFrame:
    """Training and inference cells with numeric sizes, `kv` (kv_heads, else heads), `rank` (lora_rank, 0 when
    absent), `head_dim` and `itemsize`."""
    cells = cells[cells["mode"].isin(["train", "inference"])].copy()
    for column in NUMERIC:
        if column in cells.columns:
            cells[column] = pd.to_numeric(cells[column], errors="coerce")
    cells["kv"] = cells["kv_heads"].fillna(cells["heads"]) if "kv_heads" in cells.columns else cells["heads"]
    cells["rank"] = cells["lora_rank"].fillna(0).astype(int) if "lora_rank" in cells.columns else 0
    cells["head_dim"] = cells["width"] // cells["heads"]
    cells["itemsize"] = [itemsize(d) for d in cells["dtype"]]
    return cells


def _others(cells: pd.DataFrame, keep: tuple[str, ...]) -> list[str]:
    """The fields that vary among the cells, other than `keep` and the derived columns."""
    skip = set(keep) | {"kv", "rank", "cell", "experiment"}
    fields = ("mode", "seq_len", "kv_heads", "lora_rank", "batch_size", "depth", "width", "heads", "ffn", "vocab",
              "dtype", "optimizer", "checkpoint", "lora_targets", "lora_alpha", "tie")
    return [f for f in fields if f in cells.columns and f not in skip and cells[f].nunique() > 1]


def _slice(cells: pd.DataFrame, keep: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The cells at one value (`fit.representative`) of every varying field outside `keep`."""
    fixed = {f: representative(cells, f) for f in _others(cells, keep)}
    for f, value in fixed.items():
        cells = cells[cells[f] == value]
    return cells, fixed


def _fixed_text(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in fixed.items()) or "the only setting"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "—"


def _held_terms(config: dict[str, Any]) -> int:
    """`llama_terms`' bytes held for backward after forward: every layer's terms and those outside the layers."""
    size = itemsize(config["dtype"])
    layers = sum(llama_terms.layer_bytes(config, layer, size) for layer in range(config["depth"]))
    return layers + sum(llama_terms.outside_formula(config, size).values())


def _linear_terms(config: dict[str, Any]) -> int:
    """`llama_terms`' bytes the Linear ops keep: every layer's Linear inputs and LoRA terms, and lm_head's input."""
    size = itemsize(config["dtype"])
    keys = ("y1", "o_in", "y2", "down_in", "lora", "lora_in")
    layers = sum(llama_terms.term_bytes(config, layer, size)[k] for layer in range(config["depth"]) for k in keys)
    return layers + llama_terms.outside_formula(config, size)[llama_terms.OUTSIDE[3][0]]


def blocks(study: Study) -> list[Block]:
    cells = study.cells_declaring(NAME)
    if cells.empty:
        return []
    cells = prepare(cells)
    lines: list[Block] = [Heading("Llama: grouped-query attention and LoRA"), Paragraph(
        f"{int((cells['mode'] == 'train').sum())} training and {int((cells['mode'] == 'inference').sum())} inference "
        "cells of the Llama family. Bytes are the ledger's per category; gradients and activations the largest live, "
        "the total peak with parameters and input included. The formulas are "
        "`memstudy.findings.llama_terms`' (docs/llama.md derives them term by term).")]
    lines += _gqa_part(cells, study)
    lines += _lora_part(cells, study)
    lines += _ratio_part(cells)
    return lines


def _gqa_part(cells: pd.DataFrame, study: Study) -> list[Block]:
    lines: list[Block] = [Heading("What fewer K/V heads save (grouped-query attention)", 3)]
    train = cells[cells["mode"] == "train"]
    if train["kv"].nunique() < 2:
        return lines + [Paragraph("The grid has one number of K/V heads, so nothing to compare.")]
    most = train["kv"].max()
    keys = [f for f in _others(train, ("kv_heads",)) if f != "mode"]
    exact, pairs = 0, 0  # every training cell beside the one with the most K/V heads and every other field equal
    for _, group in (train.groupby(keys) if keys else [((), train)]):
        base = group[group["kv"] == most]
        for _, row in group[group["kv"] != most].iterrows():
            if base.empty:
                continue
            pairs += 1
            exact += int(base.iloc[0]["activation_bytes"] - row["activation_bytes"] == _gqa_formula(row, most))
    full = train[train["rank"] == 0] if (train["rank"] == 0).any() else train
    part, fixed = _slice(full, ("kv_heads", "seq_len"))
    if (train["rank"] == 0).any() and train["rank"].nunique() > 1:
        fixed = {"lora_rank": 0, **fixed}
    body, shares = [], []
    for seq_len, group in part.groupby("seq_len"):
        base = group[group["kv"] == most]
        if base.empty:
            continue
        base = base.iloc[0]
        for _, row in group.sort_values("kv", ascending=False).iterrows():
            saved = base["activation_bytes"] - row["activation_bytes"]
            expected = _gqa_formula(row, most)
            cache = 2 * row["depth"] * row["kv"] * row["head_dim"] * row["seq_len"] * row["batch_size"] * row["itemsize"]
            shares.append(saved / base["activation_bytes"])
            body.append([int(seq_len), f"{int(row['heads'])} / {int(row['kv'])}", doc.nbytes(row["activation_bytes"]),
                         doc.nbytes(saved), doc.percent(-saved / base["activation_bytes"]),
                         doc.nbytes(expected), doc.nbytes(row["parameter_bytes"]), doc.nbytes(cache)])
    lines.append(doc.table(
        ["seq_len", "heads / kv_heads", "activations", "saved vs kv_heads " + str(int(most)), "change",
         "formula 2·depth·(a − kv)·d·s·b·p", "parameters", "a generation's KV cache (computed)"], body,
        caption=f"Training steps at {_fixed_text(fixed)}, against kv_heads:"))
    verdict = ("so" if exact == pairs else "not so") if pairs else "no pairs to test"
    lines.append(Paragraph(
        f"Grouped-query attention keeps k and v at kv_heads · d per position instead of heads · d, so a training step "
        f"keeps 2·(a − kv)·d·s·b·p bytes less per layer; the measured activations fall by exactly that in {exact} of "
        f"{pairs} training pairs that differ in kv_heads alone, LoRA ranks included ({verdict}). Nothing else shrinks: q, the softmax output (a·s per position) "
        f"and the MLP's terms do not depend on kv_heads, so the saving is at most {max(shares, default=0):.1%} of the "
        "training step's activations in the table above. The KV cache a "
        "generation of the same model and context would keep is 2·depth·kv·d·s·b·p, proportional to kv_heads "
        "(computed here from each cell's shape; the generation study measures it: "
        "[results/generation](../generation/report.md)), so there the saving is the whole factor heads ÷ kv_heads."))
    return lines


def _gqa_formula(row: Any, most: float) -> float:
    """2·depth·(kv_most − kv)·d·s·b·p: k and v of every layer, at kv heads instead of kv_most."""
    return 2 * row["depth"] * (most - row["kv"]) * row["head_dim"] * row["seq_len"] * row["batch_size"] * row["itemsize"]


def _layer_linear_bytes(study: Study, cell: str) -> float | None:
    """What the Linear ops of a cell kept (their inputs), from layers.csv: summed over the layers."""
    layers = study.layers
    if layers is None:
        return None
    mine = layers[(layers["cell"] == cell) & (layers["op"] == "linear")]
    if mine.empty:
        return None
    return float(mine.groupby("repeat")["activation_bytes"].sum().median())


def _lora_part(cells: pd.DataFrame, study: Study) -> list[Block]:
    lines: list[Block] = [Heading("What LoRA saves, category by category", 3)]
    train = cells[cells["mode"] == "train"]
    if train["rank"].nunique() < 2 or not (train["rank"] == 0).any():
        return lines + [Paragraph("The grid has no full fine-tuning (lora_rank 0) beside a LoRA rank to compare.")]
    part, fixed = _slice(train, ("lora_rank",))
    base = part[part["rank"] == 0]
    if base.empty:
        return lines + [Paragraph(f"No full fine-tuning cell at {_fixed_text(fixed)}.")]
    base = base.iloc[0]
    header = ["category", "lora_rank 0"] + [f"lora_rank {r}" for r in sorted(part["rank"].unique()) if r]
    ranks = [r for r in sorted(part["rank"].unique()) if r]
    rows = {r: part[part["rank"] == r].iloc[0] for r in ranks}
    body = []
    for label, column in CATEGORIES:
        body.append([label, doc.nbytes(base[column])] + [
            doc.compound("{} ({})", doc.nbytes(rows[r][column]), _ratio(rows[r][column], base[column]) + "×")
            for r in ranks])
    linear = {r: _layer_linear_bytes(study, row["cell"]) for r, row in [(0, base), *rows.items()]}
    if all(v is not None for v in linear.values()):
        body.append(["kept by Linear ops (their inputs; layers.csv)", doc.nbytes(linear[0])] + [
            doc.compound("{} ({})", doc.nbytes(linear[r]), _ratio(linear[r], linear[0]) + "×") for r in ranks])
    lines.append(doc.table(header, body, caption=f"Training steps at {_fixed_text(fixed)} (× lora_rank 0's):"))
    targets = base.get("lora_targets") if "lora_targets" in base else None
    r0 = ranks[0]
    row = rows[r0]
    text = [f"With LoRA the base weights are frozen: they stay as parameters (with the adapters: "
            f"{bytes_text(row['parameter_bytes'])} against {bytes_text(base['parameter_bytes'])}), but the optimiser "
            f"state falls from {bytes_text(base['optimizer_state_bytes'])} to "
            f"{bytes_text(row['optimizer_state_bytes'])} and the largest live gradients from "
            f"{bytes_text(base['max_gradient_bytes'])} to {bytes_text(row['max_gradient_bytes'])} at lora_rank {r0}"
            + (f" (targets {targets})" if isinstance(targets, str) else "") + ": only the adapters train."]
    config0, config_r = study.config_of(base["cell"]), study.config_of(row["cell"])
    if config0 is not None and config_r is not None:
        measured = base["activation_bytes"] - row["activation_bytes"]
        formula = _held_terms(config0) - _held_terms(config_r)
        text.append(
            f"The activations fall too, by {bytes_text(measured)} "
            f"({-measured / base['activation_bytes']:.1%}): a frozen Linear keeps no input for its weight's gradient, "
            f"only its weight to pass the gradient on. The formula's held-after-forward terms differ by "
            f"{bytes_text(formula)} (o_proj's, gate/up's, down_proj's and lm_head's inputs, the first layer's input "
            "norm and q, less the adapters' lora_A outputs), "
            + ("exactly the measured difference (so)." if formula == measured else
               f"not the measured difference (not so: {bytes_text(measured - formula)} apart)."))
    if all(v is not None for v in linear.values()):
        text.append(f"The ledger's evidence: the Linear ops keep {bytes_text(linear[0])} with full fine-tuning and "
                    f"{bytes_text(linear[r0])} at lora_rank {r0}.")
        if config0 is not None and config_r is not None:
            want = (_linear_terms(config0), _linear_terms(config_r))
            same = want == (linear[0], linear[r0])
            text.append(f"The formula's terms a Linear keeps (the inputs of the Linears whose weights train, lm_head's "
                        f"included, and the lora_A outputs lora_B keeps) are {bytes_text(want[0])} and "
                        f"{bytes_text(want[1])}: " + ("the same (so): under LoRA only the adapters keep inputs." if same
                                                      else "not the same (not so)."))
    lines.append(Paragraph(" ".join(text)))
    return lines


def _ratio_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("Training ÷ inference, per setting", 3)]
    keys = [f for f in _others(cells, ()) if f != "mode"]
    train = cells[cells["mode"] == "train"]
    infer = cells[cells["mode"] == "inference"]
    if train.empty or infer.empty:
        return lines + [Paragraph("The grid has no training and inference cells of the same model to compare.")]
    pairs = train.merge(infer, on=keys, suffixes=("_train", "_inference"))
    if pairs.empty:
        return lines + [Paragraph("No training cell has an inference cell with every other field equal.")]
    pairs["ratio"] = pairs["peak_bytes_train"].astype(float) / pairs["peak_bytes_inference"].astype(float)
    pairs = pairs.sort_values(keys)
    body = [[*(int(r[k]) if isinstance(r[k], float) and float(r[k]).is_integer() else r[k] for k in keys),
             doc.nbytes(r["peak_bytes_train"]), doc.nbytes(r["peak_bytes_inference"]), doc.times(r["ratio"])]
            for _, r in pairs.iterrows()]
    lines.append(doc.table([*keys, "training peak", "inference peak", "training ÷ inference"], body,
                           caption="Total peaks (parameters and input included), every other field equal:"))
    low, high = pairs.loc[pairs["ratio"].idxmin()], pairs.loc[pairs["ratio"].idxmax()]
    text = [f"Training needs {pairs['ratio'].min():.2f}× to {pairs['ratio'].max():.2f}× inference's total peak "
            f"over these {len(pairs)} settings: least at " + ", ".join(f"{k} {low[k]:g}" if isinstance(low[k], float)
                                                                        else f"{k} {low[k]}" for k in keys)
            + "; most at " + ", ".join(f"{k} {high[k]:g}" if isinstance(high[k], float) else f"{k} {high[k]}"
                                       for k in keys) + "."]
    if "lora_rank" in keys:
        by_rank = pairs.groupby("lora_rank")["ratio"].median()
        text.append("The median ratio per LoRA rank: " + ", ".join(f"rank {int(r)} {v:.2f}×" for r, v in
                                                                   by_rank.items()) + ".")
    lines.append(Paragraph(" ".join(text)))
    return lines

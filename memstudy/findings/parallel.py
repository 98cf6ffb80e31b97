"""Which parallel strategy cuts which category of a rank's memory, and the papers' formulas beside the ledger's.

Two uses, one set of definitions:

- the report's finding (`applies`, `blocks`): read from the rows of a study whose family lists `parallel` and whose
  parallel fields (tensor_parallel, sequence_parallel, pipeline_parallel, schedule, data_parallel, zero) or
  checkpointing vary. A row's figures are one rank's; they are the ledger's for a measured row and the prediction's
  for a shape-only one (a spec's `[run] measure = false`: the rank's graph run on shape-only arrays, bytes exact for
  that graph, no timings), and the report says which. It shows per-rank bytes at the peak by category (table and
  stacked bars) for the reference cell (one device, no recomputation, the most it holds) and each cell that differs
  from it in one field; the ratio of each category to the reference's over every pair of cells that differ in one
  field alone (so "which strategy cuts which category" is computed from the rows, interactions included);
  Korthikanti et al.'s activation expression beside the ledger's activations for the GPT cells it describes
  (`formula_activations`, the paper's per-layer bytes from `korthikanti.formula_bytes`); and ZeRO's Table 1 model
  states beside the ledger's parameters + largest live gradients + optimiser state (`zero_states_bytes`).
- `strategy_rows(base)`: a fixed list of strategies predicted for one base configuration (docs/parallel.md's
  generated block, tools/published/korthikanti.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import korthikanti

NAME = "parallel"
FIGURES: tuple[str, ...] = ("parallel_categories.png",)
FIGURES_MODULE = "memstudy.findings.parallel_figures"
CATEGORIES = ("parameter", "gradient", "optimizer_state", "activation", "communication")
# the categories a rank's peak is made of, in the stacked bars' order (the ledger's, less those a training step of
# these families leaves empty at its peak are still shown when a row has them)
PEAK_CATEGORIES = ("parameter", "optimizer_state", "gradient", "activation", "communication", "temporary", "input",
                   "output")
# the fields a strategy sets, and the value each has on one device without recomputation
STRATEGY_FIELDS: dict[str, Any] = {"tensor_parallel": 1, "sequence_parallel": False, "checkpoint": "none",
                                   "pipeline_parallel": 1, "schedule": None, "data_parallel": 1, "zero": 0}
CUT = 0.5  # a category is "cut" by a strategy that holds at most this share of the reference's
ZERO_K = 12  # ZeRO's optimiser-state bytes per parameter for mixed-precision Adam (fp32 master weights, two moments)

# (label, the fields it sets on the base configuration)
STRATEGIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("one device", {}),
    ("t 8", {"tensor_parallel": 8}),
    ("t 8 + sequence parallel", {"tensor_parallel": 8, "sequence_parallel": True}),
    ("t 8 + sequence parallel + selective", {"tensor_parallel": 8, "sequence_parallel": True,
                                             "checkpoint": "selective"}),
    ("p 4, 1f1b, m 8 (first stage)", {"pipeline_parallel": 4, "microbatches": 8, "schedule": "1f1b"}),
    ("p 4, gpipe, m 8 (first stage)", {"pipeline_parallel": 4, "microbatches": 8, "schedule": "gpipe"}),
    ("t 8 + sp + selective, p 4, 1f1b, m 8", {"tensor_parallel": 8, "sequence_parallel": True,
                                              "checkpoint": "selective", "pipeline_parallel": 4, "microbatches": 8,
                                              "schedule": "1f1b"}),
    ("ZeRO 1, N 8", {"data_parallel": 8, "zero": 1}),
    ("ZeRO 3, N 8", {"data_parallel": 8, "zero": 3}),
)


# --- the papers' formulas -----------------------------------------------------------------------------------------

def zero_states_bytes(psi: float, n: int, stage: int) -> float:
    """ZeRO's Table 1 (Rajbhandari et al. 2020): model states per device for Ψ parameters on N data-parallel ranks,
    16-bit parameters and gradients with mixed-precision Adam: (2 + 2 + K)Ψ, 2Ψ + 2Ψ + KΨ/N, 2Ψ + (2 + K)Ψ/N,
    (4 + K)Ψ/N."""
    return ((4 + ZERO_K) * psi, 4 * psi + ZERO_K * psi / n, 2 * psi + (2 + ZERO_K) * psi / n,
            (4 + ZERO_K) * psi / n)[stage]


def formula_activations(config: dict[str, Any]) -> int | None:
    """Korthikanti et al.'s bytes for what the rank's blocks hold when its forward ends: per layer Table 2's row for
    (t, sequence parallel, selective), times the layers and microbatches in flight (GPipe: all m; 1F1B: the first
    stage holds min(p, m) microbatches of L/p layers, so one when p = 1: gradient accumulation). None for a Llama
    (not the paper's block), ZeRO (not an activation strategy), no dropout (the paper counts its masks) or a dtype
    that is not 2 bytes."""
    if config["model"] != "gpt" or config.get("zero") or config["dtype"] not in ("bfloat16", "float16") \
            or not config.get("dropout"):
        return None
    t, sp = config.get("tensor_parallel") or 1, bool(config.get("sequence_parallel"))
    selective = config["checkpoint"] == "selective"
    if config["checkpoint"] not in ("none", "selective"):
        return None
    setting = next(s for s in korthikanti.settings(t) if s.tensor_parallel == t and s.sequence_parallel == sp
                   and s.checkpoint == ("selective" if selective else "none"))
    p, m = config.get("pipeline_parallel") or 1, config.get("microbatches") or 1
    micro = config["batch_size"] // m
    layers = config["depth"] // p
    in_flight = m if config.get("schedule") == "gpipe" else min(p, m)
    per_layer = korthikanti.formula_bytes(setting, config["seq_len"], micro, config["width"], config["heads"])
    return per_layer * layers * in_flight


# --- docs/parallel.md's fixed strategies ------------------------------------------------------------------------

@dataclass(frozen=True)
class StrategyRow:
    label: str
    config: dict[str, Any]
    bytes_by_category: dict[str, int]  # parameter, optimizer state: registered; the others: their largest live
    peak_bytes: int
    formula_activation_bytes: int | None  # the paper's layers' activations for the GPT (None: not applicable)


def strategy_rows(base: dict[str, Any], strategies: tuple = STRATEGIES) -> list[StrategyRow]:
    """Each strategy's rank predicted from `base` (a raw configuration)."""
    from ..config import normalize
    from ..measure.predict import memoised_account

    rows = []
    for label, fields in strategies:
        config = normalize({**base, **fields})
        account = memoised_account(config)
        registered = account.registered_bytes
        by_category = {"parameter": registered["parameter"], "optimizer_state": registered["optimizer_state"],
                       "gradient": account.max_by_category["gradient"], "activation": account.activation_bytes,
                       "communication": account.max_by_category.get("communication", 0)}
        rows.append(StrategyRow(label, config, by_category, account.peak_bytes, formula_activations(config)))
    return rows


def cuts(rows: list[StrategyRow]) -> dict[str, list[str]]:
    """label -> the categories it holds at most half of one device's (the first row's), computed from the rows."""
    one = rows[0].bytes_by_category
    return {r.label: [c for c in CATEGORIES if one[c] and r.bytes_by_category[c] * 2 <= one[c]] for r in rows[1:]}


# --- the report's finding ---------------------------------------------------------------------------------------

def applies(study: Any) -> bool:
    """Training cells of a family that lists this finding, with a parallel field or checkpointing varying, and at
    least one cell on more than one rank."""
    cells = figures(study)
    if cells.empty:
        return False
    varying = [f for f in STRATEGY_FIELDS if cells[f].nunique() > 1]
    return bool(varying) and bool((cells["world_size"] > 1).any())


def _truth(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def figures(study: Any) -> pd.DataFrame:
    """One row per finished training cell of a family listing this finding: its strategy fields (defaults filled),
    `shape_only`, and its figures by category, the ledger's for a measured row and the prediction's for a shape-only
    one: `peak_<c>` (bytes of category c at the peak), `peak`, `activation` (largest live activations), `gradient`
    (largest live gradients), `parameter` and `optimizer_state` (registered)."""
    rows = study.cells_declaring(NAME, study.ok_rows)
    rows = rows[rows["mode"] == "train"].drop_duplicates("cell")
    if rows.empty:
        return pd.DataFrame(columns=["cell", *STRATEGY_FIELDS, "world_size", "shape_only"])
    out = pd.DataFrame({"cell": rows["cell"].to_numpy(), "model": rows["model"].to_numpy()})
    for field, default in STRATEGY_FIELDS.items():
        column = rows[field] if field in rows.columns else pd.Series([None] * len(rows))
        values = [default if v is None or (not isinstance(v, str) and pd.isna(v)) else v for v in column]
        if field == "sequence_parallel":
            values = [_truth(v) for v in values]
        elif isinstance(default, int) and not isinstance(default, bool):
            values = [int(float(v)) for v in values]
        out[field] = values
    out["schedule"] = [s if s else "1f1b" for s in out["schedule"]]
    for field in ("depth", "width", "heads", "seq_len", "batch_size", "microbatches"):
        out[field] = pd.to_numeric(rows[field], errors="coerce").fillna(1).astype(int).to_numpy() \
            if field in rows.columns else 1
    out["world_size"] = out["tensor_parallel"] * out["pipeline_parallel"] * out["data_parallel"]
    shape_only = rows["shape_only"].map(_truth).to_numpy() if "shape_only" in rows.columns else False
    out["shape_only"] = shape_only
    numbers = rows.reset_index(drop=True)

    def pick(measured: str, predicted: str) -> list[float]:
        return [float(r[predicted] if only else r[measured]) for only, (_, r) in zip(out["shape_only"],
                                                                                    numbers.iterrows())]

    for c in PEAK_CATEGORIES:
        out[f"peak_{c}"] = pick(f"peak_{c}_bytes", f"predicted_peak_{c}_bytes")
    out["peak"] = pick("peak_bytes", "predicted_peak_bytes")
    out["activation"] = pick("activation_bytes", "predicted_activation_bytes")
    out["gradient"] = pick("max_gradient_bytes", "predicted_max_gradient_bytes")
    out["parameter"] = out["peak_parameter"]  # registered: live from the step's start to its end
    out["optimizer_state"] = out["peak_optimizer_state"]
    out["communication"] = out["peak_communication"]
    out["config"] = [study.config_of(c) for c in out["cell"]]
    return out


def reference(cells: pd.DataFrame) -> pd.Series | None:
    """One device without recomputation (every strategy field at its default, the schedule free), the one holding
    the most (largest peak: with microbatches, the schedule that keeps them all)."""
    one = cells
    for field, default in STRATEGY_FIELDS.items():
        if default is not None:
            one = one[one[field] == default]
    return None if one.empty else one.loc[one["peak"].idxmax()]


def _varying(cells: pd.DataFrame) -> list[str]:
    return [f for f in STRATEGY_FIELDS if cells[f].nunique() > 1]


def strategy_label(row: pd.Series, fields: list[str]) -> str:
    """A cell's strategy in a few words: the fields that differ from one device's, each as the reports write it (the
    schedule wherever the grid varies it: on one stage with microbatches, 1f1b is gradient accumulation)."""
    parts = []
    if row["tensor_parallel"] > 1:
        parts.append(f"t {row['tensor_parallel']}" + (" + SP" if row["sequence_parallel"] else ""))
    if row["checkpoint"] != "none":
        parts.append(str(row["checkpoint"]))
    if row["pipeline_parallel"] > 1:
        parts.append(f"p {row['pipeline_parallel']} {row['schedule']}, m {row['microbatches']}")
    elif "schedule" in fields and row["microbatches"] > 1:
        parts.append(f"{row['schedule']}, m {row['microbatches']}"
                     + (" (gradient accumulation)" if row["schedule"] == "1f1b" else " (every microbatch held)"))
    if row["data_parallel"] > 1 or row["zero"]:
        parts.append(f"N {row['data_parallel']}" + (f" ZeRO {row['zero']}" if row["zero"] else ""))
    return ", ".join(parts) or "one device"


TOGETHER = (("data_parallel", "zero"),)  # fields a strategy sets together: ZeRO shards over N ranks, N > 1
SHAPE_FIELDS = ("model", "depth", "width", "heads", "seq_len", "batch_size", "microbatches")  # what a model is


def single_changes(cells: pd.DataFrame, ref: pd.Series) -> pd.DataFrame:
    """The cells that differ from the reference in one strategy field alone (in field order, then value order), then
    those that differ in both fields of a TOGETHER pair alone (ZeRO's stages on N > 1 ranks)."""
    fields = _varying(cells)
    found = []
    for changed in [(f,) for f in fields] + [pair for pair in TOGETHER if all(f in fields for f in pair)]:
        mask = pd.Series(True, index=cells.index)
        for f in fields:
            mask &= (cells[f] != ref[f]) if f in changed else (cells[f] == ref[f])
        found.append(cells[mask].sort_values(list(changed), key=lambda s: s.astype(str)))
    return pd.concat(found) if found else cells.iloc[:0]


def pair_ratios(cells: pd.DataFrame) -> pd.DataFrame:
    """Every pair of cells that differ in one strategy field alone, that field at its one-device value in the first:
    (field, value, pairs, and per category the median, least and largest ratio second ÷ first). Categories that are
    0 in a pair's first cell are left out of that pair."""
    fields = _varying(cells)
    partner = {f: g for pair in TOGETHER for f, g in (pair, pair[::-1]) if g in fields}
    out = []
    for field in fields:
        base_value = STRATEGY_FIELDS[field]
        if base_value is None:  # the schedule: against the one that holds every microbatch
            base_value = "gpipe"
        others = [f for f in fields if f != field] + [f for f in SHAPE_FIELDS if cells[f].nunique() > 1]
        first = cells[cells[field] == base_value]
        for value in sorted(cells[field].unique(), key=str):
            if value == base_value:
                continue
            second = cells[cells[field] == value]
            pairs = first.merge(second, on=others, suffixes=("_a", "_b")) if others else \
                first.assign(_k=1).merge(second.assign(_k=1), on="_k", suffixes=("_a", "_b"))
            # ZeRO on one rank changes nothing: N's and the stage's pairs apart for each value of the other
            groups = pairs.groupby(partner[field]) if field in partner and not pairs.empty else [(None, pairs)]
            for at, part in groups:
                out.append(_ratio_row(field, base_value, value, partner.get(field), at, part))
    return pd.DataFrame([r for r in out if r is not None])


def _ratio_row(field: str, base_value: Any, value: Any, partner: str | None, at: Any,
               pairs: pd.DataFrame) -> dict[str, Any] | None:
    """One change's pairs as a row of `pair_ratios` (None without pairs); `at`: the partner field's value they share."""
    if pairs.empty:
        return None
    row: dict[str, Any] = {"field": field, "from": base_value, "value": value, "pairs": len(pairs),
                           "at": None if partner is None else _value_text(partner, at)}
    for c in (*CATEGORIES, "peak"):
        a, b = pairs[f"{c}_a"].astype(float), pairs[f"{c}_b"].astype(float)
        ratio = (b[a > 0] / a[a > 0])
        row[c] = (ratio.median(), ratio.min(), ratio.max(), int(len(ratio))) if len(ratio) else None
        row[f"{c}_appears"] = int(((a == 0) & (b > 0)).sum())  # pairs where it was 0 before, not after
    return row


def _value_text(field: str, value: Any) -> str:
    names = {"tensor_parallel": "t", "pipeline_parallel": "p", "data_parallel": "N", "zero": "ZeRO",
             "sequence_parallel": "sequence parallel", "checkpoint": "checkpoint", "schedule": "schedule"}
    if field == "sequence_parallel":
        return "sequence parallel" if value else "no sequence parallelism"
    return f"{names[field]} {value}"


def _change_text(r: Any) -> str:
    """A pair_ratios row's change: `ZeRO 3 (at N 8)`."""
    return _value_text(r["field"], r["value"]) + (f" (at {r['at']})" if isinstance(r["at"], str) else "")


def source_sentence(cells: pd.DataFrame) -> str:
    """Where the figures come from, computed from the rows' shape_only column."""
    only = int(cells["shape_only"].sum())
    if only == len(cells):
        return (f"All {len(cells)} cells are predicted: each row is the accounted rank's graph (its shards, its "
                "collectives, its schedule) run on shape-only arrays under the ledger, nothing measured "
                "(`measure = false`). The bytes are exact for that graph; there are no timings and no probes.")
    if only == 0:
        return (f"All {len(cells)} cells are measured: each rank's graph ran in one process under the ledger (its "
                "peers simulated), and its figures are the ledger's.")
    return (f"{len(cells) - only} cells are measured (the ledger's figures) and {only} predicted (the rank's graph on "
            "shape-only arrays: bytes exact for that graph, no timings).")


def blocks(study: Any) -> list[Any]:
    from ..report import document as doc
    from ..report.document import Figure, Heading, Paragraph, plot

    cells = figures(study)
    lines: list[Any] = [Heading("Parallelism: one rank's memory, category by category"), Paragraph(
        source_sentence(cells) + " A row's figures are one rank's: the rank with the largest peak, or with pipeline "
        "stages the first stage (`accounted_rank`, `rank_choice`). Parameters and optimiser state are the registered "
        "bytes; the other categories their bytes at the rank's peak; activations (largest live) and gradients "
        "(largest live) are the ledger's maxima over the step.")]
    groups = model_groups(cells)
    drawn = []
    for title, part in groups:
        ref = reference(part)
        if len(groups) > 1:
            lines.append(Heading(title, 3))
        if ref is None:
            lines.append(Paragraph("No one-device cell without recomputation to compare the strategies with."))
            continue
        table, data = _category_table(part, ref, doc)
        drawn.append(data.assign(label=[f"{title}: {x}" for x in data["label"]]) if len(groups) > 1 else data)
        lines.append(table)
        lines += _ratio_part(part, doc, Paragraph)
    if drawn:
        data = pd.concat(drawn, ignore_index=True)
        present = [c for c in PEAK_CATEGORIES if (data[c] > 0).any()]
        kind = "predicted" if cells["shape_only"].all() else "ledger"
        lines.append(Figure("parallel_categories.png", "per-rank bytes at the peak by category",
                            plot(FIGURES_MODULE, "stacked", data[["label", *present]], present,
                                 title=f"One rank's bytes at the peak by category ({kind})")))
    lines += _korthikanti_part(cells, doc, Heading, Paragraph)
    lines += _zero_part(cells, doc, Heading, Paragraph)
    return lines


def model_groups(cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The cells split by the model fields that vary among them (a study of two families, or of two sizes): the
    strategies are compared within one model only."""
    varying = [f for f in SHAPE_FIELDS if cells[f].nunique() > 1]
    if not varying:
        return [("all cells", cells)]
    return [(", ".join(f"{f} {v}" for f, v in zip(varying, key if isinstance(key, tuple) else (key,))), part)
            for key, part in cells.groupby(varying if len(varying) > 1 else varying[0], sort=True)]


def _category_table(cells: pd.DataFrame, ref: pd.Series, doc: Any) -> tuple[Any, pd.DataFrame]:
    fields = _varying(cells)
    shown = pd.concat([ref.to_frame().T, single_changes(cells, ref),
                       cells.loc[[cells["peak"].idxmin()]]]).drop_duplicates("cell")
    labels = [strategy_label(r, fields) for _, r in shown.iterrows()]
    labels[0] = "reference: one device" + ("" if labels[0] == "one device" else f", {labels[0]}")
    if len(shown) > 1 and shown.iloc[-1]["cell"] == cells.loc[cells["peak"].idxmin(), "cell"]:
        labels[-1] = "lowest peak: " + labels[-1]
    present = [c for c in PEAK_CATEGORIES if (shown[f"peak_{c}"] > 0).any()]
    body = []
    for label, (_, r) in zip(labels, shown.iterrows()):
        body.append([label, *(doc.nbytes(r[f"peak_{c}"]) for c in present), doc.nbytes(r["peak"]),
                     doc.times(r["peak"] / ref["peak"])])
    kind = "predicted" if shown["shape_only"].all() else "ledger"
    caption = (f"Per-rank bytes at the peak by category ({kind}): the reference (one device, no recomputation; of "
               f"its schedules the one holding the most), each cell that differs from it in one field alone (or in N "
               f"and the ZeRO stage together), and the cell with the lowest peak of all {len(cells)}:")
    table = doc.table(["strategy", *(c.replace("_", " ") for c in present), "peak", "peak ÷ reference"], body,
                      caption=caption)
    data = pd.DataFrame({"label": labels, **{c: shown[f"peak_{c}"].to_numpy(float) for c in PEAK_CATEGORIES}})
    return table, data


def _ratio_part(cells: pd.DataFrame, doc: Any, Paragraph: Any) -> list[Any]:
    ratios = pair_ratios(cells)
    if ratios.empty:
        return [Paragraph("No two cells differ in one strategy field alone, so no strategy can be compared.")]
    body = []
    for _, r in ratios.iterrows():
        row = [f"{_value_text(r['field'], r['from'])} → {_change_text(r)}", int(r["pairs"])]
        for c in (*CATEGORIES, "peak"):
            got = r[c]
            row.append("—" if got is None else doc.compound("{} ({} – {})", doc.times(got[0]), doc.times(got[1]),
                                                            doc.times(got[2])))
        body.append(row)
    table = doc.table(["change", "pairs", *(c.replace("_", " ") for c in CATEGORIES), "peak"], body,
                      caption="Which strategy cuts which category: the ratio of each category after ÷ before, over "
                              "every pair of cells that differ in that field alone (median, least – largest):")
    sentences = []
    for c in CATEGORIES:
        cutting = [f"{_change_text(r)} ({r[c][0]:.2f}×)" for _, r in ratios.iterrows()
                   if r[c] is not None and r[c][0] <= CUT]
        raising = [f"{_change_text(r)} ({r[c][0]:.2f}×)" for _, r in ratios.iterrows()
                   if r[c] is not None and r[c][0] > 1 / CUT]
        text = f"**{c.replace('_', ' ')}**: " + (f"cut to at most half by {', '.join(cutting)}" if cutting
                                                 else "no change cuts it to half or less")
        if raising:
            text += f"; raised above double by {', '.join(raising)}"
        appearing = [f"{_change_text(r)} ({r[f'{c}_appears']} of {r['pairs']} pairs)"
                     for _, r in ratios.iterrows() if r[f"{c}_appears"]]
        if appearing:
            text += f"; 0 before and not after under {', '.join(appearing)}"
        sentences.append(text)
    unchanged = [_change_text(r) for _, r in ratios.iterrows()
                 if all((r[c] is None or r[c][1] == r[c][2] == 1.0) and not r[f"{c}_appears"] for c in CATEGORIES)]
    if unchanged:
        sentences.append(f"none of these {len(CATEGORIES)} categories changes, in any pair, under "
                         f"{', '.join(unchanged)}")
    return [table, Paragraph("Medians over the pairs: " + "; ".join(sentences) + ".")]


def _korthikanti_part(cells: pd.DataFrame, doc: Any, Heading: Any, Paragraph: Any) -> list[Any]:
    with_formula = cells.assign(paper=[formula_activations(c) if c is not None else None for c in cells["config"]])
    with_formula = with_formula[with_formula["paper"].notna()]
    lines: list[Any] = [Heading("Korthikanti et al.'s activations beside the ledger's", 3)]
    if with_formula.empty:
        return lines + [Paragraph(
            "No cell is one the paper's expression describes (a GPT block in a 2-byte dtype with dropout, checkpoint "
            "none or selective, no ZeRO), so there is nothing to compare.")]
    with_formula = with_formula.assign(beyond=with_formula["activation"] - with_formula["paper"].astype(float))
    with_formula["share"] = with_formula["beyond"] / with_formula["activation"]
    fields = _varying(cells)
    keys = ["tensor_parallel", "sequence_parallel", "checkpoint", "pipeline_parallel", "schedule",
            *(f for f in SHAPE_FIELDS if with_formula[f].nunique() > 1)]
    first = with_formula.sort_values(keys).iloc[0]  # one (p, schedule) in detail: the first in sort order
    detail = with_formula[(with_formula["pipeline_parallel"] == first["pipeline_parallel"])
                          & (with_formula["schedule"] == first["schedule"])].drop_duplicates(keys)
    body = [[strategy_label(r, fields), doc.nbytes(r["paper"]), doc.nbytes(r["activation"]), doc.nbytes(r["beyond"]),
             doc.percent(r["share"], signed=False)] for _, r in detail.iterrows()]
    lines.append(doc.table(
        ["strategy", "paper: the layers' activations", "ledger: activations (largest live)", "ledger − paper",
         "share of the ledger's"], body,
        caption=("Per layer Table 2's expression for (t, sequence parallel, selective) at the cell's s, micro-batch, "
                 "h and a, times the layers and microbatches the rank holds when its forward ends (GPipe: m; "
                 "1F1B: min(p, m)); `memstudy.findings.korthikanti`. The cells at "
                 f"{_value_text('pipeline_parallel', first['pipeline_parallel'])}, "
                 f"{_value_text('schedule', first['schedule'])}, one row per (t, SP, checkpoint), the data-parallel "
                 "copies alike:")))
    if with_formula[["pipeline_parallel", "schedule"]].drop_duplicates().shape[0] > 1:
        summary = []
        for (p, schedule), part in with_formula.groupby(["pipeline_parallel", "schedule"]):
            summary.append([_value_text("pipeline_parallel", p), schedule, len(part),
                            doc.compound("{} – {}", doc.nbytes(part["beyond"].min()),
                                         doc.nbytes(part["beyond"].max())),
                            doc.compound("{} – {}", doc.percent(part["share"].min(), signed=False),
                                         doc.percent(part["share"].max(), signed=False))])
        lines.append(doc.table(["stages", "schedule", "cells", "ledger − paper (least – largest)",
                                "share of the ledger's"], summary,
                               caption="Every (p, schedule) of the grid: what the ledger holds beyond the paper's "
                                       "layers (with p > 1 the first stage, which has no head or loss):"))
    held = int((with_formula["beyond"] >= 0).sum())
    spread = with_formula["share"]
    lines.append(Paragraph(
        f"In {held} of {len(with_formula)} cells the ledger's activations are at least the paper's "
        + ("(so: the layers' terms are part of what the rank holds)" if held == len(with_formula) else "(not so)")
        + f"; what it holds beyond them is {spread.min():.1%} to {spread.max():.1%} of its activations: what lies "
        "outside the layers (the embeddings' output and dropout mask, the final norm, the head's input, the logits "
        "and the loss's saved values) and the layer norms' float32 statistics. Table 2 itself is reproduced byte for "
        "byte in docs/parallel.md."))
    return lines


def _zero_part(cells: pd.DataFrame, doc: Any, Heading: Any, Paragraph: Any) -> list[Any]:
    lines: list[Any] = [Heading("ZeRO's Table 1 beside the ledger's model states", 3)]
    configs = [c for c in cells["config"] if c is not None]
    mixed = all(c.get("master_weights") and c.get("optimizer") == "adam" and c["dtype"] in ("bfloat16", "float16")
                for c in configs)
    if not mixed or cells["zero"].nunique() < 2:
        return lines + [Paragraph("The paper's Table 1 counts 16-bit parameters with mixed-precision Adam under ZeRO "
                                  "stages; these cells do not vary the stage in that setting, so nothing to compare.")]
    keys = [f for f in _varying(cells) if f != "zero"] + [f for f in SHAPE_FIELDS if cells[f].nunique() > 1]
    base = cells[cells["zero"] == 0][keys + ["parameter"]].rename(columns={"parameter": "replica_parameter"})
    joined = cells.merge(base, on=keys) if keys else \
        cells.assign(replica_parameter=float(base["replica_parameter"].iloc[0]))
    joined["psi"] = joined["replica_parameter"] / 2  # the 16-bit parameters the data-parallel ranks replicate
    joined["states"] = joined["parameter"] + joined["gradient"] + joined["optimizer_state"]
    joined["paper"] = [zero_states_bytes(p, n, z) for p, n, z in zip(joined["psi"], joined["data_parallel"],
                                                                      joined["zero"])]
    joined["error"] = joined["states"] / joined["paper"] - 1
    plain = joined
    for field, default in STRATEGY_FIELDS.items():
        if field not in ("zero", "data_parallel", "schedule") and default is not None:
            plain = plain[plain[field] == default]
    plain = plain.drop_duplicates(["data_parallel", "zero"]).sort_values(["data_parallel", "zero"])
    body = [[int(r["data_parallel"]), int(r["zero"]), doc.count(round(r["psi"])), doc.nbytes(r["paper"]),
             doc.nbytes(r["states"]), doc.percent(r["error"])] for _, r in plain.iterrows()]
    lines.append(doc.table(["N", "stage", "Ψ (the rank's replica)", "paper: Table 1", "ledger: parameters + "
                            "gradients + optimiser state", "ledger ÷ paper − 1"], body,
                           caption="One device's slice (t 1, p 1, no recomputation), each N and stage; Ψ is the "
                                   "parameters of the rank's replica (its zero-0 cell's 16-bit bytes ÷ 2):"))
    worst = joined.loc[joined["error"].abs().idxmax()]
    lines.append(Paragraph(
        f"Over all {len(joined)} cells (t and p shrink the replica each rank's data-parallel group shares, so Ψ is "
        f"the rank's), the ledger's model states are {joined['error'].min():+.2%} to {joined['error'].max():+.2%} "
        f"from Table 1's; the largest gap is at {strategy_label(worst, _varying(cells))} "
        f"({doc.nbytes(worst['states']).text} against {doc.nbytes(worst['paper']).text}). Stage 3 keeps parameters "
        "of fewer than param_persistence_threshold elements whole on every rank and pads each parameter to N equal "
        "parts, which puts it a little above the paper's 16Ψ/N."))
    return lines


__all__ = ["CATEGORIES", "FIGURES", "STRATEGIES", "STRATEGY_FIELDS", "StrategyRow", "applies", "blocks", "cuts",
           "figures", "formula_activations", "pair_ratios", "reference", "strategy_rows", "zero_states_bytes"]

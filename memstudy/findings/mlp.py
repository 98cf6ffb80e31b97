"""The MLP's laws: one width-sized buffer per layer per example, the inputs' share, and inference's slope.

The seed predicts one stored intermediate per hidden layer whose size grows with the batch and the layer's
width: activation bytes ≈ a·depth·batch (·width when width varies) + b·batch (+ d·batch·in_features) + c, with
a = width × itemsize (itemsize when width varies). The inputs grow with in_features (input bytes ≈
e·batch·in_features + f·batch); the activations held for backward do not. Inference frees each intermediate once
the next layer has used it, so its working memory should not grow with depth. Fitted per group of the fields
no law models (dtype, activation, optimiser, ...). Families that are MLPs list this finding (`mlp`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..report import charts
from ..report import document as doc
from ..report.context import Study
from ..report.document import Block, Bullets, Figure, Heading, Paragraph, plot
from ..report.fit import describe_fixed, itemsize, least_squares, slope, varying_fields
from ..report.formats import coef_text, ratio_text

NAME = "mlp"
FIGURES = ("activation_law.png",)
LAW_FIELDS = ("depth", "batch_size", "width", "in_features", "mode")


def applies(study: Study) -> bool:
    """Rows of a family that lists this finding (the section then says what the rows allow)."""
    return study.declares(NAME)


def law_groups(frame: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Split by the varying fields that no law models (dtype, activation, optimiser, ...)."""
    split = [f for f in varying_fields(frame) if f not in LAW_FIELDS]
    if not split:
        return [({}, frame)]
    return [(dict(zip(split, key if isinstance(key, tuple) else (key,))), part)
            for key, part in frame.groupby(split, sort=True)]


def training_law(train: pd.DataFrame) -> list[dict[str, Any]]:
    """activation ≈ a·depth·batch (·width when width varies) + b·batch (+ d·batch·in_features) + c, per group."""
    results = []
    for group, part in law_groups(train.dropna(subset=["activation_bytes"])):
        if part.empty:
            continue
        depth = part["depth"].astype(float).to_numpy()
        batch = part["batch_size"].astype(float).to_numpy()
        width = part["width"].astype(float).to_numpy()
        inputs = part["in_features"].astype(float).to_numpy()
        size = itemsize(part["dtype"].iloc[0])
        width_varies = part["width"].nunique() > 1
        depth_varies = part["depth"].nunique() > 1
        terms: dict[str, np.ndarray] = {}
        if width_varies:
            main, main_label = depth * batch * width, "depth·batch·width"
            expected, expected_label = float(size), f"itemsize = {size} B"
        else:
            main, main_label = depth * batch, "depth·batch"
            w = int(width[0])
            expected, expected_label = float(w * size), f"width × itemsize = {w} × {size} B"
        if depth_varies:
            terms["main"] = main
        terms["batch"] = batch
        if part["in_features"].nunique() > 1:
            terms["batch·in_features"] = batch * inputs
        terms["const"] = np.ones_like(batch)
        fit = least_squares(part["activation_bytes"].astype(float).to_numpy(), terms)
        a = fit["coef"].get("main", float("nan"))
        results.append({
            "group": group, "cells": int(len(part)), "main_label": main_label, "main": main if depth_varies else None,
            "a": a, "expected": expected, "expected_label": expected_label, "ratio": a / expected if expected else
            float("nan"), "b": fit["coef"].get("batch", float("nan")), "c": fit["coef"].get("const", float("nan")),
            "d": fit["coef"].get("batch·in_features"), "r2": fit["r2"], "dropped": fit["dropped"],
            "depth_varies": depth_varies, "width_varies": width_varies, "itemsize": size,
            "depths": sorted(part["depth"].unique().tolist()), "coef": fit["coef"],
        })
    return results


def input_law(cells: pd.DataFrame) -> dict[str, Any] | None:
    """input_bytes ≈ e·batch·in_features + f·batch (labels in training), when in_features varies."""
    data = cells.dropna(subset=["input_bytes"])
    if data.empty or data["in_features"].nunique() < 2:
        return None
    batch = data["batch_size"].astype(float).to_numpy()
    fit = least_squares(data["input_bytes"].astype(float).to_numpy(),
                        {"batch·in_features": batch * data["in_features"].astype(float).to_numpy(), "batch": batch})
    return {"e": fit["coef"].get("batch·in_features", float("nan")), "f": fit["coef"].get("batch", float("nan")),
            "r2": fit["r2"], "n": fit["n"], "itemsize": itemsize(data["dtype"].iloc[0])}


def depth_slopes(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """Per combination of the other fields: inference working-memory slope over depth vs training's activation slope."""
    ok = cells.dropna(subset=["peak_bytes"])
    if ok.empty or ok["depth"].nunique() < 2:
        return []
    others = [f for f in varying_fields(ok) if f not in ("depth", "mode")]
    keys = others or ["batch_size"]
    rows = []
    for key, part in ok.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        infer = part[part["mode"] == "inference"].sort_values("depth")
        train = part[part["mode"] == "train"].sort_values("depth")
        working = infer["peak_bytes"] - infer["parameter_bytes"] - infer["optimizer_state_bytes"].fillna(0) \
            - infer["input_bytes"]
        rows.append({
            "key": dict(zip(keys, key)),
            "depths": int(part["depth"].nunique()),
            "inference_slope": slope(infer["depth"].to_numpy(), working.to_numpy()) if len(infer) else float("nan"),
            "train_slope": slope(train["depth"].to_numpy(), train["activation_bytes"].to_numpy())
            if len(train) else float("nan"),
        })
    return rows


def group_label(group: dict[str, Any]) -> str:
    return describe_fixed(group) if group else "all"


def _law_x(part: pd.DataFrame, law: dict[str, Any]) -> pd.Series:
    """The law's main term per cell (depth·batch, or depth·batch·width), as the figure's x."""
    x = part["depth"].astype(float) * part["batch_size"].astype(float)
    return x * part["width"].astype(float) if law["width_varies"] else x


def law_chart(train_cells: pd.DataFrame, laws: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Training activation bytes against the fitted law's main term: measured points and fitted lines per group."""
    traces = []
    formula = x_label = None
    for i, law in enumerate(laws):
        part = train_cells.dropna(subset=["activation_bytes"])
        for k, v in law["group"].items():
            part = part[part[k] == v]
        if part.empty:
            continue
        part = part.copy()
        if law["depth_varies"]:
            x_label = law["main_label"]
            part["_x"] = _law_x(part, law)
        else:
            x_label = "batch"
            part["_x"] = part["batch_size"].astype(float)
        coef = law["coef"]
        d = coef.get("batch·in_features", 0.0)
        part["_fit"] = (coef.get("main", 0.0) * part["_x"] if law["depth_varies"] else 0.0) \
            + coef.get("batch", 0.0) * part["batch_size"].astype(float) \
            + d * part["batch_size"].astype(float) * part["in_features"].astype(float) + coef.get("const", 0.0)
        terms = [f"a·{law['main_label']}"] if law["depth_varies"] else []
        terms += ["b·batch"] + (["d·batch·in_features"] if "batch·in_features" in coef else []) + ["c"]
        formula = "activation bytes ≈ " + " + ".join(terms)
        group = ", ".join(f"{charts.field_label(k, part)} {v}" for k, v in law["group"].items()) or "all cells"
        values = (f"a = {coef_text(law['a'])}, b = {coef_text(law['b'])}, c = {coef_text(law['c'])}, "
                  f"R² = {ratio_text(law['r2'])}")
        color = charts.SERIES_COLORS[i % len(charts.SERIES_COLORS)]
        part = part.sort_values("_x")
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{group}: measured", "legendgroup": group,
            "x": part["_x"].tolist(), "y": [charts.plain(v) for v in part["activation_bytes"]],
            "customdata": part["cell"].tolist(), "marker": {"color": color, "size": 7},
            "text": [f"{group}: {charts.hover_config(r, ('depth', 'batch_size', 'width'), part)}<br>activation bytes "
                     f"{charts.exact_bytes(r['activation_bytes'])}<br>fit {charts.exact_bytes(r['_fit'])}"
                     for _, r in part.iterrows()],
            "hovertemplate": "%{text}<extra></extra>",
        })
        # the fit is a line in x for each batch (and input width): b·batch and d·batch·in_features shift it
        first = True
        for _, line in part.groupby(["batch_size", "in_features"], sort=True):
            line = line.sort_values("_x")
            traces.append({
                "type": "scatter", "mode": "lines", "name": f"{group}: fit, {values}", "legendgroup": group,
                "showlegend": first, "x": line["_x"].tolist(), "y": line["_fit"].tolist(),
                "line": {"color": color, "width": 1}, "hoverinfo": "skip",
            })
            first = False
    if not traces:
        return None
    title = f"The activation law: {formula} (least squares; R² per group in the legend)"
    ys = [y for t in traces for y in t["y"] if y is not None]
    entries = sum(1 for t in traces if t.get("showlegend", True))
    layout = charts.chart_layout(
        title, xaxis={**charts.count_axis([x for t in traces for x in t["x"]], x_label), "automargin": True},
        yaxis={**charts.bytes_axis(ys, True, "activation bytes held for backward (ledger)"), "automargin": True},
        legend={"font": {"size": 11}, "orientation": "h", "y": -0.2, "yanchor": "top"},
        height=480 + 20 * entries, margin={"l": 80, "r": 20, "t": 60, "b": 80 + 20 * entries})
    return {"id": "law-activation", "title": title, "data": traces, "layout": layout}


def laws(study: Study) -> list[Block]:
    cells = study.cells_declaring(NAME)
    train_cells = cells[cells["mode"] == "train"]
    blocks: list[Block] = [Heading("The laws")]
    found = training_law(train_cells) if not train_cells.empty else []
    if not found:
        blocks.append(Paragraph("No training cell finished: no activation law to fit."))
    else:
        width_law = any(law["width_varies"] for law in found)
        main = "depth·batch·width" if width_law else "depth·batch"
        extra = " + d·batch·in_features" if any(law["d"] is not None for law in found) else ""
        blocks.append(Paragraph(
            f"**Training.** Activation bytes held for backward ≈ a·{main} + b·batch{extra} + c, least squares "
            "(numpy.linalg.lstsq) over the per-cell medians. The seed predicts one stored intermediate per layer "
            "whose size grows with the batch and the layer's width, so a should be "
            + ("the itemsize (bytes per unit per layer per example)." if width_law else
               "width × itemsize (bytes per layer per example).")))
        header = ["group", "cells", "a", "expected a", "a ÷ expected", "b (per example)", "c", "R²"]
        if extra:
            header.insert(6, "d")
        body = []
        notes = []
        for law in found:
            row: list[Any] = [group_label(law["group"]), law["cells"], doc.coef(law["a"]), law["expected_label"],
                              doc.ratio(law["ratio"]), doc.coef(law["b"]), doc.coef(law["c"]), doc.ratio(law["r2"])]
            if extra:
                row.insert(6, doc.coef(law["d"]) if law["d"] is not None else "—")
            body.append(row)
            if not law["depth_varies"]:
                notes.append(f"{group_label(law['group'])}: only depth {law['depths'][0]} ran, so the per-layer "
                             "slope a cannot be told apart from the per-example term b; b holds both.")
            elif law["dropped"]:
                notes.append(f"{group_label(law['group'])}: terms {', '.join(law['dropped'])} add nothing the "
                             "others do not already explain (constant or collinear over this grid) and were left out.")
        blocks.append(doc.table(header, body))
        if extra:
            blocks.append(Paragraph(
                "d measures how the bytes held for backward grow with the number of input features: the first "
                "Linear does keep its input x for ∂J/∂W1, but x belongs to the caller (the `input` category), "
                "so d should be about 0; the inputs' share is in the input law below."))
        if notes:
            blocks.append(Bullets(tuple(notes)))
        good = [law for law in found if math.isfinite(law["a"])]
        # read (and plot) the unmodified engine's law when a study varies what buys memory back
        good.sort(key=lambda law: (law["group"].get("checkpoint", "none") != "none",
                                   law["group"].get("policy", "minimal") != "minimal"))
        if good:
            law = good[0]
            per = "per example per unit of width" if law["width_varies"] else "per example"
            blocks.append(Paragraph(
                f"Read: each extra layer holds a = {coef_text(law['a'])} {per} (expected {law['expected_label']}, "
                f"ratio {ratio_text(law['ratio'])}); R² = {ratio_text(law['r2'])}."))
            part = train_cells
            for k, v in law["group"].items():
                part = part[part[k] == v]
            part = part.assign(_x=_law_x(part, law))
            blocks.append(Figure(
                "activation_law.png", "activation bytes vs the law's main term",
                plot("memstudy.findings.mlp_figures", "activation_law", part, "_x", law["main_label"], law["a"], True,
                     law["coef"], title=f"Training activations vs {law['main_label']} ({group_label(law['group'])})"),
                law_chart(train_cells, [f for f in found if math.isfinite(f["r2"])])))
    vary = varying_fields(cells) if not cells.empty else []
    inputs = input_law(cells) if "in_features" in vary else None
    if inputs:
        blocks.append(Paragraph(
            f"**Inputs.** input bytes ≈ e·batch·in_features + f·batch: e = {coef_text(inputs['e'])} "
            f"(itemsize {inputs['itemsize']} B), f = {coef_text(inputs['f'])} (the integer labels in training), "
            f"R² = {ratio_text(inputs['r2'])}, {inputs['n']} cells. The input grows with the number of inputs; "
            "the activations held for backward do not."))
    slopes = depth_slopes(cells)
    if slopes:
        keys = list(slopes[0]["key"])
        body = [[*(s["key"][k] for k in keys), s["depths"], doc.coef(s["inference_slope"]), doc.coef(s["train_slope"]),
                 doc.ratio(s["inference_slope"] / s["train_slope"]) if s["train_slope"] else "—"] for s in slopes]
        header = [k.replace("_size", "") for k in keys] + ["depths", "inference slope / layer",
                                                           "training activation slope / layer", "ratio"]
        blocks += [Paragraph(
            "**Inference.** Working memory = peak − parameter − optimiser-state − input bytes. Its growth per "
            "layer is the slope over depth (least-squares line); training's activation bytes grow per layer by "
            "the slope next to it. Inference frees each intermediate once the next layer has used it, so its "
            "slope should be about 0."), doc.table(header, body)]
    elif not cells.empty:
        blocks.append(Paragraph("**Inference.** Only one depth ran, so there is no slope over depth."))
    return blocks


def blocks(study: Study) -> list[Block]:
    return laws(study)

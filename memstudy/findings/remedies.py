"""The remedies finding: what buys memory back (checkpointing, saved-tensor policies, optimisers; dtypes are
`findings/precision`).

Written for layered networks whose layer holds one batch × width activation (the MLP families list it,
`remedies`): "layers' worth" and PyTorch's figure are counted in that unit. Each part appears only when the study
varies its field. Every number is read from the per-cell medians (summary.csv); "expected" values are computed
from the configuration and named as such; every time is shown beside the load it was measured under.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..nn.models.registry import checkpoint_segments
from ..report import document as doc
from ..report.context import Study
from ..report.document import Block, Bullets, Figure, Heading, Paragraph, plot
from ..report.fit import describe_fixed, fix_others, itemsize, least_squares
from ..report.formats import LOADED_CORES, bytes_text, load_note, percent_text, ratio_text
from ..run.results.fields import GRID_FIELDS
from ..run.select import nearest_batch

NAME = "remedies"
FIGURES = ("checkpoint_tradeoff.png", "policy_bytes.png", "optimizer_peak.png")
FIGURES_MODULE = "memstudy.findings.remedies_figures"
TIME_BOUND = 1.6  # the issue's bound on sqrt checkpointing's step time, relative to no checkpointing
PARAMETER_SIDE = ("parameter", "gradient", "optimizer_state")
BATCH_SIDE = ("input", "activation", "temporary", "output")
FIELDS = ("checkpoint", "policy", "optimizer")  # one part each, when the study varies it (dtypes: findings/precision)


def applies(study: Study) -> bool:
    """A family that lists this finding, and a study that varies one of its fields."""
    cells = study.cells_declaring(NAME)
    return not cells.empty and any(cells[f].nunique() > 1 for f in FIELDS)


def blocks(study: Study) -> list[Block]:
    """The parts for the fields this study varies, under one heading."""
    cells = study.cells_declaring(NAME)
    train = cells[cells["mode"] == "train"]
    vary = [f for f in FIELDS if cells[f].nunique() > 1]
    parts: list[Block] = []
    if "checkpoint" in vary and not train.empty:
        parts += checkpoint_section(train)
    if "policy" in vary and not train.empty:
        parts += policy_section(train)
    if "optimizer" in vary and not train.empty:
        parts += optimizer_section(train)
    if not parts:
        return []
    return [Heading("What buys the memory back")] + parts


def _others(field: str) -> list[str]:
    return [f for f in GRID_FIELDS if f != field]


def _against(frame: pd.DataFrame, field: str, reference: Any, columns: list[str]) -> pd.DataFrame:
    """`frame` with `<column>_ref` columns: the same cell with `field` = `reference` (every other field equal)."""
    keys = _others(field)
    ref = frame[frame[field] == reference][keys + columns].rename(columns={c: f"{c}_ref" for c in columns})
    return frame.merge(ref, on=keys, how="left")


def _unit(row: pd.Series) -> int:
    """One batch × width buffer of the row's dtype: one hidden layer's activation."""
    return int(row["batch_size"]) * int(row["width"]) * itemsize(row["dtype"])


def _median(series: pd.Series) -> float:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


# --- checkpointing ------------------------------------------------------------------------------------

def segments_of(strategy: str, depth: int) -> tuple[int, int] | None:
    """(segment length, number of segments), or None without checkpointing (the model's own segments)."""
    segments = checkpoint_segments(str(strategy), depth)
    if segments is None:
        return None
    return segments[0][1] - segments[0][0], len(segments)


def _strategy_order(strategies: list[str]) -> list[str]:
    def key(s: str) -> tuple:
        if s == "none":
            return (0, 0)
        if s == "sqrt":
            return (1, 0)
        return (2, int(s.split(":")[1]))
    return sorted(strategies, key=key)


def checkpoint_cells(train: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """(training cells by depth × strategy × batch, each beside the same cell without checkpointing (`*_ref`), with
    `layers` = layers' worth of activations, `time_ratio` and `peak_ratio` against none; the fixed fields; the
    strategies in order)."""
    data, fixed = fix_others(train, keep=("depth", "checkpoint", "batch_size"))
    data = _against(data, "checkpoint", "none", ["step_seconds", "activation_bytes", "peak_bytes", "foreign_cores"])
    data = data.assign(unit=[_unit(r) for _, r in data.iterrows()])
    data["layers"] = data["activation_bytes"].astype(float) / data["unit"]
    data["time_ratio"] = data["step_seconds"] / data["step_seconds_ref"]
    data["peak_ratio"] = data["peak_bytes"].astype(float) / data["peak_bytes_ref"].astype(float)
    return data, fixed, _strategy_order(data["checkpoint"].unique().tolist())


def sqrt_finding(data: pd.DataFrame) -> dict[str, Any] | None:
    """`sqrt` at the deepest depth (batch nearest 256), against its bound of 2·√depth + 1 layers' worth plus the
    loss's probabilities, and the total peak against none at that depth for every batch; None without sqrt."""
    sqrt = data[data["checkpoint"] == "sqrt"].dropna(subset=["time_ratio"])
    if sqrt.empty:
        return None
    depth = int(sqrt["depth"].max())
    deepest = sqrt[sqrt["depth"] == depth]
    batch = nearest_batch(deepest["batch_size"].unique().tolist())
    r = deepest[deepest["batch_size"] == batch].iloc[0]
    root = math.isqrt(depth)
    exact_root = root * root == depth
    layers_bound = 2 * (root if exact_root else math.isqrt(depth - 1) + 1) + 1
    loss_bytes = int(r["batch_size"]) * int(r["out_features"]) * itemsize(r["dtype"])
    bound = layers_bound * int(r["unit"]) + loss_bytes
    peaks = [(b, deepest[deepest["batch_size"] == b].iloc[0]) for b in sorted(deepest["batch_size"].unique().tolist())]
    return {"depth": depth, "batch": batch, "row": r, "layers_bound": layers_bound, "loss_bytes": loss_bytes,
            "bound_bytes": bound, "within_bound": int(r["activation_bytes"]) <= bound,
            "within_time": float(r["time_ratio"]) <= TIME_BOUND,
            "peaks": [{"batch": b, "none_bytes": row["peak_bytes_ref"], "sqrt_bytes": row["peak_bytes"],
                       "ratio": float(row["peak_ratio"])} for b, row in peaks]}


def _recompute_finding(data: pd.DataFrame) -> str:
    """What the checkpointed cells recomputed, and which strategy held least at the deepest depth: from the rows."""
    strategies_rows = data[data["checkpoint"] != "none"].dropna(subset=["recomputed_ops"])
    if strategies_rows.empty:
        return "No checkpointed cell recorded its recomputed ops."
    once = strategies_rows["recomputed_ops"].astype(int) == 2 * strategies_rows["depth"].astype(int)
    if once.all():
        text = (f"In every checkpointed cell ({len(strategies_rows)}), ops recomputed = 2 × depth: each strategy "
                "recomputed each hidden layer (a Linear and an activation) exactly once, one extra forward pass "
                "whatever its segment length, so the segment length decides the memory only.")
    else:
        text = (f"Not every strategy recomputed each hidden layer exactly once: ops recomputed ≠ 2 × depth in "
                f"{int((~once).sum())} of {len(strategies_rows)} checkpointed cells.")
    depth = int(strategies_rows["depth"].max())
    deepest = strategies_rows[strategies_rows["depth"] == depth].dropna(subset=["activation_bytes"])
    if not deepest.empty:
        best = deepest.groupby("checkpoint")["activation_bytes"].median().astype(float)
        winner = str(best.idxmin())
        segment = segments_of(winner, depth)
        text += (f" At depth {depth} the strategy holding least is `{winner}`"
                 + (f" (segments of {segment[0]} layers; ⌈√{depth}⌉ = {math.isqrt(depth - 1) + 1})" if segment else "")
                 + ".")
    return text + (" The activation law fitted above is linear in depth for `none` only: the other strategies "
                   "grow like m + K, so their fitted slope a is not a per-layer cost.")


def _load_of(*cores: Any) -> Any:
    """The larger of the loads two timings (a ratio's) were measured under; NaN when neither is known."""
    known = [float(c) for c in cores if pd.notna(c)]
    return max(known) if known else float("nan")


def checkpoint_section(train: pd.DataFrame) -> list[Block]:
    data, fixed, strategies = checkpoint_cells(train)
    at = f" ({describe_fixed(fixed)})" if fixed else ""
    blocks: list[Block] = [Heading("Gradient checkpointing", 3), Paragraph(
        "The hidden layers are split into segments; each segment runs forward under no_grad and keeps only its "
        "input, and backward recomputes the segment (recording its graph, phase `recompute`) when it reaches "
        "it (Chen et al. 2016). `sqrt` uses segments of ⌈√depth⌉ layers, `every:K` of K layers. With m "
        "segments of K layers the forward pass ends holding m segment inputs, and the recompute of the last "
        "segment holds the other m − 1 plus its own K layers: about 2√depth layers for `sqrt`, instead of "
        "depth. Layers' worth = activation bytes ÷ (batch × width × itemsize), the loss's batch × classes "
        "probabilities included" + (f"; {at.strip(' ()')}" if at else "") + ". Load = the cores other processes "
        f"kept busy while the step and its `none` reference were timed (the larger), (loaded) above "
        f"{LOADED_CORES:g}.")]
    body = []
    for _, r in data.sort_values(["batch_size", "depth"]).iterrows():
        if r["checkpoint"] not in strategies:
            continue
        seg = segments_of(r["checkpoint"], int(r["depth"]))
        body.append([int(r["depth"]), int(r["batch_size"]), r["checkpoint"],
                     "—" if seg is None else f"{seg[1]} × {seg[0]}", doc.nbytes(r["activation_bytes"]),
                     doc.fixed(r["layers"], 2), doc.nbytes(r["peak_bytes"]), doc.ratio(r["peak_ratio"]),
                     doc.ms(r["step_seconds"]), doc.ratio(r["time_ratio"]),
                     doc.load(_load_of(r["foreign_cores"], r["foreign_cores_ref"])),
                     "0" if pd.isna(r["recomputed_ops"]) else f"{int(r['recomputed_ops'])}"])
    body.sort(key=lambda row: (row[1], row[0], strategies.index(row[2])))
    blocks.append(doc.table(["depth", "batch", "strategy", "segments × layers", "activation bytes", "layers' worth",
                             "total peak", "peak ÷ none", "step time", "time ÷ none", "load (cores)",
                             "ops recomputed"], body))

    found = sqrt_finding(data)
    if found is not None:
        depth, batch, r = found["depth"], found["batch"], found["row"]
        layers_bound, loss_bytes, bound = found["layers_bound"], found["loss_bytes"], found["bound_bytes"]
        ok_bytes, ok_time = found["within_bound"], found["within_time"]
        blocks.append(Paragraph(
            f"**sqrt at depth {depth}, width {int(r['width'])}, batch {batch}, {r['dtype']}:** activation bytes "
            f"{bytes_text(r['activation_bytes'])} = {int(r['activation_bytes']):,} B = {r['layers']:.2f} layers' "
            f"worth, against the bound 2·√{depth} + 1 = {layers_bound} layers' worth plus the loss's "
            f"probabilities ({layers_bound} × {int(r['unit']):,} + {loss_bytes:,} = {bound:,} B): "
            f"{'within' if ok_bytes else 'OVER'} it; no checkpointing holds "
            f"{bytes_text(r['activation_bytes_ref'])} ({float(r['activation_bytes_ref']) / r['unit']:.2f} layers' "
            f"worth). Its step takes {1000 * r['step_seconds']:.1f} ms against "
            f"{1000 * r['step_seconds_ref']:.1f} ms without checkpointing"
            f"{load_note(r['foreign_cores'], r['foreign_cores_ref'])}: {float(r['time_ratio']):.2f}× "
            f"({'within' if ok_time else 'OVER'} the {TIME_BOUND}× bound); the extra time is one more "
            f"forward pass ({int(r['recomputed_ops'])} recomputed ops)."))
        peaks = [f"batch {p['batch']}: {bytes_text(p['none_bytes'])} → {bytes_text(p['sqrt_bytes'])} "
                 f"({percent_text(p['ratio'] - 1)})" for p in found["peaks"]]
        blocks.append(Paragraph(
            f"The total peak moves less than the activations: at depth {depth}, none → sqrt, "
            + "; ".join(peaks) + ". While backward frees a layer's activation it creates that layer's weight "
            "gradient (width × width): when batch ≈ width the two trade places and the peak is set by "
            "parameters plus gradients; only when the batch is larger than the width do the activations, "
            "and so checkpointing, set the peak."))
    blocks.append(Paragraph(_recompute_finding(data)))
    blocks.append(Figure("checkpoint_tradeoff.png", "activation bytes vs depth and vs step time per strategy",
                         plot(FIGURES_MODULE, "checkpoint_tradeoff", data, strategies,
                              title="Gradient checkpointing: memory held for backward against depth and step time"
                              + at)))
    return blocks


# --- saved-tensor policies ----------------------------------------------------------------------------

POLICY_TEXT = {
    "minimal": "what backward needs, each buffer once (the engine's default)",
    "all": "every intermediate variable, as the textbook's forward pass stores them (z, h, o, L)",
    "half": "what backward needs, stored as float16 and cast back in backward",
}


def policy_figures(train: pd.DataFrame) -> dict[str, Any]:
    """Per policy: bytes per layer per example (`a`, the slope of activation bytes ≈ a·depth·batch + b·batch + c)
    and its R², buffers held per layer, the gradient error against minimal (median and max over cells) and the
    step time ÷ minimal's (median over cells); with PyTorch's figure, width × itemsize (`pytorch_bytes`)."""
    data, fixed = fix_others(train, keep=("depth", "batch_size", "policy"))
    policies = [p for p in ("minimal", "all", "half") if p in set(data["policy"])]
    width, item = int(data["width"].iloc[0]), itemsize(data["dtype"].iloc[0])
    pytorch = width * item
    rows: dict[str, dict[str, Any]] = {}
    for policy in policies:
        part = data[data["policy"] == policy]
        depth = part["depth"].astype(float).to_numpy()
        batch = part["batch_size"].astype(float).to_numpy()
        fit = least_squares(part["activation_bytes"].astype(float).to_numpy(),
                            {"main": depth * batch, "batch": batch, "const": np.ones_like(batch)})
        saved = least_squares(part["saved_tensors"].astype(float).to_numpy(), {"depth": depth,
                                                                               "const": np.ones_like(depth)})
        rows[policy] = {"a": fit["coef"].get("main", float("nan")), "r2": fit["r2"],
                        "saved_per_layer": saved["coef"].get("depth", float("nan")),
                        "error": _median(part["grad_rel_error"]),
                        "error_max": float(pd.to_numeric(part["grad_rel_error"], errors="coerce").max())}
    timed = _against(data, "policy", "minimal", ["step_seconds", "peak_bytes", "foreign_cores"])
    for policy in policies:
        part = timed[timed["policy"] == policy]
        rows[policy]["time_ratio"] = _median(part["step_seconds"] / part["step_seconds_ref"])
        rows[policy]["load"] = _load_of(*part["foreign_cores"], *part["foreign_cores_ref"])
    return {"data": data, "fixed": fixed, "policies": policies, "width": width, "itemsize": item,
            "pytorch_bytes": pytorch, "rows": rows}


def policy_section(train: pd.DataFrame) -> list[Block]:
    found = policy_figures(train)
    data, fixed, policies, rows = found["data"], found["fixed"], found["policies"], found["rows"]
    width, item, pytorch = found["width"], found["itemsize"], found["pytorch_bytes"]
    minimal_a = rows.get("minimal", {}).get("a", float("nan"))
    at = f" ({describe_fixed(fixed)})" if fixed else ""
    blocks: list[Block] = [Heading("Saved-tensor policies", 3), Paragraph(
        "What the graph holds for backward, decided at the engine's one save door: "
        + "; ".join(f"`{p}` = {POLICY_TEXT[p]}" for p in policies) + ". Bytes per layer per example = the "
        "slope a of activation bytes ≈ a·depth·batch + b·batch + c (least squares over the cells); PyTorch's "
        f"figure is one width-sized buffer per Linear+activation layer: width × itemsize = {width} × {item} "
        f"= {pytorch} B{at}. Load = the most cores other processes kept busy while a policy's steps and "
        "minimal's were timed.")]
    body = []
    for policy in policies:
        r = rows[policy]
        if policy == "minimal":
            error = "(the reference)"
        elif np.isfinite(r["error"]):  # measured by the cell: this policy's gradients against minimal's
            error = f"{r['error']:.2e} (max {r['error_max']:.2e})"
        else:
            error = "not measured"
        body.append([doc.code(policy), doc.compound("{} B", doc.num(r["a"], "grouped", 1)),
                     doc.ratio(r["a"] / pytorch), doc.ratio(r["a"] / minimal_a), doc.fixed(r["saved_per_layer"], 2),
                     error, doc.ratio(r["time_ratio"]), doc.load(r["load"]), doc.ratio(r["r2"])])
    blocks.append(doc.table(["policy", "bytes / layer / example", "÷ PyTorch's figure", "÷ minimal",
                             "buffers held / layer", "gradient error vs minimal", "step time ÷ minimal",
                             "load (cores)", "R²"], body))
    notes = []
    if "all" in rows:
        notes.append(f"`all` holds {ratio_text(rows['all']['a'] / minimal_a)}× minimal's bytes per layer: with "
                     f"{data['activation'].iloc[0]} the activation keeps its output h, and `all` also keeps the "
                     "pre-activation z that minimal lets die (and the logits and the loss value once).")
    if "half" in rows:
        notes.append(f"`half` holds {ratio_text(rows['half']['a'] / minimal_a)}× minimal's bytes: each saved buffer "
                     f"becomes float16 (2 B instead of {item} B); the price is approximate gradients, a relative "
                     f"error (‖g_half − g_minimal‖ ÷ ‖g_minimal‖ over all parameters) of {rows['half']['error']:.2e} "
                     f"(median over cells; largest {rows['half']['error_max']:.2e}), and the casts' time.")
    if notes:
        blocks.append(Bullets(tuple(notes)))
    blocks.append(Figure("policy_bytes.png", "bytes per layer per example by policy",
                         plot(FIGURES_MODULE, "policy_bytes", data, policies, {k: v["a"] for k, v in rows.items()},
                              pytorch, title=f"Bytes held for backward per layer per example, by saved-tensor "
                              f"policy{at}")))
    return blocks


# --- optimisers ---------------------------------------------------------------------------------------

def optimizer_cells(train: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """(training cells with `parameter_share` of the peak, `state_ratio` = state ÷ parameter bytes and SGD's peak
    beside each (`peak_bytes_ref`); the fixed fields; the optimisers in order)."""
    data, fixed = fix_others(train, keep=("optimizer", "width", "batch_size", "in_features"))
    data = data.copy()
    peak = data["peak_bytes"].astype(float)
    data["parameter_share"] = sum(data[f"peak_{c}_bytes"].astype(float) for c in PARAMETER_SIDE) / peak
    data["state_ratio"] = data["optimizer_state_bytes"].astype(float) / data["parameter_bytes"].astype(float)
    data = _against(data, "optimizer", "sgd", ["peak_bytes"]) if "sgd" in set(data["optimizer"]) else data
    optimizers = [o for o in ("sgd", "momentum", "adam") if o in set(data["optimizer"])]
    return data, fixed, optimizers


def optimizer_figures(data: pd.DataFrame, optimizers: list[str]) -> dict[str, dict[str, float]]:
    """Per optimiser, over its cells: state ÷ parameter bytes (min, max), the median peak ÷ SGD's peak, and the
    parameter side's share of the peak (min, max)."""
    found = {}
    for o in optimizers:
        part = data[data["optimizer"] == o]
        found[o] = {"cells": len(part), "state_min": float(part["state_ratio"].min()),
                    "state_max": float(part["state_ratio"].max()),
                    "peak_ratio": _median(part["peak_bytes"].astype(float) / part["peak_bytes_ref"].astype(float))
                    if "peak_bytes_ref" in part else float("nan"),
                    "share_min": float(part["parameter_share"].min()),
                    "share_max": float(part["parameter_share"].max())}
    return found


def parameter_share(data: pd.DataFrame, optimizer: str, width: Any, batch: Any) -> float | None:
    """The parameter side's share of the peak in one cell; None when the grid has no such cell."""
    hit = data[(data["optimizer"] == optimizer) & (data["width"] == width) & (data["batch_size"] == batch)]
    return float(hit["parameter_share"].iloc[0]) if len(hit) else None


def optimizer_section(train: pd.DataFrame) -> list[Block]:
    data, fixed, optimizers = optimizer_cells(train)
    found = optimizer_figures(data, optimizers)
    expected = {"sgd": 0, "momentum": 1, "adam": 2}
    at = f" ({describe_fixed(fixed)})" if fixed else ""
    blocks: list[Block] = [Heading("Optimiser state", 3), Paragraph(
        "SGD keeps nothing between steps, Momentum one velocity per parameter, Adam two moments per "
        f"parameter: state = 0×, 1×, 2× the parameter bytes{at}.")]
    body = []
    for o in optimizers:
        f = found[o]
        body.append([o, doc.compound("{} – {}", doc.fixed(f["state_min"], 3), doc.fixed(f["state_max"], 3)),
                     f"{expected[o]}×", f["cells"], doc.ratio(f["peak_ratio"]),
                     doc.compound("{} – {}", doc.percent(f["share_min"], False), doc.percent(f["share_max"], False))])
    blocks.append(doc.table(["optimiser", "state ÷ parameter bytes (measured, all cells)", "expected", "cells",
                             "peak ÷ SGD's peak (median)", "parameter side of the peak"], body))
    blocks.append(Paragraph(
        "The parameter side of the peak = parameters + gradients + optimiser state live at the step's peak, "
        "as a share of the total peak; the rest is the batch side (input, activations, temporaries). "
        "Parameters grow with width², activations with batch × width:"))
    widths = sorted(data["width"].unique().tolist())
    batches = sorted(data["batch_size"].unique().tolist())
    for o in optimizers:
        part = data[data["optimizer"] == o]
        grid = []
        for w in widths:
            row: list[Any] = [w]
            for b in batches:
                hit = part[(part["width"] == w) & (part["batch_size"] == b)]
                row.append(doc.compound("{} of {}", doc.percent(float(hit["parameter_share"].iloc[0]), False),
                                        doc.nbytes(hit["peak_bytes"].iloc[0])) if len(hit) else "—")
            grid.append(row)
        blocks.append(doc.table(["width \\ batch"] + [str(b) for b in batches], grid,
                                caption=f"`{o}`: parameter side of the peak, rows width, columns batch:"))
    if len(widths) > 1 and len(batches) > 1:
        def share(o: str, w: Any, b: Any) -> str:
            value = parameter_share(data, o, w, b)
            return "—" if value is None else percent_text(value, False)
        o = optimizers[-1]
        w0, w1, b0, b1 = widths[0], widths[-1], batches[0], batches[-1]
        blocks.append(Paragraph(
            f"Where the peak moves ({o}): at batch {b1}, widening the layers from {w0} to {w1} moves the "
            f"parameter side from {share(o, w0, b1)} to {share(o, w1, b1)} of the peak (parameters grow as "
            f"width², activations as width); at width {w1}, growing the batch from {b0} to {b1} moves it from "
            f"{share(o, w1, b0)} back to {share(o, w1, b1)} (activations grow with the batch, parameters do "
            f"not). Small batches on wide layers are parameter-dominated (the corner width {w1}, batch {b0}: "
            f"{share(o, w1, b0)}), large batches on narrow layers activation-dominated (width {w0}, batch {b1}: "
            f"{share(o, w0, b1)}). The optimiser's state only adds to the parameter side, so Adam's 2× costs "
            "most where the width is large and the batch small, and least where checkpointing would help."))
    blocks.append(Figure("optimizer_peak.png", "parameter side's share of the peak vs width and batch",
                         plot(FIGURES_MODULE, "optimizer_peak", data, optimizers,
                              title="Share of the peak on the parameter side (parameters + gradients + optimiser "
                              f"state){at}")))
    return blocks

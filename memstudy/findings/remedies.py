"""The report's sections on what buys memory back: checkpointing, saved-tensor policies, optimisers, dtypes.

Each section appears only when the study varies its field (the default study varies none of them, so its
report is unchanged). Every number is read from the per-cell medians (summary.csv); "expected" values are
computed from the configuration and named as such.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .fields import GRID_FIELDS
from ..nn.models.registry import checkpoint_segments
from .reportkit import (_bytes, _describe_fixed, _figure, _itemsize, _md_table, _pct, _ratio, fix_others,
                        least_squares)
from .select import nearest_batch


FIGURES = ("checkpoint_tradeoff.png", "policy_bytes.png", "optimizer_peak.png", "dtype_ratio.png")
TIME_BOUND = 1.6  # the issue's bound on sqrt checkpointing's step time, relative to no checkpointing
PARAMETER_SIDE = ("parameter", "gradient", "optimizer_state")
BATCH_SIDE = ("input", "activation", "temporary", "output")


def sections(ok_cells: pd.DataFrame, vary: list[str], out: Path, figures: dict[str, Path], plots: Any) -> list[str]:
    """The sections for the fields this study varies, under one heading."""
    train = ok_cells[ok_cells["mode"] == "train"]
    parts: list[str] = []
    if "checkpoint" in vary and not train.empty:
        parts += checkpoint_section(train, out, figures, plots)
    if "policy" in vary and not train.empty:
        parts += policy_section(train, out, figures, plots)
    if "optimizer" in vary and not train.empty:
        parts += optimizer_section(train, out, figures, plots)
    if "dtype" in vary:
        parts += dtype_section(ok_cells, out, figures, plots)
    if not parts:
        return []
    return ["## What buys the memory back", ""] + parts


def _others(field: str) -> list[str]:
    return [f for f in GRID_FIELDS if f != field]


def _against(frame: pd.DataFrame, field: str, reference: Any, columns: list[str]) -> pd.DataFrame:
    """`frame` with `<column>_ref` columns: the same cell with `field` = `reference` (every other field equal)."""
    keys = _others(field)
    ref = frame[frame[field] == reference][keys + columns].rename(columns={c: f"{c}_ref" for c in columns})
    return frame.merge(ref, on=keys, how="left")


def _unit(row: pd.Series) -> int:
    """One batch × width buffer of the row's dtype: one hidden layer's activation."""
    return int(row["batch_size"]) * int(row["width"]) * _itemsize(row["dtype"])


def _median(series: pd.Series) -> float:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


# --- checkpointing ------------------------------------------------------------------------------------

def _segments(strategy: str, depth: int) -> tuple[int, int] | None:
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
    data = _against(data, "checkpoint", "none", ["step_seconds", "activation_bytes", "peak_bytes"])
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
    loss_bytes = int(r["batch_size"]) * int(r["out_features"]) * _itemsize(r["dtype"])
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
        segment = _segments(winner, depth)
        text += (f" At depth {depth} the strategy holding least is `{winner}`"
                 + (f" (segments of {segment[0]} layers; ⌈√{depth}⌉ = {math.isqrt(depth - 1) + 1})" if segment else "")
                 + ".")
    return text + (" The activation law fitted above is linear in depth for `none` only: the other strategies "
                   "grow like m + K, so their fitted slope a is not a per-layer cost.")


def checkpoint_section(train: pd.DataFrame, out: Path, figures: dict[str, Path], plots: Any) -> list[str]:
    data, fixed, strategies = checkpoint_cells(train)
    at = f" ({_describe_fixed(fixed)})" if fixed else ""
    lines = ["### Gradient checkpointing", "",
             "The hidden layers are split into segments; each segment runs forward under no_grad and keeps only its "
             "input, and backward recomputes the segment (recording its graph, phase `recompute`) when it reaches "
             "it (Chen et al. 2016). `sqrt` uses segments of ⌈√depth⌉ layers, `every:K` of K layers. With m "
             "segments of K layers the forward pass ends holding m segment inputs, and the recompute of the last "
             "segment holds the other m − 1 plus its own K layers: about 2√depth layers for `sqrt`, instead of "
             "depth. Layers' worth = activation bytes ÷ (batch × width × itemsize), the loss's batch × classes "
             "probabilities included" + (f"; {at.strip(' ()')}" if at else "") + ".", ""]
    body = []
    for _, r in data.sort_values(["batch_size", "depth"]).iterrows():
        if r["checkpoint"] not in strategies:
            continue
        seg = _segments(r["checkpoint"], int(r["depth"]))
        body.append([int(r["depth"]), int(r["batch_size"]), r["checkpoint"],
                     "—" if seg is None else f"{seg[1]} × {seg[0]}", _bytes(r["activation_bytes"]),
                     f"{r['layers']:.2f}", _bytes(r["peak_bytes"]), _ratio(r["peak_ratio"]),
                     f"{1000 * r['step_seconds']:.1f} ms", _ratio(r["time_ratio"]),
                     "0" if pd.isna(r["recomputed_ops"]) else f"{int(r['recomputed_ops'])}"])
    body.sort(key=lambda row: (row[1], row[0], strategies.index(row[2])))
    lines += [_md_table(["depth", "batch", "strategy", "segments × layers", "activation bytes", "layers' worth",
                         "total peak", "peak ÷ none", "step time", "time ÷ none", "ops recomputed"], body), ""]

    found = sqrt_finding(data)
    if found is not None:
        depth, batch, r = found["depth"], found["batch"], found["row"]
        layers_bound, loss_bytes, bound = found["layers_bound"], found["loss_bytes"], found["bound_bytes"]
        ok_bytes, ok_time = found["within_bound"], found["within_time"]
        lines += [f"**sqrt at depth {depth}, width {int(r['width'])}, batch {batch}, {r['dtype']}:** activation bytes "
                  f"{_bytes(r['activation_bytes'])} = {int(r['activation_bytes']):,} B = {r['layers']:.2f} layers' "
                  f"worth, against the bound 2·√{depth} + 1 = {layers_bound} layers' worth plus the loss's "
                  f"probabilities ({layers_bound} × {int(r['unit']):,} + {loss_bytes:,} = {bound:,} B): "
                  f"{'within' if ok_bytes else 'OVER'} it; no checkpointing holds "
                  f"{_bytes(r['activation_bytes_ref'])} ({float(r['activation_bytes_ref']) / r['unit']:.2f} layers' "
                  f"worth). Its step takes {1000 * r['step_seconds']:.1f} ms against "
                  f"{1000 * r['step_seconds_ref']:.1f} ms without checkpointing: {float(r['time_ratio']):.2f}× "
                  f"({'within' if ok_time else 'OVER'} the {TIME_BOUND}× bound); the extra time is one more "
                  f"forward pass ({int(r['recomputed_ops'])} recomputed ops).", ""]
        peaks = [f"batch {p['batch']}: {_bytes(p['none_bytes'])} → {_bytes(p['sqrt_bytes'])} "
                 f"({_pct(p['ratio'] - 1)})" for p in found["peaks"]]
        lines += [f"The total peak moves less than the activations: at depth {depth}, none → sqrt, "
                  + "; ".join(peaks) + ". While backward frees a layer's activation it creates that layer's weight "
                  "gradient (width × width): when batch ≈ width the two trade places and the peak is set by "
                  "parameters plus gradients; only when the batch is larger than the width do the activations, "
                  "and so checkpointing, set the peak.", ""]
    lines += [_recompute_finding(data), ""]
    p = plots.checkpoint_tradeoff(data, strategies, out / "checkpoint_tradeoff.png",
                                  "Gradient checkpointing: memory held for backward against depth and step time"
                                  + at)
    if p:
        figures["checkpoint_tradeoff"] = p
        lines += _figure(figures, "checkpoint_tradeoff", "activation bytes vs depth and vs step time per strategy")
    return lines


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
    width, itemsize = int(data["width"].iloc[0]), _itemsize(data["dtype"].iloc[0])
    pytorch = width * itemsize
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
    timed = _against(data, "policy", "minimal", ["step_seconds", "peak_bytes"])
    for policy in policies:
        part = timed[timed["policy"] == policy]
        rows[policy]["time_ratio"] = _median(part["step_seconds"] / part["step_seconds_ref"])
    return {"data": data, "fixed": fixed, "policies": policies, "width": width, "itemsize": itemsize,
            "pytorch_bytes": pytorch, "rows": rows}


def policy_section(train: pd.DataFrame, out: Path, figures: dict[str, Path], plots: Any) -> list[str]:
    found = policy_figures(train)
    data, fixed, policies, rows = found["data"], found["fixed"], found["policies"], found["rows"]
    width, itemsize, pytorch = found["width"], found["itemsize"], found["pytorch_bytes"]
    minimal_a = rows.get("minimal", {}).get("a", float("nan"))
    at = f" ({_describe_fixed(fixed)})" if fixed else ""
    lines = ["### Saved-tensor policies", "",
             "What the graph holds for backward, decided at the engine's one save door: "
             + "; ".join(f"`{p}` = {POLICY_TEXT[p]}" for p in policies) + ". Bytes per layer per example = the "
             "slope a of activation bytes ≈ a·depth·batch + b·batch + c (least squares over the cells); PyTorch's "
             f"figure is one width-sized buffer per Linear+activation layer: width × itemsize = {width} × {itemsize} "
             f"= {pytorch} B{at}.", ""]
    body = []
    for policy in policies:
        r = rows[policy]
        time_ratio = r["time_ratio"]
        if policy == "minimal":
            error = "(the reference)"
        elif np.isfinite(r["error"]):  # measured by the cell: this policy's gradients against minimal's
            error = f"{r['error']:.2e} (max {r['error_max']:.2e})"
        else:
            error = "not measured"
        body.append([f"`{policy}`", f"{r['a']:,.1f} B", _ratio(r["a"] / pytorch), _ratio(r["a"] / minimal_a),
                     f"{r['saved_per_layer']:.2f}", error, _ratio(time_ratio), _ratio(r["r2"])])
    lines += [_md_table(["policy", "bytes / layer / example", "÷ PyTorch's figure", "÷ minimal",
                         "buffers held / layer", "gradient error vs minimal", "step time ÷ minimal", "R²"], body), ""]
    notes = []
    if "all" in rows:
        notes.append(f"`all` holds {_ratio(rows['all']['a'] / minimal_a)}× minimal's bytes per layer: with "
                     f"{data['activation'].iloc[0]} the activation keeps its output h, and `all` also keeps the "
                     "pre-activation z that minimal lets die (and the logits and the loss value once).")
    if "half" in rows:
        notes.append(f"`half` holds {_ratio(rows['half']['a'] / minimal_a)}× minimal's bytes: each saved buffer "
                     f"becomes float16 (2 B instead of {itemsize} B); the price is approximate gradients, a relative "
                     f"error (‖g_half − g_minimal‖ ÷ ‖g_minimal‖ over all parameters) of {rows['half']['error']:.2e} "
                     f"(median over cells; largest {rows['half']['error_max']:.2e}), and the casts' time.")
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    p = plots.policy_bytes(data, policies, {k: v["a"] for k, v in rows.items()}, pytorch, out / "policy_bytes.png",
                           f"Bytes held for backward per layer per example, by saved-tensor policy{at}")
    if p:
        figures["policy_bytes"] = p
        lines += _figure(figures, "policy_bytes", "bytes per layer per example by policy")
    return lines


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


def optimizer_section(train: pd.DataFrame, out: Path, figures: dict[str, Path], plots: Any) -> list[str]:
    data, fixed, optimizers = optimizer_cells(train)
    found = optimizer_figures(data, optimizers)
    expected = {"sgd": 0, "momentum": 1, "adam": 2}
    at = f" ({_describe_fixed(fixed)})" if fixed else ""
    lines = ["### Optimiser state", "",
             "SGD keeps nothing between steps, Momentum one velocity per parameter, Adam two moments per "
             f"parameter: state = 0×, 1×, 2× the parameter bytes{at}.", ""]
    body = []
    for o in optimizers:
        f = found[o]
        body.append([o, f"{f['state_min']:.3f} – {f['state_max']:.3f}", f"{expected[o]}×", f["cells"],
                     _ratio(f["peak_ratio"]), f"{_pct(f['share_min'], False)} – {_pct(f['share_max'], False)}"])
    lines += [_md_table(["optimiser", "state ÷ parameter bytes (measured, all cells)", "expected", "cells",
                         "peak ÷ SGD's peak (median)", "parameter side of the peak"], body), ""]
    lines += ["The parameter side of the peak = parameters + gradients + optimiser state live at the step's peak, "
              "as a share of the total peak; the rest is the batch side (input, activations, temporaries). "
              "Parameters grow with width², activations with batch × width:", ""]
    widths = sorted(data["width"].unique().tolist())
    batches = sorted(data["batch_size"].unique().tolist())
    for o in optimizers:
        part = data[data["optimizer"] == o]
        grid = []
        for w in widths:
            row = [w]
            for b in batches:
                hit = part[(part["width"] == w) & (part["batch_size"] == b)]
                row.append(f"{_pct(float(hit['parameter_share'].iloc[0]), False)} of {_bytes(hit['peak_bytes'].iloc[0])}"
                           if len(hit) else "—")
            grid.append(row)
        lines += [f"`{o}`: parameter side of the peak, rows width, columns batch:", "",
                  _md_table(["width \\ batch"] + [str(b) for b in batches], grid), ""]
    if len(widths) > 1 and len(batches) > 1:
        def share(o: str, w: Any, b: Any) -> str:
            value = parameter_share(data, o, w, b)
            return "—" if value is None else _pct(value, False)
        o = optimizers[-1]
        w0, w1, b0, b1 = widths[0], widths[-1], batches[0], batches[-1]
        lines += [f"Where the peak moves ({o}): at batch {b1}, widening the layers from {w0} to {w1} moves the "
                  f"parameter side from {share(o, w0, b1)} to {share(o, w1, b1)} of the peak (parameters grow as "
                  f"width², activations as width); at width {w1}, growing the batch from {b0} to {b1} moves it from "
                  f"{share(o, w1, b0)} back to {share(o, w1, b1)} (activations grow with the batch, parameters do "
                  f"not). Small batches on wide layers are parameter-dominated (the corner width {w1}, batch {b0}: "
                  f"{share(o, w1, b0)}), large batches on narrow layers activation-dominated (width {w0}, batch {b1}: "
                  f"{share(o, w0, b1)}). The optimiser's state only adds to the parameter side, so Adam's 2× costs "
                  "most where the width is large and the batch small, and least where checkpointing would help.", ""]
    p = plots.optimizer_peak(data, optimizers, out / "optimizer_peak.png",
                             f"Share of the peak on the parameter side (parameters + gradients + optimiser state){at}")
    if p:
        figures["optimizer_peak"] = p
        lines += _figure(figures, "optimizer_peak", "parameter side's share of the peak vs width and batch")
    return lines


# --- dtypes -------------------------------------------------------------------------------------------

DTYPE_CATEGORIES = (  # the ledger's categories, then the step's totals and the other measurements
    ("parameters", "parameter_bytes"), ("optimiser state", "optimizer_state_bytes"), ("input", "input_bytes"),
    ("gradients (at the peak)", "peak_gradient_bytes"), ("activations held for backward", "activation_bytes"),
    ("temporaries (at the peak)", "peak_temporary_bytes"), ("output (at the peak)", "peak_output_bytes"),
)
DTYPE_QUANTITIES = DTYPE_CATEGORIES + (
    ("step peak (ledger)", "step_peak_bytes"), ("total peak (ledger)", "peak_bytes"),
    ("step peak (tracemalloc)", "tracemalloc_step_peak_bytes"), ("step time", "step_seconds"),
)


class DtypeRatio(NamedTuple):
    """float32 ÷ float64 of one quantity over the pairs where float64's value is above 0."""
    median: float
    low: float
    high: float
    pairs: int


def dtype_pairs(cells: pd.DataFrame) -> pd.DataFrame | None:
    """Each float32 cell beside the float64 cell with every other field equal (`*_ref`); None without both."""
    if not {"float32", "float64"} <= set(cells["dtype"]):
        return None
    pairs = _against(cells, "dtype", "float64", [c for _, c in DTYPE_QUANTITIES])
    return pairs[pairs["dtype"] == "float32"].dropna(subset=["peak_bytes_ref"])


def dtype_ratios(pairs: pd.DataFrame) -> dict[str, DtypeRatio]:
    """float32 ÷ float64 per quantity of DTYPE_QUANTITIES (by its label), over the pairs."""
    ratios = {}
    for label, column in DTYPE_QUANTITIES:
        num = pd.to_numeric(pairs[column], errors="coerce").astype(float)
        den = pd.to_numeric(pairs[f"{column}_ref"], errors="coerce").astype(float)
        keep = den > 0
        if not keep.any():
            continue
        r = (num[keep] / den[keep]).to_numpy()
        ratios[label] = DtypeRatio(float(np.median(r)), float(r.min()), float(r.max()), int(keep.sum()))
    return ratios


def exact_halves(ratios: dict[str, DtypeRatio]) -> tuple[list[str], list[str]]:
    """(memory quantities at exactly 0.5 in every pair, those that are not; the input, with its int64 labels, and
    the step time are in neither)."""
    exact = [label for label, r in ratios.items() if r.low == r.high == 0.5 and label != "step time"]
    inexact = [label for label in ratios if label not in exact and label not in ("step time", "input")]
    return exact, inexact


def labels_ratio(batch: int, in_features: int) -> float:
    """float32 ÷ float64 of a training input: x halves, the int64 labels do not."""
    return (batch * in_features * 4 + batch * 8) / (batch * in_features * 8 + batch * 8)


def dtype_section(cells: pd.DataFrame, out: Path, figures: dict[str, Path], plots: Any) -> list[str]:
    pairs = dtype_pairs(cells)
    if pairs is None:
        return []
    lines = ["### float32 against float64", "",
             f"Each float32 cell against the float64 cell with every other field equal ({len(pairs)} pairs, "
             "training and inference): ratio = float32 ÷ float64.", ""]
    ratios = dtype_ratios(pairs)
    body = [[label, r.pairs, f"{r.median:.4f}", f"{r.low:.4f} – {r.high:.4f}"] for label, r in ratios.items()]
    lines += [_md_table(["quantity", "pairs", "median ratio", "range"], body), ""]
    train = pairs[pairs["mode"] == "train"]
    labels = ""
    if not train.empty:
        r = train.iloc[0]
        b, i = int(r["batch_size"]), int(r["in_features"])
        labels = (f" The input is the exception by construction: x halves but the int64 labels do not (batch {b}, "
                  f"{i} features: ({b}·{i}·4 + {b}·8) ÷ ({b}·{i}·8 + {b}·8) = "
                  f"{labels_ratio(b, i):.4f}); inference has no labels.")
    exact, inexact = exact_halves(ratios)
    if not inexact:
        finding = ("Every category of the step but the input halves exactly (ratio 0.5000 in every pair): each "
                   "buffer is the same number of elements at half the itemsize, allocated and freed in the same "
                   "order, so the peak falls at the same event.")
    else:
        finding = (f"Not every category halves: {', '.join(inexact)} "
                   f"{'does' if len(inexact) == 1 else 'do'} not have the ratio 0.5000 in every pair (see the "
                   "range column)" + (f"; {', '.join(exact)} halve exactly." if exact else "."))
    lines += [finding + labels + " The step time is a measurement of its own, not a memory figure: float32 matrix products are "
              "faster, but the engine's per-op overhead does not depend on the dtype.", ""]
    p = plots.dtype_ratio(ratios, out / "dtype_ratio.png", "float32 ÷ float64, per category (median, range)")
    if p:
        figures["dtype_ratio"] = p
        lines += _figure(figures, "dtype_ratio", "float32 / float64 ratio per category")
    return lines

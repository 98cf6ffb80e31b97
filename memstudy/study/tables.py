"""Human-readable tables for `memstudy run` and `memstudy predict` (plain text, no pandas)."""
from __future__ import annotations

import statistics
from typing import Any

from ..memory.agreement import prediction_matches, row_warning
from ..units import format_bytes

BREAKDOWN = (
    ("parameters", "peak_parameter_bytes"),
    ("optimizer state", "peak_optimizer_state_bytes"),
    ("input", "peak_input_bytes"),
    ("gradients", "peak_gradient_bytes"),
    ("activations (held for backward)", "peak_activation_bytes"),
    ("temporaries", "peak_temporary_bytes"),
    ("output", "peak_output_bytes"),
    ("peak, total", "peak_bytes"),
)
PROBES = (
    ("ledger", "step_peak_bytes"),
    ("predicted", "predicted_step_peak_bytes"),
    ("tracemalloc", "tracemalloc_step_peak_bytes"),
    ("RSS", "rss_step_peak_bytes"),
    ("memory_profiler (sampled)", "mprof_step_peak_bytes"),
)


def _median(rows: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = []
    for row in [header] + body:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def describe(config: dict[str, Any]) -> str:
    from ..nn.models.registry import get_family

    return get_family(config.get("model")).describe(config)


def run_tables(results: dict[str, list[dict[str, Any]]],
               by_layer: bool = False) -> list[tuple[str, list[str], list[list[str]]]]:
    """The run's tables as (title, header, rows): the breakdown at the peak, the probes, and per layer."""
    modes = list(results)
    body = [[label] + [format_bytes(_median(results[m], field)) for m in modes] for label, field in BREAKDOWN]
    body.append(["activations held for backward, max"]
                + [format_bytes(_median(results[m], "activation_bytes")) for m in modes])
    body.append(["  distinct buffers held"] + [f"{_median(results[m], 'saved_tensors'):.0f}" for m in modes])
    if any(_median(results[m], "recomputed_ops") for m in modes):
        body.append(["ops recomputed (checkpointing)"] + [f"{_median(results[m], 'recomputed_ops') or 0:.0f}"
                                                          for m in modes])
    if any(_median(results[m], "grad_rel_error") is not None for m in modes):
        body.append(["gradient error vs minimal policy"] + [
            "—" if _median(results[m], "grad_rel_error") is None else f"{_median(results[m], 'grad_rel_error'):.2e}"
            for m in modes])
    tables = [("breakdown at the peak (ledger)", ["breakdown at the peak (ledger)"] + modes, body)]
    body = [[label] + [format_bytes(_median(results[m], field)) for m in modes] for label, field in PROBES]
    body.append(["prediction = ledger"] + [_agreement(results[m]) for m in modes])
    body.append(["RSS method"] + [str(results[m][0].get("rss_method")) for m in modes])
    body.append(["cell process VmHWM (absolute)"] + [format_bytes(_median(results[m], "hwm_bytes")) for m in modes])
    body.append(["step time, median"] + [f"{1000 * _median(results[m], 'step_seconds'):.2f} ms" for m in modes])
    tables.append(("step peak over baseline, by probe", ["step peak over baseline, by probe"] + modes, body))
    if by_layer:
        for mode in modes:
            layers = results[mode][0].get("by_layer") or []
            body = [[str(r["layer"]), format_bytes(r["activation_bytes"]), format_bytes(r["parameter_bytes"]),
                     format_bytes(r["gradient_bytes"])] for r in layers]
            tables.append((f"by layer ({mode}, repeat 0)", ["layer", "held for backward", "parameters", "gradients"],
                           body))
    return tables


def _agreement(rows: list[dict[str, Any]]) -> str:
    """The probes table's cell: does the prediction equal the ledger (step peak, total peak, activations)?"""
    if any(r.get("prediction_unavailable") for r in rows):
        return "unavailable"
    verdicts = {prediction_matches(r) for r in rows}
    return "differs" if False in verdicts else "yes" if verdicts == {True} else "—"


def agreement_lines(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per mode whose prediction differs from its ledger or is unavailable (what and why)."""
    lines = []
    for mode, rows in results.items():
        line = next((w for w in (row_warning(r, mode) for r in rows) if w), None)
        if line:
            lines.append(line)
    return lines


def run_title(results: dict[str, list[dict[str, Any]]]) -> str:
    modes = list(results)
    repeats = len(results[modes[0]])
    return describe(results[modes[0]][0]) + (f" (medians of {repeats} repeats)" if repeats > 1 else "")


def ratio_line(results: dict[str, list[dict[str, Any]]]) -> str | None:
    """The train / inference peak ratio, when both modes ran."""
    if "train" not in results or "inference" not in results:
        return None
    train, infer = _median(results["train"], "peak_bytes"), _median(results["inference"], "peak_bytes")
    return f"train / inference peak: {train / infer:.2f}x ({format_bytes(train)} vs {format_bytes(infer)})"


def run_report(results: dict[str, list[dict[str, Any]]], by_layer: bool = False) -> str:
    """Breakdown at the peak, the probes side by side, and train/inference ratio when both ran."""
    out = [f"memstudy run: {run_title(results)}"]
    tables = run_tables(results, by_layer)
    for title, header, body in tables[:2]:
        out += ["", _table(header, body)]
    ratio = ratio_line(results)
    if ratio:
        out += ["", ratio]
    agreement = agreement_lines(results)
    if agreement:
        out += [""] + agreement
    for title, header, body in tables[2:]:  # per layer: a title line above the table
        out += ["", title, _table(header, body)]
    return "\n".join(out)


def predict_report(config: dict[str, Any], prediction: dict[str, Any]) -> str:
    split = prediction["predicted_peak_by_category"]
    body = [[category.replace("_", " "), format_bytes(split[category])] for category in split]
    body.append(["peak, total", format_bytes(prediction["predicted_peak_bytes"])])
    facts = [
        ["parameters", format_bytes(prediction["parameter_bytes"])],
        ["gradients", format_bytes(prediction["gradient_bytes"])],
        ["optimizer state", format_bytes(prediction["optimizer_state_bytes"])],
        ["input", format_bytes(prediction["input_bytes"])],
        ["activations held for backward", format_bytes(prediction["predicted_activation_bytes"])],
        ["  distinct buffers held", str(prediction["predicted_saved_tensors"])],
        ["ops recomputed (checkpointing)", str(prediction["predicted_recomputed_ops"])],
        ["step peak over baseline", format_bytes(prediction["predicted_step_peak_bytes"])],
        ["total peak", format_bytes(prediction["predicted_peak_bytes"])],
    ]
    return "\n".join([
        f"memstudy predict ({config['mode']}): {describe(config)}", "",
        _table(["predicted", "bytes"], facts), "",
        _table(["predicted breakdown at the peak", "bytes"], body),
    ])

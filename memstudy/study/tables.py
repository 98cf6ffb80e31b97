"""Human-readable tables for `memstudy run` and `memstudy predict` (plain text, no pandas)."""
from __future__ import annotations

import statistics
from typing import Any

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


def run_report(results: dict[str, list[dict[str, Any]]], by_layer: bool = False) -> str:
    """Breakdown at the peak, the probes side by side, and train/inference ratio when both ran."""
    modes = list(results)
    first = results[modes[0]][0]
    repeats = len(results[modes[0]])
    out = [f"memstudy run: {describe(first)}"
           + (f" (medians of {repeats} repeats)" if repeats > 1 else "")]
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
    out += ["", _table(["breakdown at the peak (ledger)"] + modes, body)]
    body = [[label] + [format_bytes(_median(results[m], field)) for m in modes] for label, field in PROBES]
    body.append(["RSS method"] + [str(results[m][0].get("rss_method")) for m in modes])
    body.append(["cell process VmHWM (absolute)"] + [format_bytes(_median(results[m], "hwm_bytes")) for m in modes])
    body.append(["step time, median"] + [f"{1000 * _median(results[m], 'step_seconds'):.2f} ms" for m in modes])
    out += ["", _table(["step peak over baseline, by probe"] + modes, body)]
    if "train" in results and "inference" in results:
        train, infer = _median(results["train"], "peak_bytes"), _median(results["inference"], "peak_bytes")
        out += ["", f"train / inference peak: {train / infer:.2f}x "
                    f"({format_bytes(train)} vs {format_bytes(infer)})"]
    if by_layer:
        for mode in modes:
            layers = results[mode][0].get("by_layer") or []
            body = [[str(r["layer"]), format_bytes(r["activation_bytes"]), format_bytes(r["parameter_bytes"]),
                     format_bytes(r["gradient_bytes"])] for r in layers]
            out += ["", f"by layer ({mode}, repeat 0)",
                    _table(["layer", "held for backward", "parameters", "gradients"], body)]
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

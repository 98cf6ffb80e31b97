"""The terminal renderer, and the documents of `memstudy run` and `memstudy predict` (plain text, no pandas).

`run_document` builds one run's tables as document blocks (typed cells); `render` writes them as aligned text
for the terminal, and the HTML renderer draws the very same blocks for `run --html`.
"""
from __future__ import annotations

import statistics
from typing import Any

from ..measure.agreement import prediction_matches, row_warning
from . import document as doc
from .document import Bullets, Document, Heading, Paragraph, Table
from .formats import LOADED_CORES, bytes_text

OPTIONAL_ROWS = ("peak_kv_cache_bytes", "peak_communication_bytes")  # breakdown rows shown only when some mode has such bytes (generation's)
BREAKDOWN = (
    ("parameters", "peak_parameter_bytes"),
    ("optimizer state", "peak_optimizer_state_bytes"),
    ("input", "peak_input_bytes"),
    ("KV cache", "peak_kv_cache_bytes"),
    ("communication buffers", "peak_communication_bytes"),
    ("gradients", "peak_gradient_bytes"),
    ("activations (held for backward)", "peak_activation_bytes"),
    ("temporaries", "peak_temporary_bytes"),
    ("output", "peak_output_bytes"),
    ("peak, total", "peak_bytes"),
)
# mode generate (memory/generation.py): (label, measured column, predicted column or None)
GENERATION = (
    ("prefill peak, total", "prefill_peak_bytes", "predicted_prefill_peak_bytes"),
    ("decode-step peak, total (largest)", "decode_peak_bytes", "predicted_decode_peak_bytes"),
    ("KV cache after the prefill", "kv_cache_prefill_bytes", None),
    ("KV cache growth per decode step", "kv_cache_step_bytes", None),
    ("KV cache after the last step", "kv_cache_bytes", "predicted_kv_cache_bytes"),
)
PROBES = (
    ("ledger", "step_peak_bytes"),
    ("predicted", "predicted_step_peak_bytes"),
    ("tracemalloc", "tracemalloc_step_peak_bytes"),
    ("RSS", "rss_step_peak_bytes"),
    ("memory_profiler (sampled)", "mprof_step_peak_bytes"),
)
NO_LAYER = "no layer"  # the ledger's layer "loss": the loss, and any op outside a layer_scope


def _median(rows: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def text_table(header: list[str], body: list[list[str]]) -> str:
    """Columns aligned: the first to the left, the others (numbers) to the right."""
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = []
    for row in [header] + body:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render(document: Document) -> str:
    """A document as terminal text: the title, then each table aligned, each paragraph as it is (a table's caption
    on the line above it)."""
    out = [document.title]
    for block in document.blocks:
        if isinstance(block, Table):
            table = text_table(list(block.header), block.text_rows)
            out += ["", f"{block.caption}\n{table}" if block.caption else table]
        elif isinstance(block, Paragraph):
            out += ["", block.text]
        elif isinstance(block, Bullets):
            out += [""] + [f"- {item}" for item in block.items]
        elif isinstance(block, Heading):
            out += ["", block.text]
    return "\n".join(out)


def describe(config: dict[str, Any]) -> str:
    from ..nn.models.registry import get_family

    return get_family(config.get("model")).describe(config)


def layer_names(config: dict[str, Any]) -> dict[Any, str]:
    """The family's name for each layer index of `config` (an empty map when the family cannot be loaded)."""
    from ..nn.models.registry import ConfigError, get_family

    try:
        family = get_family(config.get("model"))
        return dict(enumerate(family.layer_names(family.normalize(
            {k: v for k, v in config.items() if k in {f.name for f in family.all_fields()}}))))
    except (ConfigError, KeyError, TypeError, ValueError):
        return {}


def by_layer_table(mode: str, rows: list[dict[str, Any]], names: dict[Any, str]) -> list[Any]:
    """One mode's per-layer table (the ledger's `by_layer`), each layer named as its family names it, and a note
    where a layer's gradients outweigh its parameters (a parameter whose gradient was made more than once)."""
    body = []
    repeated = []
    for r in rows:
        layer = r["layer"]
        label = NO_LAYER if layer == "loss" else (f"{layer}: {names[layer]}" if layer in names else str(layer))
        body.append([label, doc.nbytes(r["activation_bytes"]), doc.nbytes(r["parameter_bytes"]),
                     doc.nbytes(r["gradient_bytes"])])
        if r["gradient_bytes"] > r["parameter_bytes"]:
            repeated.append(f"{label}: gradients {bytes_text(r['gradient_bytes'])} in "
                            f"{r.get('gradient_buffers', '?')} buffers against parameters "
                            f"{bytes_text(r['parameter_bytes'])}")
    blocks: list[Any] = [doc.table(["layer", "held for backward", "parameters", "gradients"], body,
                                   caption=f"by layer ({mode}, repeat 0)")]
    if repeated:
        blocks.append(Paragraph(
            "Gradient bytes count every buffer that became a parameter's .grad during the step: a parameter used by "
            "two ops (a tied weight, as GPT-2's wte is also lm_head) gets its first use's gradient, then the sum, so "
            "its layer's gradients outweigh its parameters (" + "; ".join(repeated) + ")."))
    return blocks


LAYER_NOTE = (f"{NO_LAYER}: buffers of ops outside every layer_scope (in the built-in families, the loss). A "
              "parameter sits in the layer its model's parameter_layers() gives it, else in the layer of the first "
              "op that takes it (in training; inference records no graph).")


def run_document(results: dict[str, list[dict[str, Any]]], by_layer: bool = False) -> Document:
    """The run's tables: the breakdown at the peak, the probes, the train ÷ inference ratio, and per layer."""
    modes = list(results)
    body: list[list[Any]] = [[label] + [doc.nbytes(_median(results[m], field)) for m in modes]
                             for label, field in BREAKDOWN
                             if field not in OPTIONAL_ROWS or any(_median(results[m], field) for m in modes)]
    body.append(["activations held for backward, max"]
                + [doc.nbytes(_median(results[m], "activation_bytes")) for m in modes])
    body.append(["  distinct buffers held"] + [doc.fixed(_median(results[m], "saved_tensors"), 0) for m in modes])
    if any(_median(results[m], "recomputed_ops") for m in modes):
        body.append(["ops recomputed (checkpointing)"] + [doc.fixed(_median(results[m], "recomputed_ops") or 0, 0)
                                                          for m in modes])
    if any(_median(results[m], "grad_rel_error") is not None for m in modes):
        body.append(["gradient error vs minimal policy"] + [doc.sci(_median(results[m], "grad_rel_error"))
                                                            for m in modes])
    for label, field in (("autocast's 16-bit weight copies", "weight_copy_bytes"),
                         ("16-bit emulation's fp32 scratch, at peak", "peak_emulation_bytes")):
        if any(_median(results[m], field) for m in modes):  # 16-bit steps only (docs/precision.md)
            body.append([label] + [doc.nbytes(_median(results[m], field) or 0) for m in modes])
    if any(_median(results[m], "grad_error_vs_float64") is not None for m in modes):
        body.append(["gradient error vs float64"] + [doc.sci(_median(results[m], "grad_error_vs_float64"))
                                                     for m in modes])
    document = Document(f"memstudy run: {run_title(results)}")
    document.blocks.append(doc.table(["breakdown at the peak (ledger)"] + modes, body))
    if "generate" in results:
        rows = results["generate"]
        document.blocks.append(doc.table(["generation (generate)", "ledger", "predicted"], [
            [label, doc.nbytes(_median(rows, measured)), doc.nbytes(_median(rows, predicted)) if predicted else ""]
            for label, measured, predicted in GENERATION]))
    body = [[label] + [doc.nbytes(_median(results[m], field)) for m in modes] for label, field in PROBES]
    body.append(["prediction = ledger"] + [_agreement(results[m]) for m in modes])
    body.append(["RSS method"] + [str(results[m][0].get("rss_method")) for m in modes])
    body.append(["cell process VmHWM (absolute)"] + [doc.nbytes(_median(results[m], "hwm_bytes")) for m in modes])
    body.append(["step time, median"] + [_step_time(results[m]) for m in modes])
    # the load the time was measured under (other processes' busy cores), "(loaded)" above formats.LOADED_CORES
    body.append(["  other cores busy meanwhile"] + [doc.load(_median(results[m], "foreign_cores")) for m in modes])
    if any(r.get("blas_threads") is not None for m in modes for r in results[m]):
        # the BLAS threads each cell had: the free cores when it started, unless the user set a count
        body.append(["  BLAS threads (cores free at start)"] + [_threads(results[m]) for m in modes])
    document.blocks.append(doc.table(["step peak over baseline, by probe"] + modes, body))
    for line in (ratio_line(results), load_note(results)):
        if line:
            document.blocks.append(Paragraph(line))
    for line in agreement_lines(results):
        document.blocks.append(Paragraph(line))
    if by_layer:
        for mode in modes:
            document.add(by_layer_table(mode, results[mode][0].get("by_layer") or [],
                                        layer_names(results[mode][0])))
        document.blocks.append(Paragraph(LAYER_NOTE))
    return document


def _step_time(rows: list[dict[str, Any]]) -> Any:
    """The median step time, "(loaded)" when other processes kept more than LOADED_CORES busy meanwhile."""
    seconds, load = _median(rows, "step_seconds"), _median(rows, "foreign_cores")
    if load is not None and load > LOADED_CORES:
        return doc.compound("{} (loaded)", doc.ms(seconds, 2))
    return doc.ms(seconds, 2)


def _threads(rows: list[dict[str, Any]]) -> str:
    rows = [r for r in rows if r.get("blas_threads") is not None]
    if not rows:
        return "—"
    free = _median(rows, "free_cores")
    return f"{_median(rows, 'blas_threads'):.0f}" + ("" if free is None else f" ({free:.2f} free)")


def load_note(results: dict[str, list[dict[str, Any]]]) -> str | None:
    """A line saying which step times were taken while other processes kept the machine busy, if any."""
    loaded = {m: load for m, rows in results.items()
              if (load := _median(rows, "foreign_cores")) is not None and load > LOADED_CORES}
    if not loaded:
        return None
    which = " and ".join(f"the {m} step time ({load:.2f} cores)" for m, load in loaded.items())
    return (f"note: other processes kept the machine busy while {which} was timed (above {LOADED_CORES:g} cores): "
            "slower than on a quiet machine; the byte counts are not affected")


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
    return f"train / inference peak: {train / infer:.2f}x ({bytes_text(train)} vs {bytes_text(infer)})"


def run_report(results: dict[str, list[dict[str, Any]]], by_layer: bool = False) -> str:
    """Breakdown at the peak, the probes side by side, and train/inference ratio when both ran."""
    return render(run_document(results, by_layer))


def predict_report(config: dict[str, Any], prediction: dict[str, Any]) -> str:
    split = prediction["predicted_peak_by_category"]
    body = [[category.replace("_", " "), doc.nbytes(split[category])] for category in split]
    body.append(["peak, total", doc.nbytes(prediction["predicted_peak_bytes"])])
    facts = [
        ["parameters", doc.compound(f"{{}} ({prediction['parameter_count']:,} parameters, "
                                    f"{prediction['trainable_parameter_count']:,} trainable)",
                                    doc.nbytes(prediction["parameter_bytes"]))],
        ["gradients", doc.nbytes(prediction["gradient_bytes"])],
        ["optimizer state", doc.nbytes(prediction["optimizer_state_bytes"])],
        ["input", doc.nbytes(prediction["input_bytes"])],
        ["activations held for backward", doc.nbytes(prediction["predicted_activation_bytes"])],
        ["  distinct buffers held", str(prediction["predicted_saved_tensors"])],
        ["ops recomputed (checkpointing)", str(prediction["predicted_recomputed_ops"])],
        ["step peak over baseline", doc.nbytes(prediction["predicted_step_peak_bytes"])],
        ["total peak", doc.nbytes(prediction["predicted_peak_bytes"])],
    ]
    if config["mode"] == "generate":
        facts += [[label, doc.nbytes(prediction.get(predicted))] for label, _, predicted in GENERATION if predicted]
    if prediction.get("predicted_communication_bytes"):
        facts.append(["bytes into collectives in the step (this rank's)",
                      doc.nbytes(prediction["predicted_communication_bytes"])])
        for name, (calls, nbytes) in sorted((prediction.get("predicted_collective_bytes") or {}).items()):
            facts.append([f"  {name} ({calls:,} calls)", doc.nbytes(nbytes)])
    document = Document(f"memstudy predict ({config['mode']}): {describe(config)}")
    for line in prediction.get("rank_notes") or ():  # the figures are one rank's (memstudy/parallel/rank.py)
        document.blocks.append(Paragraph(line))
    document.add([doc.table(["predicted", "bytes"], facts), doc.table(["predicted breakdown at the peak", "bytes"],
                                                                       body)])
    return render(document)

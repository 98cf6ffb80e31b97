"""A plan as one document (the ranked table, the chosen configuration's breakdown, what is not modelled), rendered
for the terminal or as Markdown (docs/will-it-fit.md), and as JSON Lines (one object per configuration)."""
from __future__ import annotations

import json
from typing import Any

from ..nn.models.registry import PRECISIONS, get_family
from ..report import document as doc
from ..report.document import Bullets, Document, Paragraph
from ..units import format_bytes
from .cost import CostModel
from .search import NOT_MODELLED, Candidate, PlanResult
from .space import PlanError, describe_axes

HEADERS = {"precision": "precision", "optimizer": "optimizer", "checkpoint": "checkpoint", "attention": "attention",
           "lora_rank": "LoRA r", "data_parallel": "DP", "tensor_parallel": "TP", "sequence_parallel": "SP",
           "pipeline_parallel": "PP", "zero": "ZeRO", "batch_size": "micro-batch", "microbatches": "microbatches"}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def cost_sentence(model: CostModel) -> str:
    return (f"Ranked by estimated step seconds = (3 × forward FLOPs + recomputed FLOPs) / "
            f"{model.device_flops / 1e12:g} TFLOP/s / (1 − pipeline bubble) + communication bytes / "
            f"{model.link_bytes_per_second / 1e9:g} GB/s "
            "(memstudy/plan/cost.py: FLOPs counted op by op in the rank's graph, the bubble (p − 1)/(m + p − 1) "
            "of 1F1B; an exchange rate between FLOPs and bytes for ranking, not a promise of seconds).")


def ranked_table(result: PlanResult, top: int | None) -> doc.Table:
    axes = result.space.axes
    header = ["#", *(HEADERS.get(a, a) for a in axes), "peak per rank", "headroom", "recomputed TFLOP",
              "communication", "bubble", "est. step s"]
    rows = []
    for index, c in enumerate(result.ranked[:top] if top else result.ranked, 1):
        values = describe_axes(c.config, axes)
        rows.append([str(index), *(_value(values[a]) for a in axes), doc.nbytes(c.result.peak_bytes),
                     doc.nbytes(result.machines.usable_bytes - c.result.peak_bytes),
                     doc.fixed(c.cost.recomputed_flops / 1e12, 1), doc.nbytes(c.cost.communication_bytes),
                     doc.fixed(c.cost.bubble, 3), doc.fixed(c.cost.step_seconds, 3)])
    return doc.table(header, rows)


def breakdown_table(candidate: Candidate) -> doc.Table:
    split = candidate.result.peak_by_category
    rows = [[name.replace("_", " "), doc.nbytes(nbytes)] for name, nbytes in split.items() if nbytes]
    rows.append(["peak, total", doc.nbytes(candidate.result.peak_bytes)])
    return doc.table(["chosen configuration's rank, at its peak (predicted)", "bytes"], rows)


def predict_command(candidate: Candidate, model_arg: str) -> str:
    """The `memstudy predict` command line for a configuration (the fields the plan set, on top of the model's)."""
    config = candidate.config
    flags = [model_arg, f"--seq-len {config['seq_len']}"] if "seq_len" in config else [model_arg]
    name = next((n for n, fields in PRECISIONS.items()
                 if fields == tuple(config.get(k) for k in ("dtype", "autocast", "master_weights", "loss_scale"))),
                None)
    flags.append(f"--precision {name}" if name else f"--dtype {config['dtype']}")
    flags += [f"--optimizer {config['optimizer']}", f"--checkpoint {config['checkpoint']}",
              f"--batch {config['batch_size']}"]
    fields = {f.name: f for f in get_family(config["model"]).all_fields()}
    for name in ("attention", "lora_rank", "data_parallel", "tensor_parallel", "sequence_parallel",
                 "pipeline_parallel", "zero", "microbatches"):
        f = fields.get(name)
        if f is None or config.get(name) in (None, f.default):
            continue  # not a field here, or at its default: nothing to say
        if f.type is bool:
            flags.append(f.cli_flag if config[name] else "--no-" + f.cli_flag[2:])
        else:
            flags.append(f"{f.cli_flag} {config[name]}")
    return "memstudy predict " + " ".join(flags)


def plan_document(result: PlanResult, top: int | None, model_arg: str, title: str, timed: bool = True) -> Document:
    """The plan as one document; `timed`: say how long the search took (not in a published block, which must render
    the same every time)."""
    m = result.machines
    document = Document(title)
    space = result.space
    missing = [f for f in ("data_parallel", "tensor_parallel", "pipeline_parallel", "attention") if f not in
               {x.name for x in result.family.all_fields()}]
    used = "every device" if "data_parallel" not in missing else "one device (each configuration)"
    document.add([Paragraph(
        f"{len(space.configs)} admissible configurations of {space.considered} combinations "
        f"({sum(space.refused.values())} refused by the model's rules); {result.predictions} distinct rank graphs "
        f"predicted, {result.reused} shared one, {result.skipped_larger} not predicted (a smaller micro-batch was "
        f"over already); {len(result.ranked)} fit in {format_bytes(m.usable_bytes)} per device "
        f"({format_bytes(m.device_memory_bytes)} − reserve {format_bytes(m.reserve_bytes)}), using {used}."
        + (f" Searched in {result.seconds:.1f} s." if timed else ""))])
    if missing:
        document.add([Paragraph("Not searched (no such field in this memstudy): " + ", ".join(missing) + ".")])
    if result.failed:
        document.add([Paragraph(f"{sum(result.failed.values())} configurations could not be predicted (left out): "
                                + "; ".join(f"{n} × {why}" for why, n in result.failed.items()))])
    document.add([ranked_table(result, top), Paragraph(cost_sentence(result.cost_model))])
    if result.ranked:
        best = result.ranked[0]
        document.add([breakdown_table(best), Paragraph("Same fields, one configuration: `" +
                                                       predict_command(best, model_arg) + "`")])
    document.add([Paragraph(f"Not modelled, and held back in the reserve of {format_bytes(m.reserve_bytes)} per "
                            "device instead:"),
                  Bullets([f"{name}: {why}" for name, why in NOT_MODELLED])])
    return document


def json_lines(result: PlanResult) -> list[str]:
    """One JSON object per predicted configuration: the fitting ones in rank order, then those over the memory."""
    lines = []
    for rank, c in enumerate(result.ranked + result.over, 1):
        lines.append(json.dumps({
            "rank": rank if c.fits else None, "fits": c.fits, **describe_axes(c.config, result.space.axes),
            "config": c.config, "predicted_peak_bytes": c.result.peak_bytes,
            "predicted_peak_by_category": c.result.peak_by_category, "forward_flops": c.result.forward_flops,
            "recomputed_flops": c.result.recomputed_flops, "communication_bytes": c.result.communication_bytes,
            "bubble": c.cost.bubble, "step_seconds": c.cost.step_seconds, "usable_bytes": result.machines.usable_bytes,
        }))
    return lines


def nothing_fits(result: PlanResult) -> PlanError:
    """The one line when no configuration fits: the smallest peak found and what dominates it."""
    smallest = result.smallest
    m = result.machines
    if smallest is None:
        return PlanError("no configuration was predicted")
    name, nbytes = smallest.result.dominant
    values = describe_axes(smallest.config, result.space.axes)
    setting = ", ".join(f"{HEADERS.get(k, k)} {_value(v)}" for k, v in values.items() if v is not None)
    return PlanError(f"no configuration fits in {format_bytes(m.usable_bytes)} per device "
                     f"({format_bytes(m.device_memory_bytes)} − reserve {format_bytes(m.reserve_bytes)}): the "
                     f"smallest predicted peak is {format_bytes(smallest.result.peak_bytes)} ({setting}), dominated by "
                     f"{name.replace('_', ' ')} ({format_bytes(nbytes)})")


__all__ = ["json_lines", "nothing_fits", "plan_document", "predict_command", "ranked_table"]

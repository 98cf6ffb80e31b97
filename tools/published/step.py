"""The block "What one step holds": the engine's saved buffers for the example step (run here), PyTorch's saved
bytes from the benchmark, and the example's `memstudy run` table from results/example/run.jsonl."""
from __future__ import annotations

from typing import Any

import numpy as np

from memstudy.autograd.graph import saved_buffers
from memstudy.measure.predict import predict
from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import get_family, normalize
from memstudy.units import format_bytes
from memstudy.report.terminal import run_report
from tools.published.results import BENCH_CSV, EXAMPLE_RUN, OPTIMIZER_NAMES, Results, and_list, row_median, span

SAVED_NAMES = {("relu", "out"): "ReLU outputs", ("sigmoid", "out"): "sigmoid outputs", ("tanh", "out"): "tanh outputs",
               ("softmax_cross_entropy", "probs"): "softmax probabilities", ("linear", "x"): "x",
               ("softmax_cross_entropy", "labels"): "the labels", ("linear", "weight"): "weights",
               ("linear", "bias"): "biases"}
SIZE_FLAGS = ("depth", "width", "batch_size")  # always on the example's command line, default or not


def run_command(config: dict[str, Any], modes: list[str]) -> str:
    """The shortest `memstudy run` command line whose configuration is `config` (flags from the registry)."""
    family = get_family(config.get("model"))
    raw: dict[str, Any] = {"model": family.name}
    flags = [] if family.name == "mlp" else [f"--model {family.name}"]
    for field in family.all_fields():
        if field.name == "mode" or field.name not in config:
            continue
        if field.name not in SIZE_FLAGS and normalize({**raw, "mode": "train"})[field.name] == config[field.name]:
            continue
        raw[field.name] = config[field.name]
        name = field.cli_flag
        if field.type is bool:
            flags.append(name if config[field.name] else "--no-" + name[2:])
        else:
            flags.append(f"{name} {config[field.name]}")
    mode = "both" if set(modes) == {"train", "inference"} else modes[0]
    return "memstudy run " + " ".join(flags + [f"--mode {mode}"])


def _row_config(row: dict[str, Any]) -> dict[str, Any]:
    """The configuration a `memstudy run --json` row describes: its family's fields (a row carries every family's)."""
    family = get_family(row.get("model"))
    return {"model": family.name, **{f.name: row[f.name] for f in family.all_fields() if f.name in row}}


def _saved_listing(config: dict[str, Any]) -> list[str]:
    """What `ms.saved_buffers` lists after the forward pass of `config`'s training step: the engine, run here."""
    work = Workload(normalize({**config, "mode": "train"}))
    loss = work.loss(work.policy)
    buffers = saved_buffers(loss, inputs=[work.inputs, work.labels])
    groups: dict[tuple, list] = {}
    for b in buffers:
        groups.setdefault((b.kind, b.op, b.role, b.shape, b.dtype, b.saved_by), []).append(b)

    def describe(key: tuple, members: list) -> str:
        kind, op, role, shape, dtype, saved_by = key
        name = SAVED_NAMES.get((op, role), f"{op} {role}")
        size = "×".join(map(str, shape)) + f"×{np.dtype(dtype).itemsize} B"
        each = members[0].nbytes
        if len(members) == 1:
            text = f"the {name}, {size} = {format_bytes(each)}" if kind == "activation" else \
                f"{name} ({format_bytes(each)}, {dtype})"
        else:
            text = f"{len(members)} {name} of {size} = {format_bytes(each)} each"
        if len(saved_by) > 1:
            text += f", each saved by {and_list(saved_by)} and listed once"
        return text

    lines = []
    activations = [b for b in buffers if b.kind == "activation"]
    parts = [describe(k, m) for k, m in groups.items() if k[0] == "activation"]
    lines.append(f"- **Activations:** {len(activations)} buffers, {sum(b.nbytes for b in activations):,} B in total: "
                 + "; ".join(parts) + ".")
    inputs = [describe(k, m) for k, m in groups.items() if k[0] == "input"]
    lines.append("- **Inputs:** " + and_list(inputs) + ".")
    parameters = [b for b in buffers if b.kind == "parameter"]
    layers = sorted({b.layer for b in parameters if b.layer is not None})
    held = sorted({SAVED_NAMES.get((b.op, b.role), f"{b.op} {b.role}") for b in parameters})
    lines.append(f"- **Parameters:** the {and_list(held)} of layers {span(layers)} ({len(parameters)} buffers, "
                 f"{format_bytes(sum(b.nbytes for b in parameters))}), saved by reference at no extra cost: they are "
                 "held as parameters anyway. The first layer's weight is not saved: x needs no gradient."
                 if 0 not in layers else
                 f"- **Parameters:** the {and_list(held)} of layers {span(layers)} ({len(parameters)} buffers), saved "
                 "by reference at no extra cost.")
    return lines


def _torch_comparison(results: Results) -> str:
    rows = [r for r in results.bench_rows if r["figure"] == "activation_bytes_vs_torch"]
    compared = [r for r in rows if r["status"] == "ok"]
    if not compared:
        return ("The benchmark did not compare the saved bytes with PyTorch's in its committed run "
                f"({BENCH_CSV}: {rows[0]['note'] if rows else 'no activation_bytes_vs_torch rows'}).")
    ratios = [float(r["value"]) for r in compared]
    equal = sum(1 for r in compared if float(r["measured"]) == float(r["reference"]))
    if equal == len(compared):
        return (f"PyTorch saves the same activation bytes: the benchmark ({BENCH_CSV}) compares {len(compared)} "
                f"configurations, and memstudy's bytes equal torch's saved bytes in all {len(compared)}.")
    return (f"Against PyTorch's saved bytes, the benchmark ({BENCH_CSV}) finds ratios {min(ratios):.3f}–"
            f"{max(ratios):.3f} over {len(compared)} configurations, equal in {equal}.")


def one_step_block(results: Results) -> list[str]:
    run = results.example_run
    modes = list(run)
    train = run.get("train")
    config = _row_config((train or run[modes[0]])[0])
    dtype = config["dtype"]
    optimizer = OPTIMIZER_NAMES.get(config["optimizer"], config["optimizer"])
    lines = [f"One step at depth {config['depth']}, width {config['width']}, batch {config['batch_size']}, {dtype}, "
             f"{optimizer}. After the forward pass, `ms.saved_buffers(loss, inputs=[x, y])` lists exactly what "
             "backward needs (this listing is the engine run when the README is generated):", ""]
    lines += _saved_listing(config) + [""]
    lines += [_torch_comparison(results), ""]
    command = run_command(config, modes)
    lines += [f"`{command}` ({EXAMPLE_RUN}; peak figures from the ledger; the probes measure the step's peak over "
              "the baseline taken just before it):", ""]
    lines += ["    " + line if line else "" for line in run_report(run).splitlines()]
    lines.append("")
    if train is None or "inference" not in run:
        return lines
    peak = {k: row_median(train, k) for k in ("peak_activation_bytes", "peak_gradient_bytes", "parameter_bytes",
                                            "activation_bytes")}
    sentences = []
    if peak["peak_activation_bytes"] == 0 and peak["peak_gradient_bytes"] == peak["parameter_bytes"]:
        sentences.append(
            f"At this size the training peak comes at the **end** of backward, not the end of forward. At that point "
            f"the gradients ({format_bytes(peak['peak_gradient_bytes'])}, one per parameter) have replaced the "
            f"{format_bytes(peak['activation_bytes'])} of activations.")
    else:
        sentences.append(
            f"At this size the training peak holds {format_bytes(peak['peak_activation_bytes'])} of activations and "
            f"{format_bytes(peak['peak_gradient_bytes'])} of gradients.")
    larger = predict(normalize({**config, "batch_size": 1024, "mode": "train"}))["predicted_peak_by_category"]
    if config["batch_size"] != 1024:
        who = "activations" if larger["activation"] > larger["gradient"] else "gradients"
        sentences.append(
            "Whether activations or gradients set the peak depends on batch × width against width²; with batch "
            f"1024 (predicted) the peak holds {format_bytes(larger['activation'])} of activations and "
            f"{format_bytes(larger['gradient'])} of gradients, so {who} dominate.")
    unit = config["batch_size"] * config["width"] * np.dtype(dtype).itemsize
    inference = row_median(run["inference"], "step_peak_bytes")
    if inference == 2 * unit:
        sentences.append(
            f"The inference step's {format_bytes(inference)} is two adjacent {format_bytes(unit)} activations: an "
            "inference pass frees each layer's input as soon as the next layer has used it.")
    else:
        sentences.append(f"The inference step's {format_bytes(inference)} is {inference / unit:.2f} activations of "
                         f"{format_bytes(unit)}.")
    return lines + [" ".join(sentences)]

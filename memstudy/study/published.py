"""The README's figures, rendered from the committed results: `python -m memstudy.study.published [--readme]`.

Every number the README quotes from a study, the example run or the benchmark sits in a block between
`<!-- published:NAME:start (...) -->` and `<!-- published:NAME:end -->`; this module renders each block from
the files under `results/` (runs.csv through the report's own loading, fits and section functions, env.json,
results/example/run.jsonl, results/bench/bench.csv). Without `--readme` it prints the blocks; with it, it
rewrites them in README.md in place. tests/test_published.py requires the README to hold exactly what it
renders, so a regenerated study that moves a figure fails the suite until `make readme` is run.

Each sentence says what its figure is over (which study, which rows or cells); a claim that depends on the
numbers ("exactly", "within the bound") is only made when the numbers say so.
"""
from __future__ import annotations

import ast
import json
import statistics
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..units import format_bytes
from .provenance import read_env
from .remedies import (DTYPE_CATEGORIES, _segments, checkpoint_cells, dtype_pairs, dtype_ratios, exact_halves,
                       optimizer_cells, optimizer_figures, parameter_share, policy_figures, sqrt_finding)
from .report import (LARGE_STEP_BYTES, ReportError, depth_slopes, input_law, large_steps, load_runs,
                     peak_ratio_cells, relative_errors, summarize, training_law)
from .reportkit import _bytes, _coef, _pct, _ratio

COMMAND = "python -m memstudy.study.published --readme"
DEFAULT_STUDY = "default"
EXAMPLE_RUN = "results/example/run.jsonl"  # written by `make example` (memstudy run ... --json)
BENCH_CSV = "results/bench/bench.csv"
PROBE_TEST = "tests/test_probe_agreement.py"  # its tolerances are quoted beside the measured errors
OPTIMIZER_NAMES = {"sgd": "SGD", "momentum": "Momentum", "adam": "Adam"}
SAVED_NAMES = {("relu", "out"): "ReLU outputs", ("sigmoid", "out"): "sigmoid outputs", ("tanh", "out"): "tanh outputs",
               ("softmax_cross_entropy", "probs"): "softmax probabilities", ("linear", "x"): "x",
               ("softmax_cross_entropy", "labels"): "the labels", ("linear", "weight"): "weights",
               ("linear", "bias"): "biases"}
SIZE_FLAGS = ("depth", "width", "batch_size")  # always on the example's command line, default or not


class PublishError(RuntimeError):
    """A committed result the README quotes is missing or unreadable; one-line message."""


# --- the committed results ----------------------------------------------------------------------------

@dataclass
class StudyData:
    """One committed study as the report reads it."""

    name: str
    runs: pd.DataFrame
    env: dict[str, Any] | None

    @cached_property
    def ok_rows(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]

    @cached_property
    def summary(self) -> pd.DataFrame:
        return summarize(self.runs)

    @cached_property
    def ok_cells(self) -> pd.DataFrame:
        return self.summary[self.summary["ok_repeats"] > 0]

    @cached_property
    def train_cells(self) -> pd.DataFrame:
        return self.ok_cells[self.ok_cells["mode"] == "train"]


class Results:
    """The committed results under a project folder, each file read once."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self._studies: dict[str, StudyData] = {}

    def path(self, relative: str) -> Path:
        return self.root / relative

    def study_names(self) -> list[str]:
        """Every results/<name>/ with a runs.csv, sorted."""
        return sorted(p.parent.name for p in self.path("results").glob("*/runs.csv"))

    def study(self, name: str) -> StudyData:
        if name not in self._studies:
            folder = self.path("results") / name
            try:
                runs = load_runs(folder)
            except ReportError as exc:
                raise PublishError(str(exc)) from None
            self._studies[name] = StudyData(name, runs, read_env(folder))
        return self._studies[name]

    @cached_property
    def bench_rows(self) -> list[dict[str, str]]:
        import csv

        path = self.path(BENCH_CSV)
        if not path.is_file():
            raise PublishError(f"{path}: not found (run `make bench`)")
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @cached_property
    def example_run(self) -> dict[str, list[dict[str, Any]]]:
        """results/example/run.jsonl's rows by mode, in file order (what `memstudy run --json` printed)."""
        path = self.path(EXAMPLE_RUN)
        if not path.is_file():
            raise PublishError(f"{path}: not found (run `make example`)")
        results: dict[str, list[dict[str, Any]]] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PublishError(f"{path}:{number}: not JSON ({exc.msg})") from None
            results.setdefault(row["mode"], []).append(row)
        if not results:
            raise PublishError(f"{path}: no rows")
        return results

    def test_constant(self, relative: str, name: str) -> Any:
        """A module-level constant of a test file, read without importing it (the README quotes its tolerances)."""
        path = self.path(relative)
        if not path.is_file():
            raise PublishError(f"{path}: not found")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
        raise PublishError(f"{path}: no constant {name}")


# --- small formats ------------------------------------------------------------------------------------

def _x(value: float) -> str:
    """A ratio as the report's tables print it: 3.90×."""
    return f"{value:.2f}×"


def _list(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _span(values: list[Any]) -> str:
    values = sorted(set(values))
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def _exact(value: float, target: float, tolerance: float = 5e-4) -> bool:
    return bool(np.isfinite(value)) and abs(value - target) <= tolerance


def _median(rows: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def _where(row: pd.Series | dict[str, Any], fields: tuple[str, ...] = ("depth", "batch_size")) -> str:
    return ", ".join(f"{f.replace('_size', '')} {row[f]}" for f in fields)


# --- What one step holds ------------------------------------------------------------------------------

def run_command(config: dict[str, Any], modes: list[str]) -> str:
    """The shortest `memstudy run` command line whose configuration is `config` (flags from the registry)."""
    from ..nn.models.registry import get_family, normalize

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
    from ..nn.models.registry import get_family

    family = get_family(row.get("model"))
    return {"model": family.name, **{f.name: row[f.name] for f in family.all_fields() if f.name in row}}


def _saved_listing(config: dict[str, Any]) -> list[str]:
    """What `ms.saved_buffers` lists after the forward pass of `config`'s training step: the engine, run here."""
    from ..autograd.graph import saved_buffers
    from ..memory.workload import Workload
    from ..nn.models.registry import normalize

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
            text += f", each saved by {_list(saved_by)} and listed once"
        return text

    lines = []
    activations = [b for b in buffers if b.kind == "activation"]
    parts = [describe(k, m) for k, m in groups.items() if k[0] == "activation"]
    lines.append(f"- **Activations:** {len(activations)} buffers, {sum(b.nbytes for b in activations):,} B in total: "
                 + "; ".join(parts) + ".")
    inputs = [describe(k, m) for k, m in groups.items() if k[0] == "input"]
    lines.append("- **Inputs:** " + _list(inputs) + ".")
    parameters = [b for b in buffers if b.kind == "parameter"]
    layers = sorted({b.layer for b in parameters if b.layer is not None})
    held = sorted({SAVED_NAMES.get((b.op, b.role), f"{b.op} {b.role}") for b in parameters})
    lines.append(f"- **Parameters:** the {_list(held)} of layers {_span(layers)} ({len(parameters)} buffers, "
                 f"{format_bytes(sum(b.nbytes for b in parameters))}), saved by reference at no extra cost: they are "
                 "held as parameters anyway. The first layer's weight is not saved: x needs no gradient."
                 if 0 not in layers else
                 f"- **Parameters:** the {_list(held)} of layers {_span(layers)} ({len(parameters)} buffers), saved "
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
    from ..memory.predict import predict
    from ..nn.models.registry import normalize
    from .tables import run_report

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
    peak = {k: _median(train, k) for k in ("peak_activation_bytes", "peak_gradient_bytes", "parameter_bytes",
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
    inference = _median(run["inference"], "step_peak_bytes")
    if inference == 2 * unit:
        sentences.append(
            f"The inference step's {format_bytes(inference)} is two adjacent {format_bytes(unit)} activations: an "
            "inference pass frees each layer's input as soon as the next layer has used it.")
    else:
        sentences.append(f"The inference step's {format_bytes(inference)} is {inference / unit:.2f} activations of "
                         f"{format_bytes(unit)}.")
    return lines + [" ".join(sentences)]


# --- How the probes agree -----------------------------------------------------------------------------

PROBES = (("tracemalloc", "tracemalloc_step_peak_bytes"), ("RSS", "rss_step_peak_bytes"),
          ("memory_profiler", "mprof_step_peak_bytes"))
PREDICTIONS = (("predicted_step_peak_bytes", "step_peak_bytes"), ("predicted_activation_bytes", "activation_bytes"),
               ("predicted_peak_bytes", "peak_bytes"))


def _extreme(rel: np.ndarray) -> float:
    """The signed error of largest magnitude."""
    return float(rel[np.argmax(np.abs(rel))]) if len(rel) else float("nan")


def probes_block(results: Results) -> list[str]:
    names = results.study_names()
    studies = [results.study(n) for n in names]
    rows = sum(len(s.ok_rows) for s in studies)
    worst = max((float(np.max(np.abs(rel))) for s in studies for q, r in PREDICTIONS
                 if len(rel := relative_errors(s.ok_rows, q, r))), default=float("nan"))
    if worst == 0:
        head = (f"**How the probes agree.** The prediction equals the ledger exactly (step peak, activation bytes and "
                f"total peak) in all {rows} finished rows of the {len(names)} committed studies.")
    else:
        head = (f"**How the probes agree.** The prediction differs from the ledger by up to {_pct(worst, False)} over "
                f"the {rows} finished rows of the {len(names)} committed studies.")
    default = results.study(DEFAULT_STUDY)
    ok = default.ok_rows
    large = ok[large_steps(ok)]
    counts = large["mode"].value_counts()
    lines = [head + f" Over the {len(large)} training and inference steps (each repeat a row) of at least "
             f"{format_bytes(LARGE_STEP_BYTES)} in the {DEFAULT_STUDY} study ({counts.get('train', 0)} training, "
             f"{counts.get('inference', 0)} inference):", ""]
    errors = {label: relative_errors(large, column, "step_peak_bytes") for label, column in PROBES}
    across = {label: [(s.name, relative_errors(s.ok_rows[large_steps(s.ok_rows)], column, "step_peak_bytes"))
                      for s in studies] for label, column in PROBES}
    pooled = {label: np.concatenate([rel for _, rel in found]) for label, found in across.items()}

    def worst_study(label: str) -> tuple[str, float]:
        """The study whose reading of this probe strays furthest from the ledger, and that reading's error."""
        measured = [(n, r) for n, r in across[label] if len(r)]
        if not measured:
            return "no", float("nan")
        name, rel = max(measured, key=lambda nr: float(np.max(np.abs(nr[1]))))
        return name, _extreme(rel)

    rel = errors["tracemalloc"]
    tolerance = results.test_constant(PROBE_TEST, "TRACEMALLOC_TOLERANCE")
    lines.append(f"- **tracemalloc** is within {_pct(float(np.max(np.abs(rel))), False)} of the ledger (median "
                 f"{_pct(float(np.median(rel)))}), and within {_pct(float(np.max(np.abs(pooled['tracemalloc']))), False)}"
                 f" over the {len(pooled['tracemalloc'])} such steps of all {len(names)} studies. It also sees the few "
                 f"scratch arrays inside ops that the ledger cannot see. `{PROBE_TEST}` asserts "
                 f"{tolerance * 100:g}% on every repeat.")
    rel = errors["RSS"]
    name, extreme = worst_study("RSS")
    methods = sorted(set(large["rss_method"]))
    how = "VmHWM reset before the step" if methods == ["vmhwm"] else "taken by " + _list(methods)
    tolerance = results.test_constant(PROBE_TEST, "RSS_TOLERANCE")
    repeats = results.test_constant(PROBE_TEST, "REPEATS")
    lines.append(f"- **RSS ({how})** has a median error of {_pct(float(np.median(rel)))}, but "
                 f"single readings reach {_pct(_extreme(rel))} ({_pct(extreme)} in the {name} study). Linux sums RSS "
                 "from per-CPU counters that it folds in batches, so VmHWM can read a few hundred KiB low whatever "
                 f"the step's size. The test asserts {tolerance * 100:g}% on the median of {repeats} repeats.")
    rel = errors["memory_profiler"]
    name, extreme = worst_study("memory_profiler")
    lines.append(f"- **memory_profiler** samples, so it can miss or overshoot short spikes; its largest error is "
                 f"{_pct(_extreme(rel))} here and {_pct(extreme)} across all studies (in the {name} study). It is "
                 "reported, never trusted alone.")
    inference = results.example_run.get("inference")
    rss = _median(inference, "rss_step_peak_bytes") if inference else None
    example = (f", so the inference RSS figure above reads {format_bytes(rss)}" if rss is not None
               and rss < 0.5 * _median(inference, "step_peak_bytes") else "")
    lines += ["", f"Below {format_bytes(LARGE_STEP_BYTES)} the sampled probes lose meaning. Buffers under glibc's mmap "
              "threshold come from the heap, where freed chunks are reused without touching RSS" + example
              + ". The report shows both size classes."]
    return lines


# --- What the study shows -----------------------------------------------------------------------------

def _grid_text(env: dict[str, Any] | None) -> str:
    spec = (env or {}).get("spec") or {}
    grid = spec.get("grid") or {}
    swept = [f"{k.replace('_size', '')} {_span(v)}" if k != "mode" else "/".join(v)
             for k, v in grid.items() if isinstance(v, list) and len(v) > 1]
    fixed = {k: v[0] for k, v in grid.items() if isinstance(v, list) and len(v) == 1}
    parts = [" × ".join(swept)]
    if "width" in fixed:
        parts.append(f"width {fixed['width']}")
    if "dtype" in fixed:
        parts.append(str(fixed["dtype"]))
    if "optimizer" in fixed:
        parts.append(OPTIMIZER_NAMES.get(fixed["optimizer"], fixed["optimizer"]))
    if spec.get("repeats"):
        parts.append(f"{spec['repeats']} repeats")
    return ", ".join(p for p in parts if p)


def _law_bullet(study: StudyData) -> str:
    laws = [law for law in training_law(study.train_cells) if np.isfinite(law["a"])]
    if not laws:
        return "- **Training**: no activation law could be fitted."
    law = laws[0]
    cells = law["cells"]
    classes = sorted(study.train_cells["out_features"].dropna().unique().tolist())
    text = f"- **Training** activation bytes fit **a·depth·batch + b·batch + c** over the {cells} training cells"
    if _exact(law["ratio"], 1.0):
        text += (f", with **a = {_coef(law['a'])} = {law['expected_label'].split(' = ')[-1]}**. That is "
                 f"{law['expected_label'].split(' = ')[0]}, one stored intermediate per layer per example, with ratio "
                 f"{_ratio(law['ratio'])}")
    else:
        text += (f", with **a = {_coef(law['a'])}**, {_ratio(law['ratio'])} × {law['expected_label']} (one stored "
                 "intermediate per layer per example would be 1.000)")
    text += f" and R² = {_ratio(law['r2'])}."
    if len(classes) == 1:
        probs = classes[0] * law["itemsize"]
        if abs(law["b"] - probs) < 0.5:
            text += (f" b = {_coef(law['b'])} per example is the loss's softmax probabilities ({classes[0]} classes × "
                     f"{law['itemsize']} B)")
        else:
            text += (f" b = {_coef(law['b'])} per example (the loss's softmax probabilities alone would be "
                     f"{classes[0]} × {law['itemsize']} B)")
    else:
        text += f" b = {_coef(law['b'])} per example"
    return text + f", and c = {_coef(law['c'])}."


def _inference_bullet(study: StudyData) -> str:
    slopes = depth_slopes(study.ok_cells)
    if not slopes:
        return "- **Inference**: only one depth ran, so there is no slope over depth."
    batches = [s["key"].get("batch_size") for s in slopes]
    inference = [s["inference_slope"] for s in slopes]
    largest = max(abs(v) for v in inference)
    text = "- **Inference** working memory (peak − parameters − optimiser state − input), fitted over depth at each "
    if largest < 0.5:
        text += f"batch size ({_list(batches)}), grows by **{_coef(0.0)} per layer** at every one."
    else:
        text += f"batch size ({_list(batches)}), grows by up to **{_coef(largest)} per layer**."
    per_example = [s["train_slope"] / b for s, b in zip(slopes, batches)]
    if max(per_example) - min(per_example) < 0.5:
        text += f" Training's activations grow by batch × {_coef(per_example[0])} per layer."
    else:
        text += (" Training's activations grow by " + _list([_coef(s["train_slope"]) for s in slopes])
                 + " per layer at those batches.")
    return text


def _ratio_bullet(study: StudyData) -> str:
    sliced, ratios, fixed = peak_ratio_cells(study.ok_cells)
    if ratios.empty:
        return "- No configuration ran in both modes, so there is no train ÷ inference ratio."
    column = "train_inference_peak_ratio"
    low, high = ratios.loc[ratios[column].idxmin()], ratios.loc[ratios[column].idxmax()]

    def peak(row: pd.Series, mode: str) -> str:
        hit = sliced[(sliced["depth"] == row["depth"]) & (sliced["batch_size"] == row["batch_size"])
                     & (sliced["mode"] == mode)]
        return _bytes(hit["peak_bytes"].iloc[0])

    smallest = ratios["batch_size"].min()
    at_small = ratios[ratios["batch_size"] == smallest][column]
    text = (f"- **Train ÷ inference total peak**, over the {len(ratios)} depth × batch pairs, ranges from "
            f"{_x(low[column])} ({_where(low)}) to **{_x(high[column])} ({_where(high)})**: {peak(high, 'train')} "
            f"against {peak(high, 'inference')}. At the smallest batch ({smallest}) it is {_x(at_small.min())}–"
            f"{_x(at_small.max())}")
    if abs(at_small - 2).max() <= 0.1:
        return text + ", near 2×, because the gradients equal the parameters and the activations are small."
    return text + "."


def _wall_bullet(results: Results) -> str:
    rows = [r for r in results.bench_rows if r["figure"] == "study_wall_seconds" and r["status"] == "ok"]
    text = "- Wall time: "
    if rows:
        r = rows[0]
        text += (f"`memstudy study` (the sweep and report of this study: what `make study` runs after installing) took "
                 f"**{float(r['value']):.1f} s** when the benchmark last ran it (sweep {float(r['measured']):.1f} s + "
                 f"report {float(r['reference']):.1f} s; {BENCH_CSV}).")
    else:
        text += f"the benchmark's committed run did not time the study ({BENCH_CSV})."
    names = results.study_names()
    walls = {}
    for name in names:
        sessions = (results.study(name).env or {}).get("sessions") or []
        seconds = [s.get("wall_seconds") for s in sessions]
        if sessions and all(isinstance(v, (int, float)) for v in seconds):
            walls[name] = float(sum(seconds))
    if len(walls) == len(names) and names:
        text += (f" The committed sweeps took {walls.get(DEFAULT_STUDY, float('nan')):.1f} s for this study and "
                 f"{sum(walls.values()):.1f} s for all {len(names)} studies (`memstudy study --all`; the sum of the "
                 "sweep sessions' `wall_seconds` in each env.json, reports not included).")
    else:
        text += (f" The sweeps' own wall time is recorded in env.json (`wall_seconds` per session) for {len(walls)} "
                 f"of the {len(names)} committed studies, so no total is given.")
    return text


def study_block(results: Results) -> list[str]:
    study = results.study(DEFAULT_STUDY)
    ok = int((study.summary["status"] == "ok").sum())
    spec = (study.env or {}).get("spec") or {}
    lines = [f"`make study` runs `{spec.get('path', 'experiments/default.toml')}`: {_grid_text(study.env)}. Each of "
             f"the {len(study.summary)} cells runs in a fresh process ({ok} finished every repeat). Results are "
             f"committed in [`results/{DEFAULT_STUDY}/`](results/{DEFAULT_STUDY}/report.md).", ""]
    lines += [_law_bullet(study), _inference_bullet(study), _ratio_bullet(study), _wall_bullet(results)]
    return lines


def timeline_block(results: Results) -> list[str]:
    study = results.study(DEFAULT_STUDY)
    path = results.path(f"results/{DEFAULT_STUDY}/timeline.csv")
    if not path.is_file():
        return ["(No timeline.csv in the committed study.)"]
    events = pd.read_csv(path)
    from .report import _timeline_cell  # the cell the sweep chose, as the report names it

    cell = _timeline_cell(study.env)
    config = study.runs[study.runs["cell"] == cell].iloc[0] if cell in set(study.runs["cell"]) else None
    where = f" ({_where(config)})" if config is not None else ""
    scratch = events[(events["phase"] == "optimizer") & (events["delta_bytes"] > 0)]
    sizes = sorted(set(scratch["delta_bytes"].astype(int).tolist()))
    if scratch.empty:
        update = "The optimiser then updates in place, with no scratch buffer."
    elif len(scratch) == 1:
        update = f"The optimiser then updates in place, through one {format_bytes(sizes[0])} scratch buffer."
    else:
        update = (f"The optimiser then updates in place, through {len(scratch)} scratch buffers of "
                  f"{_list([format_bytes(s) for s in sizes])}.")
    return [f"The timeline shows one training step{where} as the ledger saw it, event by event ({len(events)} events). "
            "Forward stacks up one activation per layer (red). Backward releases them in reverse order while the "
            f"gradients (orange) take their place. {update}"]


def width_block(results: Results) -> list[str]:
    study = results.study("width")
    laws = [law for law in training_law(study.train_cells) if law["width_varies"] and np.isfinite(law["a"])]
    if not laws:
        return ["The width study fits no law over width."]
    law = laws[0]
    link = "The width study ([`results/width/`](results/width/report.md))"
    if _exact(law["ratio"], 1.0):
        text = (f"{link} shows that a stored intermediate grows with the layer's width: over its {law['cells']} "
                f"training cells, a = {_coef(law['a'])} = {law['expected_label'].split(' = ')[0]} per unit of "
                f"depth·batch·width (R² = {_ratio(law['r2'])}).")
    else:
        text = (f"{link} fits a = {_coef(law['a'])} per unit of depth·batch·width over its {law['cells']} training "
                f"cells: {_ratio(law['ratio'])} × the {law['expected_label']} (R² = {_ratio(law['r2'])}).")
    inputs = input_law(study.ok_cells)
    if law["d"] is not None and inputs is not None:
        text += (f" `in_features` adds {_coef(law['d'])} per example per input feature to the activations held "
                 f"for backward, and grows the input by e = {_coef(inputs['e'])} per example per feature (itemsize "
                 f"{inputs['itemsize']} B, {inputs['n']} cells).")
    return [text]


# --- What buys it back --------------------------------------------------------------------------------

def _checkpoint_bullet(results: Results) -> str:
    study = results.study("checkpointing")
    data, fixed, strategies = checkpoint_cells(study.train_cells)
    found = sqrt_finding(data)
    link = "- **Checkpointing** ([report](results/checkpointing/report.md))."
    if found is None:
        return link + " The study has no `sqrt` cell to compare."
    depth, batch, r = found["depth"], found["batch"], found["row"]
    length, count = _segments("sqrt", depth)
    text = (f"{link} At depth {depth}, width {int(r['width'])}, batch {batch}, `sqrt` checkpointing (segments of "
            f"⌈√{depth}⌉ = {length} layers) holds **{r['layers']:.2f} layers' worth** of activations "
            f"({_bytes(r['activation_bytes'])}) instead of {float(r['activation_bytes_ref']) / r['unit']:.2f}. The "
            f"bound is 2√{depth} + 1 = {found['layers_bound']} layers' worth plus the loss's probabilities: "
            f"{'within it' if found['within_bound'] else 'it is OVER the bound'}. Its step took "
            f"**{_x(r['time_ratio'])}** as long in this run")
    same = [s for s in strategies if s not in ("none", "sqrt") and _segments(s, depth) == (length, count)]
    for s in same:
        hit = data[(data["checkpoint"] == s) & (data["depth"] == depth) & (data["batch_size"] == batch)]
        if len(hit) and np.isfinite(hit["time_ratio"].iloc[0]):
            text += f", and the same {count} × {length} split under `{s}` took {_x(hit['time_ratio'].iloc[0])}"
    checkpointed = data[(data["checkpoint"] != "none")].dropna(subset=["time_ratio"])
    text += (f". Over the study's {len(checkpointed)} checkpointed cells (depths {_span(checkpointed['depth'].tolist())}, "
             f"batches {_list(sorted(checkpointed['batch_size'].unique().tolist()))}) the strategies cost "
             f"{_x(checkpointed['time_ratio'].min())}–{_x(checkpointed['time_ratio'].max())} the step: every strategy "
             "recomputes each layer's forward once, and the study's step times are noisy (see How it works).")
    peaks = "; ".join(f"at batch {p['batch']} it is {_x(p['ratio'])} of no checkpointing "
                      f"({_bytes(p['none_bytes'])} → {_bytes(p['sqrt_bytes'])})" for p in found["peaks"])
    return text + (f" The total peak only falls when activations dominate. At depth {depth} with `sqrt`, {peaks}. "
                   "When the batch is no larger than the width, the gradients set the peak.")


def _policy_bullet(results: Results) -> str:
    study = results.study("policies")
    found = policy_figures(study.train_cells)
    rows, pytorch = found["rows"], found["pytorch_bytes"]
    link = "- **Saved-tensor policies** ([report](results/policies/report.md))."
    if "minimal" not in rows:
        return link + " The study has no `minimal` cells to compare against."
    minimal = rows["minimal"]["a"]
    cells = sorted(found["data"]["policy"].value_counts().unique().tolist())
    text = (f"{link} Bytes per layer per example are the slope of activation bytes over depth × batch, fitted over "
            f"each policy's {_list(cells)} training cells. `minimal` holds **{minimal:,.1f} B per layer per example**")
    if _exact(minimal / pytorch, 1.0):
        text += (f", PyTorch's figure of one width-sized buffer per Linear+activation layer ({found['width']} × "
                 f"{found['itemsize']} B).")
    else:
        text += f", {_ratio(minimal / pytorch)} × PyTorch's figure of {pytorch:,} B."
    if "all" in rows:
        text += (f" The textbook's \"store every intermediate\" (`all`: z and h) holds {rows['all']['a']:,.1f} B, "
                 f"{_x(rows['all']['a'] / minimal)}.")
    if "half" in rows:
        half = rows["half"]
        text += (f" `half` (float16 storage) holds {half['a']:,.1f} B, {_x(half['a'] / minimal)}, at a gradient "
                 f"relative error of {half['error']:.1e} (median over its cells; max {half['error_max']:.1e}).")
        if np.isfinite(half["time_ratio"]):
            text += (f" Its step takes {_x(half['time_ratio'])} minimal's (median over cells)"
                     + (", because numpy's float16 casts are slow." if half["time_ratio"] > 1 else "."))
    return text


def _optimizer_bullet(results: Results) -> str:
    study = results.study("optimizers")
    data, fixed, optimizers = optimizer_cells(study.train_cells)
    found = optimizer_figures(data, optimizers)
    expected = {"sgd": 0, "momentum": 1, "adam": 2}
    names = [OPTIMIZER_NAMES[o] for o in optimizers]
    link = "- **Optimisers** ([report](results/optimizers/report.md))."
    if all(found[o]["state_min"] == found[o]["state_max"] == expected[o] for o in optimizers):
        text = (f"{link} Measured state is exactly " + _list([f"{expected[o]}×" for o in optimizers])
                + f" the parameter bytes for {_list(names)}, in every cell")
    else:
        text = (f"{link} Measured state is " + _list([f"{found[o]['state_min']:.3f}–{found[o]['state_max']:.3f}×"
                                                       for o in optimizers]) + f" the parameter bytes for {_list(names)}")
    cells = sorted({found[o]["cells"] for o in optimizers})
    text += (", and the median peak over the cells is " + _list([_x(found[o]["peak_ratio"]) for o in optimizers])
             + f" SGD's ({_list(cells)} cells each).")
    widths = sorted(data["width"].unique().tolist())
    batches = sorted(data["batch_size"].unique().tolist())
    last = optimizers[-1]
    if len(widths) > 1 and len(batches) > 1:
        narrow = parameter_share(data, last, widths[0], batches[-1])
        wide = parameter_share(data, last, widths[-1], batches[-1])
        if narrow is not None and wide is not None:
            text += (f" With {OPTIMIZER_NAMES[last]}, the parameter side (parameters + gradients + state) is "
                     f"{_pct(narrow, False)} of the peak at width {widths[0]} and batch {batches[-1]}, and "
                     f"{_pct(wide, False)} at width {widths[-1]}.")
    return text + " Width grows the parameter side (width²); batch grows the activation side."


def _dtype_bullet(results: Results) -> str:
    study = results.study("dtypes")
    pairs = dtype_pairs(study.ok_cells)
    link = "- **Dtypes** ([report](results/dtypes/report.md))."
    if pairs is None or pairs.empty:
        return link + " The study has no float32 / float64 pairs."
    ratios = dtype_ratios(pairs)
    exact, _ = exact_halves(ratios)
    categories = [label for label, _ in DTYPE_CATEGORIES if label in ratios and label != "input"]
    halved = [c for c in categories if c in exact]
    if halved == categories:
        counted = [f"{c.replace(' (at the peak)', ' at the peak')} {ratios[c].pairs}" for c in categories]
        text = (f"{link} Moving from float64 to float32 halves **every** category of the ledger but the input exactly: "
                f"the ratio is 0.5000 in every pair of cells (float32 beside float64, every other field equal) where "
                f"the category is not empty (pairs: {', '.join(counted)}).")
    else:
        text = (f"{link} Moving from float64 to float32 halves {_list(halved) or 'no category'} exactly; "
                + _list([f"{c} {ratios[c].median:.4f} ({ratios[c].low:.4f}–{ratios[c].high:.4f})"
                         for c in categories if c not in halved]) + f" (medians over {len(pairs)} pairs).")
    if "input" in ratios:
        r = ratios["input"]
        text += (f" The input is the exception at {r.median:.4f} (median over {r.pairs} pairs; {r.low:.4f}–"
                 f"{r.high:.4f}), because the integer labels stay int64.")
    return text


def remedies_block(results: Results) -> list[str]:
    return [_checkpoint_bullet(results), _policy_bullet(results), _optimizer_bullet(results),
            _dtype_bullet(results)]


# --- the blocks and the README ------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    name: str
    sources: str  # what the marker says the block is generated from
    render: Callable[[Results], list[str]]


BLOCKS: tuple[Block, ...] = (
    Block("one-step", f"{EXAMPLE_RUN}, {BENCH_CSV} and the engine", one_step_block),
    Block("probes", f"results/*/runs.csv, {EXAMPLE_RUN}, {PROBE_TEST}", probes_block),
    Block("study", f"results/{DEFAULT_STUDY}/, results/*/env.json, {BENCH_CSV}", study_block),
    Block("timeline", f"results/{DEFAULT_STUDY}/timeline.csv", timeline_block),
    Block("width", "results/width/runs.csv", width_block),
    Block("remedies", "results/{checkpointing,policies,optimizers,dtypes}/runs.csv", remedies_block),
)


def start_marker(block: Block) -> str:
    return f"<!-- published:{block.name}:start (generated from {block.sources} by {COMMAND}) -->"


def end_marker(block: Block) -> str:
    return f"<!-- published:{block.name}:end -->"


def render(block: Block, results: Results) -> str:
    """The block as the README holds it, markers included."""
    body = "\n".join(block.render(results)).strip("\n")
    return "\n".join([start_marker(block), "", body, "", end_marker(block)])


def render_all(results: Results) -> dict[str, str]:
    return {block.name: render(block, results) for block in BLOCKS}


def update_readme(readme: Path, results: Results) -> list[str]:
    """Rewrite every block between its markers; returns the names of blocks whose markers are missing (the file is
    then left unchanged)."""
    text = readme.read_text(encoding="utf-8")
    missing = []
    for block in BLOCKS:
        prefix = f"<!-- published:{block.name}:start"
        start, end = text.find(prefix), text.find(end_marker(block))
        if start < 0 or end < start:
            missing.append(block.name)
            continue
        text = text[:start] + render(block, results) + text[end + len(end_marker(block)):]
    if not missing:
        readme.write_text(text, encoding="utf-8")
    return missing


USAGE = "usage: python -m memstudy.study.published [--readme] [--root DIR]"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    readme, root = False, Path(".")
    while args:
        arg = args.pop(0)
        if arg == "--readme":
            readme = True
        elif arg == "--root" and args:
            root = Path(args.pop(0))
        elif arg in ("-h", "--help"):
            print(USAGE)
            return 0
        else:
            sys.stderr.write(f"error: unknown argument {arg!r} ({USAGE})\n")
            return 2
    if not (root / "results" / DEFAULT_STUDY / "runs.csv").is_file():
        sys.stderr.write(f"error: no results/{DEFAULT_STUDY}/runs.csv under {root} (run from the project's folder)\n")
        return 2
    results = Results(root)
    try:
        if not readme:
            print("\n\n".join(render_all(results).values()))
            return 0
        path = root / "README.md"
        if not path.is_file():
            sys.stderr.write(f"error: {path} not found\n")
            return 2
        missing = update_readme(path, results)
    except PublishError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if missing:
        sys.stderr.write(f"error: {path} has no published block {', '.join(missing)} "
                         "(<!-- published:NAME:start ... --> ... <!-- published:NAME:end -->); nothing changed\n")
        return 2
    print(f"updated {len(BLOCKS)} published blocks in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

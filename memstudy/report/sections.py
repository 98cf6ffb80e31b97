"""The generic report: the sections every study gets, whatever its family (a user's own included).

What was run, the warnings (a damaged runs.csv, timings under load, several hosts), peak memory and the train ÷
inference ratio, how activation bytes grow with each swept size, what is live at the peak, one step over time,
whether the probes and the prediction agree with the ledger (and where measured ≠ predicted), and the cells
that did not run. Each function returns blocks (`document`); nothing here knows a family's own fields: sizes
are the fields the families declare as integers, a slice holds the others at the families' defaults
(`fit.representative`). What a family adds is a finding (`memstudy.findings`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..nn.models.registry import MODES
from ..run.results.fields import CATEGORIES
from ..run.select import nearest_batch
from . import charts
from . import document as doc
from .context import Study
from .document import Block, Bullets, Chart, Figure, Heading, Paragraph, plot
from .fit import (describe_fixed, fix_others, least_squares, relative_errors, size_fields, values,
                  varying_fields)
from .formats import LOADED_CORES, bytes_text
from .timeline import TimelineError, phase_spans, read_timeline

FIGURES_MODULE = "memstudy.report.figures"
FIGURES = ("peak_vs_depth.png", "peak_vs_batch.png", "peak_vs_width.png", "breakdown.png", "timeline.png",
           "predicted_vs_measured.png")
# (quantity, reference, label): each probe and prediction against the ledger
AGREEMENT = (
    ("tracemalloc_step_peak_bytes", "step_peak_bytes", "tracemalloc step peak vs ledger step peak"),
    ("rss_step_peak_bytes", "step_peak_bytes", "RSS step peak vs ledger step peak"),
    ("mprof_step_peak_bytes", "step_peak_bytes", "memory_profiler step peak vs ledger step peak"),
    ("predicted_step_peak_bytes", "step_peak_bytes", "predicted step peak vs ledger step peak"),
    ("predicted_activation_bytes", "activation_bytes", "predicted activation bytes vs ledger activation bytes"),
    ("predicted_peak_bytes", "peak_bytes", "predicted total peak vs ledger total peak"),
)
# (ledger column, predicted column, label): what a row holds both of
PREDICTED_PAIRS = (
    ("peak_bytes", "predicted_peak_bytes", "total peak"),
    ("step_peak_bytes", "predicted_step_peak_bytes", "step peak"),
    ("activation_bytes", "predicted_activation_bytes", "activation bytes"),
)
SCATTER_PROBES = (
    ("ledger", "step_peak_bytes"), ("tracemalloc", "tracemalloc_step_peak_bytes"),
    ("RSS", "rss_step_peak_bytes"), ("memory_profiler", "mprof_step_peak_bytes"),
)
SAMPLING_NOTE = (
    "The ledger counts every buffer the engine allocates, exactly, and tracemalloc sees every numpy buffer "
    "(including the small scratch arrays inside ops that the ledger does not track), so those two should agree "
    "closely. The sampled probes can disagree for reasons of their own: memory_profiler polls the process's "
    "memory at intervals and misses spikes shorter than its sampling period; RSS is the operating system's view, "
    "page-granular, and the allocator may keep freed memory (RSS stays high) or reuse it (a new buffer adds "
    "nothing), so RSS can read above or below the live bytes. They are reported, never tuned."
)
SMALL_STEP_NOTE = (
    "Steps under 1 MiB are reported separately because every probe but the ledger has a floor of its own there: "
    "tracemalloc also counts the graph's Python objects and the ops' internal scratch arrays (a few kB to tens of "
    "kB); buffers under glibc's mmap threshold (64 KiB in the cells) come from the heap, where a freed chunk is "
    "reused without touching RSS; and Linux sums RSS from per-CPU counters that it folds in batches, so VmHWM "
    "can read a few hundred KiB low whatever the step's size."
)
LARGE_STEP_BYTES = 2**20  # the criterion: probes must agree on steps whose peak is at least 1 MiB
INTRO = ("Training keeps each layer's intermediate values alive until backward uses them; inference frees them "
         "as it goes. Every figure below is a median over repeats of one measured step; byte counts come from "
         "the ledger (every buffer the engine allocates) unless a probe is named; predicted means computed from "
         "the configuration without running.")


# --- what was run, and the warnings ---------------------------------------------------------------------------

SHAPE_ONLY_INTRO = (
    "Every figure below is predicted, none measured (the spec's `measure = false`): each cell's step, or the "
    "accounted rank's graph, ran on shape-only arrays under the ledger (`memstudy predict`), so its bytes are exact "
    "for that graph, and there are no timings and no probes. The sections that read a measured step (peak against "
    "the swept sizes, what is live at the peak, the step over time, the probes' agreement) are left out; the "
    "findings below read the predicted columns.")


def intro(study: Study) -> list[Block]:
    return [Paragraph(SHAPE_ONLY_INTRO if study.shape_only else INTRO)]


def measured_only(section: Any) -> Any:
    """A generic section that reads a measured step: nothing in a shape-only study (the intro says so)."""
    def guarded(study: Study) -> list[Block]:
        return [] if study.shape_only else section(study)

    guarded.__name__, guarded.__doc__ = section.__name__, section.__doc__
    return guarded


def blas_summary(blas: dict[str, Any]) -> str:
    libs = blas.get("libraries")
    if isinstance(libs, list) and libs:  # threadpoolctl
        return ", ".join(f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('num_threads')} threads)"
                         for lib in libs if isinstance(lib, dict))
    if isinstance(libs, dict) and libs.get("blas"):
        info = libs["blas"]
        return f"{info.get('name')} {info.get('version')}"
    return "unknown"


def what_was_run(study: Study) -> list[Block]:
    env, runs, summary = study.env, study.runs, study.summary
    items = []
    experiment = runs["experiment"].dropna().iloc[0] if runs["experiment"].notna().any() else "?"
    spec = (env or {}).get("spec", {})
    status_counts = summary["status"].value_counts().to_dict()
    counted = ", ".join(f"{n} {s}" for s, n in sorted(status_counts.items()))
    total_cells = spec.get("cells")
    items.append(f"**Study** `{experiment}`" + (f": {spec['description']}" if spec.get("description") else ""))
    done = f"{len(summary)} cells" + (f" of {total_cells}" if total_cells else "")
    items.append(f"**Cells** {done} ({counted}); {len(runs)} rows in runs.csv"
                 + (f", {spec.get('repeats')} repeats per cell" if spec.get("repeats") else ""))
    if study.shape_only:
        items.append("**Shape-only** every cell predicted (`measure = false`): bytes exact for the graph, no timings")
    if total_cells and len(summary) < total_cells:
        items.append(f"**Incomplete**: {total_cells - len(summary)} cells not run yet "
                     "(rerun the same sweep to resume)")
    grid = spec.get("grid")
    if grid:
        items.append("**Grid** " + "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in grid.items()))
    else:
        vary = varying_fields(runs)
        items.append("**Varying** " + ("; ".join(f"{f} = {', '.join(map(str, values(runs, f)))}" for f in vary)
                                        or "nothing"))
    if spec:
        items.append(f"**Budget** {spec.get('budget')!s}; timeout {spec.get('timeout_seconds')} s per cell; "
                     f"spec hash `{spec.get('hash')}`")
    if env is None:
        items.append("(no env.json: provenance unknown)")
        return [Heading("What was run"), Bullets(tuple(items))]
    git = env.get("git", {})
    commit = (git.get("commit") or "unknown")[:12]
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    items.append(f"**Code** memstudy {env.get('memstudy_version')}, git `{commit}`{dirty}")
    python = env.get("python", {})
    numpy_info = env.get("numpy", {})
    items.append(f"**Software** Python {python.get('version')}, numpy {numpy_info.get('version')}, BLAS "
                 f"{blas_summary(numpy_info.get('blas', {}))}")
    machine = env.get("machine", {})
    items.append(f"**Machine** {machine.get('cpu_model')}, {machine.get('logical_cores')} logical cores "
                 f"({machine.get('usable_cores')} usable), {bytes_text(machine.get('total_memory_bytes'))} memory; "
                 f"{env.get('os', {}).get('platform')}")
    cell_env = env.get("cell_environment") or {}
    if cell_env:
        items.append("**Cell environment** " + ", ".join(f"`{k}={v}`" for k, v in cell_env.items()))
    sweep = env.get("sweep", {})
    sessions = env.get("sessions", [])
    if sweep:
        items.append(f"**Sweep** jobs {sweep.get('jobs')}, budget {bytes_text(sweep.get('budget_bytes'))}; "
                     f"{len(sessions)} session(s), recorded {env.get('recorded_at')}")
    return [Heading("What was run"), Bullets(tuple(items))]


def file_problems(study: Study) -> list[Block]:
    problems = study.runs.attrs.get("problems", [])
    if not problems:
        return []
    return [Paragraph("\n".join(f"**Warning** {p} (resuming the sweep repairs the file and reruns what is "
                                "missing)." for p in problems))]


def timing_load(study: Study) -> list[Block]:
    """Flag timings taken while other processes kept the machine busy (`foreign_cores`)."""
    runs = study.runs
    timed = runs[(runs["status"] == "ok") & runs["step_seconds"].notna()]
    known = timed["foreign_cores"].dropna()
    if timed.empty or known.empty:  # runs.csv from before the column, or not Linux: nothing to say either way
        return []
    loaded = timed[timed["foreign_cores"] > LOADED_CORES]
    line = (f"Timing load: other processes kept a median {known.median():.2f} cores busy (max {known.max():.2f}) "
            f"while the steps were measured.")
    if loaded.empty:
        return [Paragraph(line + f" No row above {LOADED_CORES:g} cores.")]
    cells = loaded["cell"].unique().tolist()
    shown = ", ".join(f"`{c}`" for c in cells[:5]) + (f" and {len(cells) - 5} more" if len(cells) > 5 else "")
    return [Paragraph(
        f"**Warning: timings taken under load.** {line} {len(loaded)} of {len(timed)} rows were timed while "
        f"they used more than {LOADED_CORES:g} cores (cells {shown}): their step_seconds, and every time ratio "
        "built on them, are slower than on a quiet machine. Rerun those cells on a quiet machine (`--fresh`, or "
        "a new --out) to compare times. Every table that shows a time marks it (loaded).")]


def host_differences(hosts: dict[str, Any]) -> list[str]:
    """What differs between the hosts' recorded environments (CPU, cores, memory, Python, numpy, BLAS)."""
    facts = {
        "CPU": lambda h: h.get("machine", {}).get("cpu_model"),
        "cores": lambda h: h.get("machine", {}).get("usable_cores"),
        "memory": lambda h: h.get("machine", {}).get("total_memory_bytes"),
        "Python": lambda h: h.get("python", {}).get("version"),
        "numpy": lambda h: h.get("numpy", {}).get("version"),
        "BLAS": lambda h: blas_summary(h.get("numpy", {}).get("blas", {})),
        "memstudy": lambda h: h.get("memstudy_version"),
    }
    return [name for name, fact in facts.items() if len({str(fact(h)) for h in hosts.values()}) > 1]


def hosts(study: Study) -> list[Block]:
    """Timings by host when more than one host measured: bytes compare across hosts, seconds do not."""
    runs = study.runs
    timed = runs[(runs["status"] == "ok") & (runs["host"] != "")]
    names = sorted(timed["host"].unique().tolist())
    if len(names) < 2:
        return []
    recorded = (study.env or {}).get("hosts") or {}
    differ = host_differences({h: recorded[h] for h in names if h in recorded})
    body = []
    for host in names:
        part = timed[timed["host"] == host]
        machine = recorded.get(host, {}).get("machine", {})
        body.append([doc.code(host), part["cell"].nunique(), len(part), machine.get("cpu_model", "—"),
                     doc.num(part["step_seconds"].median(), "ms", 2), doc.ratio(part["foreign_cores"].median())])
    what = f" (they differ in {', '.join(differ)})" if differ else ""
    return [doc.table(["host", "cells", "rows", "CPU", "median step time", "median foreign cores"], body,
                      caption=f"**Warning: timings from {len(names)} hosts{what}.** Byte counts compare across hosts; "
                      "seconds do not: each host's CPU, BLAS and load set its step times, so a time ratio between "
                      "cells measured on different hosts says as much about the hosts as about the cells. Timings "
                      "by host:")]


# --- peak memory ------------------------------------------------------------------------------------------

def peak_ratio_cells(ok_cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(cells at depth × batch with every other varying field fixed, one row per depth × batch that has a train ÷
    inference peak ratio, the fixed fields)."""
    sliced, fixed = fix_others(ok_cells, keep=("depth", "batch_size"))
    ratios = sliced.dropna(subset=["train_inference_peak_ratio"]).drop_duplicates(["depth", "batch_size"])
    return sliced, ratios, fixed


def tied_fields(cells: pd.DataFrame, field: str, vary: list[str]) -> tuple[str, ...]:
    """The varying fields that move in step with `field` (one value of each per value of the other)."""
    return tuple(f for f in vary if f != field and cells.groupby(field)[f].nunique().max() == 1
                 and cells.groupby(f)[field].nunique().max() == 1)


def peak_figures(study: Study) -> list[Block]:
    """Total peak against depth, batch and width (PNG and chart alike), then a chart for each other swept field."""
    ok_cells, vary = study.ok_cells, study.vary
    blocks: list[Block] = []
    sliced, fixed = fix_others(ok_cells, keep=("depth", "batch_size"))
    caption = f" ({describe_fixed(fixed)})" if fixed else ""
    charted: list[str] = []
    if sliced["depth"].nunique() > 1:
        blocks.append(Figure("peak_vs_depth.png", "total peak vs depth", plot(
            FIGURES_MODULE, "peak_lines", sliced, "depth", "batch_size",
            title=f"Total peak vs depth, one line per batch{caption}", logx=True),
            charts.peak_chart(sliced, "depth", fixed, "batch_size" if "batch_size" in vary else None)))
        charted.append("depth")
    if sliced["batch_size"].nunique() > 1:
        blocks.append(Figure("peak_vs_batch.png", "total peak vs batch size", plot(
            FIGURES_MODULE, "peak_lines", sliced, "batch_size", "depth",
            title=f"Total peak vs batch size, one line per depth{caption}", logx=True),
            charts.peak_chart(sliced, "batch_size", fixed, "depth" if "depth" in vary else None)))
        charted.append("batch_size")
    if "width" in vary:
        tied = tied_fields(ok_cells, "width", vary)
        wsliced, wfixed = fix_others(ok_cells, keep=("width", "depth") + tied)
        blocks.append(Figure("peak_vs_width.png", "total peak vs width", plot(
            FIGURES_MODULE, "peak_lines", wsliced, "width", "depth",
            title=f"Total peak vs width, one line per depth ({describe_fixed(wfixed) or 'all'})", logx=True),
            charts.peak_chart(wsliced, "width", wfixed, "depth" if "depth" in vary else None, tied)))
        charted += ["width", *tied]
    sizes = size_fields(ok_cells)
    for field in [f for f in vary if f not in ("mode", "seed")]:
        tied = tied_fields(ok_cells, field, vary)
        if field in charted or any(f in charted for f in tied):
            continue  # a field that moves with one already charted (in_features = width) is not charted twice
        charted.append(field)
        series = next((f for f in ("batch_size", "depth", "width") if f in vary and f != field and f not in tied),
                      None)
        part, fixed = fix_others(ok_cells, keep=(field,) + tied + ((series,) if series else ()))
        chart = charts.peak_chart(part, field, fixed, series, tied, numeric=field in sizes)
        if chart:
            blocks.append(Chart(chart))
    return blocks


def peak_memory(study: Study) -> list[Block]:
    ok_cells = study.ok_cells
    blocks: list[Block] = [Heading("Peak memory")]
    if ok_cells.empty:
        return blocks + [Paragraph("No cell finished, so there is nothing to show.")]
    blocks += peak_figures(study)
    sliced, ratios, fixed = peak_ratio_cells(ok_cells)
    if ratios.empty:
        return blocks + [Paragraph("(No configuration ran in both modes, so there is no train/inference ratio.)")]
    at = f" at {describe_fixed(fixed)}" if fixed else ""
    batches = sorted(ratios["batch_size"].unique().tolist())
    body = []
    for depth in sorted(ratios["depth"].unique().tolist()):
        row: list[Any] = [depth]
        for batch in batches:
            hit = ratios[(ratios["depth"] == depth) & (ratios["batch_size"] == batch)]
            row.append(doc.times(hit["train_inference_peak_ratio"].iloc[0]) if len(hit) else "—")
        body.append(row)
    blocks.append(doc.table(["depth \\ batch"] + [str(b) for b in batches], body,
                            caption=f"Training peak ÷ inference peak (total, ledger){at}; rows are depths, columns "
                            "batch sizes:"))
    peaks = sliced.pivot_table(index=["depth", "batch_size"], columns="mode", values="peak_bytes", aggfunc="median")
    if not peaks.empty:
        modes = [m for m in MODES if m in peaks.columns]
        body = [[d, b] + [doc.nbytes(peaks.loc[(d, b), m]) for m in modes] for d, b in peaks.index]
        blocks.append(doc.table(["depth", "batch"] + [f"{m} peak" for m in modes], body, caption=f"Total peak{at}:"))
    return blocks


# --- activation bytes against what was swept ------------------------------------------------------------------

def size_law(train: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
    """log(activation bytes) = Σ p_f·log(f) + c over the swept sizes f, per group of the other swept fields.

    (the sizes, one entry per group: its fields, cells, exponents by size (None where the group does not vary it
    or it moves with another size), R² on the logarithms, cells left out for holding no activation bytes)."""
    data = train.dropna(subset=["activation_bytes"])
    sizes = size_fields(data) if len(data) else []
    if not sizes:
        return [], []
    split = [f for f in varying_fields(data) if f not in sizes and f != "mode"]  # the other swept fields
    results = []
    groups = data.groupby(split, sort=True) if split else [((), data)]
    for key, part in groups:
        positive = part[part["activation_bytes"] > 0]
        terms = {f: np.log(positive[f].astype(float).to_numpy()) for f in sizes}
        terms["const"] = np.ones(len(positive))
        fit = least_squares(np.log(positive["activation_bytes"].astype(float).to_numpy()), terms)
        key = key if isinstance(key, tuple) else (key,)
        results.append({"group": dict(zip(split, key)), "cells": int(len(positive)),
                        "zero": int(len(part) - len(positive)),
                        "exponents": {f: fit["coef"].get(f) for f in sizes}, "r2": fit["r2"],
                        "dropped": {d: ("is constant here" if positive[d].nunique() < 2 else
                                        "moves in step with another size here")
                                    for d in fit["dropped"] if d != "const"}})
    return sizes, results


def activation_fit(study: Study) -> list[Block]:
    sizes, laws = size_law(study.train_cells)
    if not laws:
        return []
    label = {f: f.replace("_size", "") for f in sizes}
    blocks: list[Block] = [Heading("Activation bytes against what was swept"), Paragraph(
        "Least squares on logarithms, log(activation bytes) = " + " + ".join(f"p_{label[f]}·log({label[f]})"
                                                                            for f in sizes)
        + " + c, over the training cells (medians), one fit per combination of the other swept fields: an "
        "exponent p says that doubling that size, the others equal, multiplies the bytes held for backward by "
        "2^p. It assumes no law of any family; a sum of terms (a per-layer part and a per-example part, say) "
        "bends the line, which an exponent off a round number and R² below 1 show. The family's own findings, "
        "where it has any, fit the terms themselves.")]
    body = []
    notes: dict[str, list[str]] = {}  # note -> the groups it holds for
    for law in laws:
        row: list[Any] = [describe_fixed(law["group"]) or "all", law["cells"]]
        row += [doc.fixed(law["exponents"][f], 3) if law["exponents"][f] is not None else "—" for f in sizes]
        row.append(doc.fixed(law["r2"], 4))
        body.append(row)
        group = describe_fixed(law["group"]) or "all"
        for name, how in law["dropped"].items():
            notes.setdefault(f"{label[name]} {how}, so it has no exponent of its own", []).append(group)
        if law["zero"]:
            notes.setdefault(f"{law['zero']} cells held no activation bytes and are left out of the logarithms",
                             []).append(group)
    blocks.append(doc.table(["group", "cells"] + [f"p ({label[f]})" for f in sizes] + ["R² (log)"], body))
    if notes:
        blocks.append(Bullets(tuple(
            f"{'every group' if len(groups) == len(laws) > 1 else ', '.join(groups)}: {note}."
            for note, groups in notes.items())))
    return blocks


# --- what is live at the peak ----------------------------------------------------------------------------------

def pick_depth_batch(cells: pd.DataFrame) -> tuple[Any, Any] | None:
    """The (depth, batch) a breakdown shows: the middle depth and the batch nearest 256, among those run in both
    modes when there are any."""
    both = cells.groupby(["depth", "batch_size"])["mode"].nunique()
    candidates = both[both == 2].index.tolist() or both.index.tolist()
    if not candidates:
        return None
    depths = sorted({d for d, _ in candidates})
    depth = depths[len(depths) // 2]
    batch = nearest_batch(sorted(b for d, b in candidates if d == depth))
    return depth, batch


def breakdown(study: Study) -> list[Block]:
    if study.ok_cells.empty:
        return []
    sliced, fixed = fix_others(study.ok_cells, keep=("depth", "batch_size"))
    pick = pick_depth_batch(sliced)
    if pick is None:
        return []
    depth, batch = pick
    at = sliced[(sliced["depth"] == depth) & (sliced["batch_size"] == batch)]
    rows = {m: (at[at["mode"] == m].iloc[0] if (at["mode"] == m).any() else None) for m in MODES}
    where = f"depth {depth}, batch {batch}" + (f", {describe_fixed(fixed)}" if fixed else "")
    modes = [m for m in MODES if rows[m] is not None]
    body = [[c.replace("_", " ")] + [doc.nbytes(rows[m].get(f"peak_{c}_bytes")) for m in modes] for c in CATEGORIES
            if any(pd.notna(rows[m].get(f"peak_{c}_bytes")) for m in modes)]  # not a category the rows predate
    body.append([doc.strong("total peak")] + [doc.nbytes(rows[m]["peak_bytes"]) for m in modes])
    return [Heading("What is live at the peak"),
            Figure("breakdown.png", "breakdown at the peak",
                   plot(FIGURES_MODULE, "breakdown", rows["train"], rows["inference"],
                        title=f"What is live at the peak ({where})", generate=rows["generate"]),
                   charts.breakdown_chart(rows, where)),
            doc.table(["category"] + modes, body, caption=f"Ledger bytes by category at the step's peak, {where}:")]


# --- one step over time ----------------------------------------------------------------------------------------

def timeline(study: Study) -> list[Block]:
    blocks: list[Block] = [Heading("One training step over time", anchor="timeline")]
    path = study.out / "timeline.csv"
    if not path.is_file():
        return blocks + [Paragraph("(No timeline.csv in this directory: the sweep writes one for a single training "
                                   "cell; skipped here.)")]
    try:
        events = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        return blocks + [Paragraph(f"(timeline.csv is unreadable: {exc}; skipped.)")]
    if events.empty or not any(f"{c}_bytes" in events.columns for c in CATEGORIES):
        return blocks + [Paragraph("(timeline.csv has no per-category columns; skipped.)")]
    cell = study.timeline_cell
    described = study.describe(cell) if cell else None
    config = study.config_of(cell) if cell else None
    if config is not None and config["mode"] == "generate":
        return [Heading("One generation over time", anchor="timeline")] + generation_timeline(study, events, cell)
    title = "Live bytes by category over one training step" + (f"\n{described or cell}" if cell else "")
    try:
        rows = read_timeline(path)
    except TimelineError:
        rows = []
    chart = charts.timeline_chart(rows, title, names=study.layer_names(cell) if cell else {})
    recompute = "phase" in events.columns and (events["phase"] == "recompute").any()
    blocks.append(Paragraph(
        f"Every allocation and free the ledger saw during one training step{f' of `{cell}`' if cell else ''} "
        f"({len(events)} events), stacked by category: the forward pass stacks up one activation per layer, "
        "backward releases them in reverse order while gradients appear."
        + (" With checkpointing, forward holds only each segment's input, and every shaded `recompute` span "
           "rebuilds one segment's activations just before backward releases them again." if recompute else "")))
    blocks.append(Figure("timeline.png", "live bytes over one training step",
                         plot(FIGURES_MODULE, "timeline", events, title=title), chart))
    return blocks


def generation_timeline(study: Study, events: pd.DataFrame, cell: str) -> list[Block]:
    """A generation's timeline (mode generate): its phases (the prefill, each decode step) shaded in turn, and the
    KV cache's bytes when the first and the last phase end, read from the events."""
    title = f"Live bytes by category over one generation\n{study.describe(cell) or cell}"
    try:
        rows = read_timeline(study.out / "timeline.csv")
    except TimelineError:
        rows = []
    chart = charts.timeline_chart(rows, title, names=study.layer_names(cell))
    spans = [(phase, start, stop) for phase, start, stop in phase_spans(events.to_dict("records"))
             if phase != "baseline"]
    text = (f"Every allocation and free the ledger saw during one generation of `{cell}` ({len(events)} events), "
            "stacked by category, its phases shaded in turn")
    if spans:
        names = [f"`{p}`" for p, _, _ in spans]
        shown = ", ".join(names) if len(names) <= 4 else ", ".join(names[:3]) + ", …, " + names[-1]
        cache = events["kv_cache_bytes"] if "kv_cache_bytes" in events.columns else None
        text += f": {shown} ({len(spans)} phases)."
        if cache is not None:
            first, last = spans[0], spans[-1]
            text += (f" The KV cache is a category of its own: {bytes_text(cache.iloc[first[2] - 1])} when "
                     f"`{first[0]}` ends, {bytes_text(cache.iloc[last[2] - 1])} when `{last[0]}` ends.")
    else:
        text += "."
    return [Paragraph(text), Figure("timeline.png", "live bytes over one generation",
                                    plot(FIGURES_MODULE, "timeline", events, title=title), chart)]


# --- the probes and the prediction ------------------------------------------------------------------------------

def large_steps(runs_ok: pd.DataFrame) -> pd.Series:
    """Rows whose ledger step peak is at least LARGE_STEP_BYTES: where the probes are compared."""
    return runs_ok["step_peak_bytes"] >= LARGE_STEP_BYTES


def agreement(runs_ok: pd.DataFrame) -> list[list[Any]]:
    """Relative error of each probe and prediction against the ledger, per mode and step size, per repeat."""
    body = []
    large = large_steps(runs_ok)
    for quantity, reference, label in AGREEMENT:
        for mode, size, rows in (
            (mode, size, runs_ok[(runs_ok["mode"] == mode) & mask])
            for mode in MODES
            for size, mask in (("≥ 1 MiB", large), ("< 1 MiB", ~large))
        ):
            rel = relative_errors(rows, quantity, reference)
            if not len(rel):
                continue
            magnitude = np.abs(rel)
            body.append([label, mode, size, len(rel), doc.percent(float(np.median(rel))),
                         doc.percent(float(np.median(magnitude)), False), doc.percent(float(np.max(magnitude)), False)])
    return body


def prediction_mismatches(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose prediction differs from the ledger: a `prediction_matches` field that says false, or any
    ledger column beside its predicted column with another value. One row per (cell, repeat, quantity)."""
    found = []
    flag = rows["prediction_matches"] if "prediction_matches" in rows.columns else pd.Series(index=rows.index,
                                                                                                 dtype=object)
    for index, row in rows.iterrows():
        differ = [(label, row[ledger], row[predicted]) for ledger, predicted, label in PREDICTED_PAIRS
                  if pd.notna(row[ledger]) and pd.notna(row[predicted]) and row[ledger] != row[predicted]]
        said = str(flag.get(index, "")).strip().lower()
        if said in ("false", "0") and not differ:
            differ = [("prediction_matches false", float("nan"), float("nan"))]
        for label, measured, predicted in differ:
            found.append({"cell": row["cell"], "repeat": row["repeat"], "quantity": label, "measured": measured,
                          "predicted": predicted})
    return pd.DataFrame(found, columns=["cell", "repeat", "quantity", "measured", "predicted"])


def prediction_check(study: Study) -> list[Block]:
    rows = study.ok_rows
    pairs = rows[[p for ledger, p, _ in PREDICTED_PAIRS]].notna().any(axis=1)
    both = rows[pairs]
    if both.empty:
        return [Paragraph("No finished row carries a prediction, so measured and predicted cannot be compared.")]
    wrong = prediction_mismatches(both)
    if wrong.empty:
        return [Paragraph(f"Measured = predicted: in all {len(both)} rows that carry a prediction, the ledger's total "
                          "peak, step peak and activation bytes equal the predicted ones exactly.")]
    cells = wrong["cell"].nunique()
    rows_wrong = len(wrong[["cell", "repeat"]].drop_duplicates())
    body = [[doc.code(r["cell"]), r["repeat"], r["quantity"], doc.nbytes(r["measured"]), doc.nbytes(r["predicted"]),
             doc.percent((r["predicted"] - r["measured"]) / r["measured"]) if r["measured"] else "—"]
            for _, r in wrong.head(40).iterrows()]
    more = " (the first 40 shown)" if len(wrong) > 40 else ""
    return [doc.table(["cell", "repeat", "quantity", "measured (ledger)", "predicted", "predicted ÷ measured − 1"],
                      body, caption=f"**Warning: measured ≠ predicted** in {rows_wrong} of {len(both)} rows ({cells} "
                      f"cell{'s' if cells > 1 else ''}): the prediction did not follow the engine there{more}:")]


def probes(study: Study) -> list[Block]:
    ok_rows = study.ok_rows
    blocks: list[Block] = [Heading("Do the probes and the prediction agree with the ledger?")]
    body = agreement(ok_rows)
    if not body:
        return blocks + [Paragraph("No finished rows to compare.")]
    blocks.append(Paragraph("Relative error = (probe − ledger) ÷ ledger, over individual repeats (rows with a ledger "
                            "value of 0 count as agreeing when the probe also reads 0)."))
    blocks.append(doc.table(["comparison", "mode", "step peak", "rows", "median error", "median abs. error",
                             "max abs. error"], body))
    blocks += prediction_check(study)
    blocks += [Paragraph(SAMPLING_NOTE), Paragraph(SMALL_STEP_NOTE)]
    if "rss_method" in ok_rows.columns:
        methods = ok_rows["rss_method"].replace("", "unknown").value_counts()
        if len(methods):
            blocks.append(Paragraph(
                "How the RSS step peak was taken: " + ", ".join(f"{m} in {n} rows" for m, n in methods.items())
                + " (vmhwm: the kernel's high-water mark reset before the step, exact to the page; sampled: a "
                "polling thread, which can miss short spikes)."))
    blocks.append(Figure("predicted_vs_measured.png", "measured step peak by probe vs predicted step peak",
                         plot(FIGURES_MODULE, "predicted_vs_measured", ok_rows, SCATTER_PROBES),
                         charts.predicted_chart(ok_rows)))
    return blocks


# --- cells that did not run ----------------------------------------------------------------------------------

def problems(study: Study) -> list[Block]:
    summary, runs = study.summary, study.runs
    bad = summary[summary["status"] != "ok"]
    blocks: list[Block] = [Heading("Skipped and failed cells")]
    if bad.empty:
        return blocks + [Paragraph("None: every cell ran and every repeat finished.")]
    body = []
    for _, cell in bad.iterrows():
        rows = runs[(runs["cell"] == cell["cell"]) & (runs["status"] != "ok")]
        error = rows["error"].iloc[0] if len(rows) else ""
        body.append([doc.code(cell["cell"]), cell["status"], f"{int(cell['ok_repeats'])}/{int(cell['repeats'])}",
                     doc.nbytes(cell["predicted_peak_bytes"]), error])
    return blocks + [doc.table(["cell", "status", "ok repeats", "predicted peak", "reason"], body)]


# the generic report, in order; the findings come after `HEAD` and before `TAIL`
HEAD = (intro, what_was_run, file_problems, timing_load, hosts, measured_only(peak_memory),
        measured_only(activation_fit))
TAIL = (measured_only(breakdown), measured_only(timeline), measured_only(probes), problems)

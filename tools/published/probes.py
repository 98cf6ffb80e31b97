"""The block "How the probes agree": each probe against the ledger, in the default study and across all studies."""
from __future__ import annotations

import numpy as np

from memstudy.units import format_bytes
from memstudy.report.fit import relative_errors
from memstudy.report.formats import percent_text as _pct
from memstudy.report.sections import LARGE_STEP_BYTES, large_steps
from tools.published.results import DEFAULT_STUDY, PROBE_TEST, Results, and_list, row_median


PROBES = (("tracemalloc", "tracemalloc_step_peak_bytes"), ("RSS", "rss_step_peak_bytes"),
          ("memory_profiler", "mprof_step_peak_bytes"))
PREDICTIONS = (("predicted_step_peak_bytes", "step_peak_bytes"), ("predicted_activation_bytes", "activation_bytes"),
               ("predicted_peak_bytes", "peak_bytes"))


def _extreme(rel: np.ndarray) -> float:
    """The signed error of largest magnitude."""
    return float(rel[np.argmax(np.abs(rel))]) if len(rel) else float("nan")


def probes_block(results: Results) -> list[str]:
    # a shape-only study (measure = false) has no ledger to compare its prediction with: measured studies only
    names = [n for n in results.study_names() if results.study(n).ok_rows["step_peak_bytes"].notna().any()]
    studies = [results.study(n) for n in names]
    rows = sum(int(s.ok_rows["step_peak_bytes"].notna().sum()) for s in studies)
    worst = max((float(np.max(np.abs(rel))) for s in studies for q, r in PREDICTIONS
                 if len(rel := relative_errors(s.ok_rows, q, r))), default=float("nan"))
    if worst == 0:
        head = (f"**How the probes agree.** The prediction equals the ledger exactly (step peak, activation bytes and "
                f"total peak) in all {rows} finished rows of the {len(names)} committed studies that measure steps.")
    else:
        head = (f"**How the probes agree.** The prediction differs from the ledger by up to {_pct(worst, False)} over "
                f"the {rows} finished rows of the {len(names)} committed studies that measure steps.")
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
                 f"{_pct(float(np.median(rel)))}), and within "
                 f"{_pct(float(np.max(np.abs(pooled['tracemalloc']))), False)}"
                 f" over the {len(pooled['tracemalloc'])} such steps of all {len(names)} studies. It also sees the few "
                 f"scratch arrays inside ops that the ledger cannot see. `{PROBE_TEST}` asserts "
                 f"{tolerance * 100:g}% on every repeat.")
    rel = errors["RSS"]
    name, extreme = worst_study("RSS")
    methods = sorted(set(large["rss_method"]))
    how = "VmHWM reset before the step" if methods == ["vmhwm"] else "taken by " + and_list(methods)
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
    rss = row_median(inference, "rss_step_peak_bytes") if inference else None
    example = (f", so the example step's inference RSS figure (README, Quick start) reads {format_bytes(rss)}"
               if rss is not None and rss < 0.5 * row_median(inference, "step_peak_bytes") else "")
    lines += ["", f"Below {format_bytes(LARGE_STEP_BYTES)} the sampled probes lose meaning. Buffers under glibc's mmap "
              "threshold come from the heap, where freed chunks are reused without touching RSS" + example
              + ". The report shows both size classes."]
    return lines

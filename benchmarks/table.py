"""bench.csv -> a markdown report (bench.md).

`python -m benchmarks.table [bench.csv]` prints the report again; `python -m benchmarks.table --readme [bench.csv]`
rewrites README.md's bench block (targets, speed table, memory and start-up figures) from bench.csv.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterable

COLUMNS = (
    "figure", "depth", "width", "batch_size", "dtype", "activation", "bias", "value", "unit", "target", "met",
    "measured", "reference", "measured_label", "reference_label", "samples", "round_min", "round_max",
    "foreign_cores", "measured_faults_per_step", "reference_faults_per_step", "status", "note",
)
SPEED = ("engine_vs_numpy", "minimal_vs_numpy", "engine_vs_minimal", "ledger_overhead", "tracemalloc_overhead",
         "engine_vs_torch", "floor_vs_torch")
CNN = ("cnn_engine_vs_numpy", "cnn_engine_vs_torch", "cnn_floor_vs_torch")
CNN_ALGOS = ("cnn_engine_vs_torch", "cnn_batched_vs_torch", "cnn_auto_vs_torch")  # one per conv_algo
MEMORY = ("activation_bytes_vs_torch", "inference_peak_vs_floor", "inference_traced_peak_vs_floor")
GPT = ("gpt_engine_vs_numpy", "gpt_engine_vs_torch", "gpt_floor_vs_torch")
GPT_OPS = ("gpt_ops_memstudy", "gpt_ops_torch")
GPT_CHECKPOINT = ("gpt_checkpoint_selective", "gpt_checkpoint_sqrt", "gpt_checkpoint_every:1")
PROCESS = ("python_startup_seconds", "numpy_import_seconds", "cell_import_seconds", "predict_seconds",
           "predict_traced_mb", "predict_mlp_depth1000_seconds", "predict_mlp_depth1000_every_block_seconds",
           "predict_mlp_depth100000_seconds", "predict_gpt2_small_seconds", "predict_gpt80_seconds",
           "predict_llama70b_seconds", "predict_cli_llama70b_seconds", "predict_cli_gpt2_small_seconds",
           "sweep_cells_per_second", "study_wall_seconds", "study_seconds_new_vs_old",
           "make_study_fresh_clone_seconds")
SWEEP = ("sweep_jobs1_cells_per_second", "sweep_jobs2_cells_per_second", "sweep_cluster2_cells_per_second")
SWEEP_LABELS = dict(zip(SWEEP, ("--jobs 1", "--jobs 2", "--cluster local:2")))

Row = dict[str, str]


def read_csv(path: str | Path) -> list[Row]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _targets_sentence(rows: list[Row], figures: Iterable[str]) -> str:
    """'engine_vs_numpy ≤ 1.1 at (4, 512, 256) and (16, 256, 128), ≤ 1.3 at (4, 64, 32); ...' from the rows'
    own `target` column (benchmarks.run.target is the one place the bounds are set)."""
    parts = []
    for figure in figures:
        sizes: dict[str, list[str]] = {}  # target -> the sizes it applies to, in row order
        every = set()
        for row in rows:
            if row["figure"] != figure:
                continue
            size = f"({row['depth']}, {row['width']}, {row['batch_size']})"
            every.add(size)
            if row["target"] and size not in sizes.setdefault(row["target"], []):
                sizes[row["target"]].append(size)
        if len(sizes) == 1 and len(next(iter(sizes.values()))) == len(every):
            parts.append(f"{figure} {_bound(next(iter(sizes)))}")
        elif sizes:
            parts.append(f"{figure} " + ", ".join(f"{_bound(goal)} at {' and '.join(at)}" for goal, at in sizes.items()))
    return "; ".join(parts) if parts else "none recorded"


def _bound(goal: str) -> str:
    """'<= 1.3' -> '≤ 1.3'."""
    op, value = goal.split()
    return f"{'≤' if op == '<=' else op} {value}"


def _f(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _mark(row: Row) -> str:
    return {"yes": " ✓", "no": " ✗"}.get(row.get("met", ""), "")


def _ratio_cell(row: Row | None, spread: bool = True) -> str:
    if row is None:
        return ""
    if row["status"] != "ok":
        return row["status"]
    value = _f(row["value"])
    text = f"{value:.3f}{_mark(row)}"
    low, high = _f(row["round_min"]), _f(row["round_max"])
    if spread and low is not None and high is not None:
        text += f" ({low:.2f}–{high:.2f})"
    return text


def _ms(text: str) -> str:
    value = _f(text)
    return "" if value is None else f"{value * 1e3:.3f}"


def _size(row: Row) -> str:
    return f"({row['depth']}, {row['width']}, {row['batch_size']})"


def _unique(values: Iterable[tuple]) -> list[tuple]:
    seen: list[tuple] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _faults(value: str) -> str:
    number = _f(value)
    if number is None:
        return "–"
    return f"{number:.0f}" if number >= 10 else f"{number:.1f}"


def _heap_sentence(heap: str | None) -> str:
    if heap == "warm":
        return ("Heap: every timing process (this one, and PyTorch's worker) first allocated and freed one 24 MiB "
                "buffer, so glibc serves the steps' buffers from its heap, as in any long-running training "
                "process (`--heap warm`, see benchmarks/heap.py); page faults per step show that state.")
    if heap == "default":
        return ("Heap: each process as it came (`--heap default`): glibc hands freed memory back and faults it in "
                "again, a minor page fault per 4 KiB, and how often depends on what the process freed before.")
    return ""


def speed_table(rows: list[Row], env: dict | None = None) -> list[str]:
    """The speed table and its notes; `env` is the run's env.json (its heap mode and the machine's cores)."""
    heap, cores = heap_mode(env), logical_cores(env)
    by_key = {(r["figure"], _size(r), r["dtype"]): r for r in rows if r["figure"] in SPEED}
    keys = _unique((_size(r), r["dtype"]) for r in rows if r["figure"] in SPEED)
    if not keys:
        return []
    lines = [
        "| MLP (depth, width, batch) | dtype | memstudy ms | numpy ms | engine_vs_numpy | minimal_vs_numpy "
        "| engine_vs_minimal | ledger_overhead | tracemalloc_overhead | torch ms | engine_vs_torch | floor_vs_torch "
        "| page faults / step (memstudy · numpy · torch) | others' load (cores) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for size, dtype in keys:
        get = lambda figure: by_key.get((figure, size, dtype))  # noqa: E731
        numpy_row, torch_row = get("engine_vs_numpy"), get("engine_vs_torch")
        lines.append("| " + " | ".join([
            size, dtype,
            _ms(numpy_row["measured"]) if numpy_row else "", _ms(numpy_row["reference"]) if numpy_row else "",
            _ratio_cell(numpy_row), _ratio_cell(get("minimal_vs_numpy")), _ratio_cell(get("engine_vs_minimal")),
            _ratio_cell(get("ledger_overhead")), _ratio_cell(get("tracemalloc_overhead")),
            _ms(torch_row["reference"]) if torch_row and torch_row["status"] == "ok" else "",
            _ratio_cell(torch_row), _ratio_cell(get("floor_vs_torch")),
            " · ".join([_faults(numpy_row["measured_faults_per_step"]) if numpy_row else "–",
                        _faults(numpy_row["reference_faults_per_step"]) if numpy_row else "–",
                        _faults(torch_row["reference_faults_per_step"]) if torch_row else "–"]),
            numpy_row["foreign_cores"] if numpy_row else "",
        ]) + " |")
    samples = next((r["samples"] for r in rows if r["figure"] == "engine_vs_numpy" and r["samples"]), "?")
    lines += [
        "",
        "Step times (ms) are medians over all steps of interleaved blocks (the `samples` column of bench.csv, "
        f"e.g. {samples} steps per variant at the first size). A ratio is measured / reference, lower is "
        "faster: the median over rounds of the ratio of the two variants' block medians in that round, with "
        "the lowest and highest round in brackets. minimal_vs_numpy times the same step through a minimal "
        "autograd (benchmarks/minimal_engine.py: one node per op, none of memstudy's features), so engine_vs_numpy "
        "≈ minimal_vs_numpy (what recording a graph in Python costs at all) × engine_vs_minimal (what memstudy adds "
        "on top: ledger hooks, saved-tensor policies, the save door with roles, the ufunc-buffer scope, modules). "
        f"Targets (the `target` column): {_targets_sentence(rows, ('engine_vs_numpy', 'ledger_overhead', 'engine_vs_torch'))} "
        "(floor_vs_torch, the numpy floor "
        "against torch, has no target: it shows what numpy's BLAS allows in that run). A timed step is one loop "
        "iteration: gradients set to None, forward, cross-entropy, backward, SGD. ReLU, with bias. "
        "Others' load: the average number of cores other processes kept busy while that size was timed "
        + (f"(this machine has {cores})" if cores else "(the machine's core count was not recorded)")
        + "; above about 0.15 the figures are disturbed and the size was timed again "
        "(up to --retries times, the quietest attempt kept). " + _heap_sentence(heap),
    ]
    skipped = next((r for r in rows if r["figure"] == "engine_vs_torch" and r["status"] != "ok"), None)
    if skipped is not None:
        lines += ["", f"engine_vs_torch {skipped['status']}: {skipped['note']}."]
    return lines


def cnn_table(rows: list[Row]) -> list[str]:
    """The CNN step's speed figures (benchmarks.cnn), one line per size and dtype."""
    by_key = {(r["figure"], _size(r), r["dtype"]): r for r in rows if r["figure"] in CNN}
    keys = _unique((_size(r), r["dtype"]) for r in rows if r["figure"] in CNN)
    if not keys:
        return []
    lines = ["| CNN (depth, width, batch) | dtype | memstudy ms | numpy ms | cnn_engine_vs_numpy | torch ms "
             "| cnn_engine_vs_torch | cnn_floor_vs_torch | others' load (cores) |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for size, dtype in keys:
        get = lambda figure: by_key.get((figure, size, dtype))  # noqa: E731
        numpy_row, torch_row = get("cnn_engine_vs_numpy"), get("cnn_engine_vs_torch")
        lines.append("| " + " | ".join([
            size, dtype, _ms(numpy_row["measured"]) if numpy_row else "", _ms(numpy_row["reference"]) if numpy_row
            else "", _ratio_cell(numpy_row), _ms(torch_row["reference"]) if torch_row and torch_row["status"] == "ok"
            else "", _ratio_cell(torch_row), _ratio_cell(get("cnn_floor_vs_torch")),
            numpy_row["foreign_cores"] if numpy_row else "",
        ]) + " |")
    note = next((r["note"] for r in rows if r["figure"] == "cnn_engine_vs_numpy"), "")
    lines += ["", f"A CNN training step ({note}) against the same step by hand in numpy (benchmarks/cnn_reference.py; "
                  "target ≤ 1.15) and against PyTorch CPU in its own process; measured like the MLP's figures."]
    algos = [r for r in rows if r["figure"] in CNN_ALGOS and r["status"] == "ok"]
    if len(algos) > 1:  # a bench.csv from before conv_algo has the default's row only
        lines += ["", "Each convolution algorithm (`conv_algo`) in the same run, against PyTorch (target ≤ 1.3):", "",
                  "| figure | memstudy ms | torch ms | ÷ torch | what ran, workspace (ledger) | others' load (cores) |",
                  "|---|--:|--:|--:|---|--:|"]
        for r in algos:
            ran = next((part for part in r["note"].split("; ") if part.startswith("conv_algo ran")), "")
            lines.append(f"| {r['figure']} | {_ms(r['measured'])} | {_ms(r['reference'])} | {_ratio_cell(r)} | "
                         f"{ran[len('conv_algo ran '):]} | {r['foreign_cores']} |")
    return lines


def memory_summary(rows: list[Row]) -> list[str]:
    """One line per memory target: how many configurations meet it, and the range of ratios."""
    mem = [r for r in rows if r["figure"] in MEMORY]
    lines = []
    for figure, label in (("activation_bytes_vs_torch", "training activation bytes equal PyTorch's saved bytes"),
                          ("inference_peak_vs_floor", "inference step peak within 1.05 × the two-activation floor")):
        judged = [r for r in mem if r["figure"] == figure and r["met"]]
        if judged:
            values = [float(r["value"]) for r in judged]
            lines.append(f"- {label}: {sum(r['met'] == 'yes' for r in judged)} of {len(judged)} configurations "
                         f"(ratios {min(values):.3f}–{max(values):.3f})")
        elif any(r["figure"] == figure for r in mem):
            lines.append(f"- {label}: not measured ({next(r['status'] for r in mem if r['figure'] == figure)})")
    return lines


def memory_table(rows: list[Row]) -> list[str]:
    mem = [r for r in rows if r["figure"] in MEMORY]
    if not mem:
        return []
    by_key = {(r["figure"], _size(r), r["dtype"], r["activation"], r["bias"]): r for r in mem}
    keys = _unique((_size(r), r["dtype"], r["activation"], r["bias"]) for r in mem)
    lines = memory_summary(rows)
    lines += [
        "",
        "| MLP (depth, width, batch) | dtype | activation | bias | memstudy activation bytes | torch saved bytes "
        "| ratio | inference ledger peak / floor | inference traced peak / floor |",
        "|---|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for key in keys:
        act = by_key.get(("activation_bytes_vs_torch", *key))
        infer = by_key.get(("inference_peak_vs_floor", *key))
        traced = by_key.get(("inference_traced_peak_vs_floor", *key))
        lines.append("| " + " | ".join([
            *key, act["measured"] if act else "", act["reference"] if act and act["status"] == "ok" else "",
            _ratio_cell(act, spread=False), _ratio_cell(infer, spread=False), _ratio_cell(traced, spread=False),
        ]) + " |")
    example = next((r for r in mem if r["figure"] == "activation_bytes_vs_torch"), None)
    lines += [
        "",
        "memstudy activation bytes: the ledger's `activation_bytes` of a steady-state training step (buffers held "
        "for backward, each once; the input x and labels are `input`, parameters `parameter`). torch saved bytes: "
        "every storage PyTorch's autograd saves in forward (`saved_tensors_hooks`, each storage once) that is not a "
        "parameter, the input x, the labels or a 0-d scalar, i.e. the hidden activations plus log_softmax's "
        "output. Target: equal (ratio 1). Inference floor: 2 × batch × width × itemsize (the two largest "
        "adjacent activations); target ≤ 1.05 for the ledger's step peak (tracemalloc's, shown for reference, "
        "also sees the logits and each op's hidden scratch).",
    ]
    if example is not None and example["note"]:
        lines += ["", f"Example ({_size(example)}, {example['dtype']}, {example['activation']}, "
                      f"bias {example['bias']}): {example['note']}."]
    return lines


def gpt_table(rows: list[Row]) -> list[str]:
    """The GPT step against the numpy floor and PyTorch, side by side, and where each step's time goes."""
    by_figure = {r["figure"]: r for r in rows if r["figure"] in GPT + GPT_OPS + GPT_CHECKPOINT}
    first = next((by_figure[f] for f in GPT if f in by_figure), None)
    if first is None:
        return []
    numpy_row, torch_row = by_figure.get("gpt_engine_vs_numpy"), by_figure.get("gpt_engine_vs_torch")
    lines = [
        "| GPT (depth, width, batch) | dtype | memstudy ms | numpy ms | torch ms | gpt_engine_vs_numpy "
        "| gpt_engine_vs_torch | gpt_floor_vs_torch | others' load (cores) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        "| " + " | ".join([
            _size(first), first["dtype"], _ms(numpy_row["measured"]) if numpy_row else "",
            _ms(numpy_row["reference"]) if numpy_row else "",
            _ms(torch_row["reference"]) if torch_row and torch_row["status"] == "ok" else "",
            _ratio_cell(numpy_row), _ratio_cell(torch_row), _ratio_cell(by_figure.get("gpt_floor_vs_torch")),
            first["foreign_cores"]]) + " |",
        "",
        f"{first['note'].split(';')[0]}. A timed step: gradients set to None, forward, next-token cross-entropy, "
        "backward, SGD. The numpy floor is the same step written by hand (benchmarks/gpt_reference.py); PyTorch "
        "runs the same explicit attention (benchmarks/torch_gpt.py) in its own process. Target: "
        "gpt_engine_vs_numpy ≤ 1.15; gpt_engine_vs_torch has none and is read beside gpt_floor_vs_torch, what "
        "numpy itself allows against PyTorch.",
    ]
    timed = [by_figure[f] for f in GPT_CHECKPOINT if f in by_figure and by_figure[f]["status"] == "ok"]
    if timed:
        lines += ["", "Checkpointing, timed side by side with the plain step (step ÷ plain step; activation bytes "
                      "from the ledger): " + "; ".join(
                          f"`{r['figure'].removeprefix('gpt_checkpoint_')}` {_ratio_cell(r)}, "
                          f"{r['note'].split('; ', 1)[-1]}" for r in timed) + "."]
    for figure, label in (("gpt_ops_memstudy", "memstudy"), ("gpt_ops_torch", "PyTorch")):
        r = by_figure.get(figure)
        if r is not None and r["status"] == "ok":
            lines += ["", f"Where a {label} step's time goes (share of a profiled step, largest first): "
                          f"{r['note'].split('; ', 1)[-1]}."]
    return lines


def process_table(rows: list[Row]) -> list[str]:
    proc = [r for r in rows if r["figure"] in PROCESS]
    if not proc:
        return []
    lines = ["| figure | value | target | range / parts | others' load (cores) | note |", "|---|--:|---|---|--:|---|"]
    for r in proc:
        if r["status"] == "skipped":
            lines.append(f"| {r['figure']} | skipped | {r['target']} | | | {r['note']} |")
            continue
        value = _f(r["value"])
        unit = r["unit"]
        shown = f"{value:.3f} {unit}{_mark(r)}" if value is not None else r["status"]
        if r["figure"] == "study_wall_seconds":
            parts = f"sweep {float(r['measured']):.1f} s + report {float(r['reference']):.1f} s"
        elif r["figure"] == "predict_traced_mb":
            parts = f"{int(r['measured']):,} bytes traced at {_size(r)}"
        elif r["figure"] == "sweep_cells_per_second":
            parts = f"{r['measured']} cells in {float(r['reference']):.1f} s"
        elif r["figure"] in ("study_seconds_new_vs_old", "make_study_fresh_clone_seconds"):
            parts = (f"{r['measured_label'].removesuffix(' s')} {float(r['measured']):.1f} s; "
                     f"{r['reference_label'].removesuffix(' s')} {float(r['reference']):.1f} s")
        else:
            parts = f"{float(r['round_min']):.3f}–{float(r['round_max']):.3f} s over {r['samples']} runs"
        note = r["note"] if r["status"] == "ok" else f"{r['status']}: {r['note']}"
        lines.append(f"| {r['figure']} | {shown} | {r['target']} | {parts} | {r['foreign_cores']} | {note} |")
    return lines


def sweep_table(rows: list[Row]) -> list[str]:
    """One spec swept three ways, side by side, and what the Dask cluster adds (benchmarks.run.sweep_rows)."""
    by = {r["figure"]: r for r in rows}
    ran = [by[f] for f in SWEEP if f in by and by[f]["status"] != "skipped"]
    if not ran:
        skipped = [by[f] for f in SWEEP if f in by]
        return [f"Sweep executors: skipped ({skipped[0]['note']})."] if skipped else []
    lines = ["| executor | cells | wall | cells / s | others' load (cores) | note |", "|---|--:|--:|--:|--:|---|"]
    for r in ran:
        value = _f(r["value"])
        shown = f"{value:.3f}" if value is not None and r["status"] == "ok" else r["status"]
        lines.append(f"| {SWEEP_LABELS[r['figure']]} | {r['measured']} | {float(r['reference']):.1f} s | {shown} | "
                     f"{r['foreign_cores']} | {r['note']} |")
    fixed, per_cell = by.get("cluster_fixed_seconds"), by.get("cluster_seconds_per_cell")
    if fixed and per_cell and _f(fixed["value"]) is not None and _f(per_cell["value"]) is not None:
        lines += ["", f"The cluster adds {_f(fixed['value']):.2f} s once (a resume with nothing to run: "
                      f"{_f(fixed['measured']):.2f} s on local:2 against {_f(fixed['reference']):.2f} s locally) and "
                      f"{1000 * _f(per_cell['value']):.0f} ms per cell (local:2 against --jobs 2, less the fixed "
                      "part)."]
    return lines


def targets_summary(rows: list[Row]) -> list[str]:
    judged = [r for r in rows if r["met"] in ("yes", "no")]
    if not judged:
        return []
    missed = [r for r in judged if r["met"] == "no"]
    lines = [f"{len(judged) - len(missed)} of {len(judged)} figures with a target meet it."]
    for r in missed:
        value, bound = _f(r["value"]), _f(r["target"].split()[-1])
        where = f" at {_size(r)} {r['dtype']}" if r["depth"] else ""
        extra = f" {r['activation']}, bias {r['bias']}" if r["figure"] in MEMORY else ""
        by = f", {100 * (value / bound - 1):+.1f}%" if value is not None and bound else ""
        lines.append(f"- missed: {r['figure']}{where}{extra}: {value:.4g} vs target {r['target']}{by}")
    return lines


def read_env(env_path: Path) -> dict | None:
    """A run's provenance (env.json beside bench.csv), or None if it is missing or unreadable."""
    try:
        env = json.loads(env_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return env if isinstance(env, dict) else None


def heap_mode(env: dict | None) -> str | None:
    """The --heap mode the run recorded (env.json's bench.heap), or None."""
    bench = (env or {}).get("bench")
    return bench.get("heap") if isinstance(bench, dict) else None


def logical_cores(env: dict | None) -> int | None:
    """The logical cores of the machine the run measured on (env.json's machine.logical_cores), or None."""
    machine = (env or {}).get("machine")
    cores = machine.get("logical_cores") if isinstance(machine, dict) else None
    return cores if isinstance(cores, int) and cores > 0 else None


def attention_table(rows: list[Row]) -> list[str]:
    """The GPT step with the fused attention against the eager ops (benchmarks.flash_bench), with the load."""
    row = next((r for r in rows if r["figure"] == "flash_step_vs_eager_gpt" and r["status"] == "ok"), None)
    if row is None:
        return []
    return ["| GPT (depth, width, batch) | dtype | flash ms | eager ms | flash_step_vs_eager_gpt | others' load (cores) |",
            "|---|---|--:|--:|--:|--:|",
            "| " + " | ".join([_size(row), row["dtype"], _ms(row["measured"]), _ms(row["reference"]), _ratio_cell(row),
                              row["foreign_cores"]]) + " |",
            "", f"{row['note']}. `attention = flash` (one fused op, scores recomputed in backward in key tiles) against "
                "the eager attention ops, timed side by side; no target."]


def render(rows: list[Row], env: dict | None = None) -> str:
    """The report; `env` is the run's env.json (heap mode and cores are named under the speed table)."""
    out = ["# memstudy benchmarks", "",
           "Generated by `python -m benchmarks` (or `make bench`) from bench.csv; the machine, versions, BLAS "
           "and threads are in env.json.", ""]
    for title, lines in (("Targets", targets_summary(rows)), ("Speed", speed_table(rows, env)),
                         ("Memory", memory_table(rows)), ("GPT", gpt_table(rows)),
                         ("Attention", attention_table(rows)), ("CNN speed", cnn_table(rows)),
                         ("Start-up and study", process_table(rows)), ("Sweep executors", sweep_table(rows))):
        if lines:
            out += [f"## {title}", "", *lines, ""]
    return "\n".join(out)


def readme_lines(rows: list[Row], env: dict | None = None) -> list[str]:
    """What docs/performance.md shows in its `published:bench` block (tools.published writes it): targets, the speed
    table, memory and start-up figures."""
    parts = [*targets_summary(rows), "", *speed_table(rows, env), ""]
    cnn = cnn_table(rows)
    if cnn:
        parts += ["CNN:", "", *cnn, ""]
    memory = memory_summary(rows)
    if memory:
        parts += ["Memory:", "", *memory, ""]
    gpt = gpt_table(rows)
    if gpt:
        parts += ["GPT:", "", *gpt, ""]
    attention = attention_table(rows)
    if attention:
        parts += ["Attention:", "", *attention, ""]
    process = process_table(rows)
    if process:
        parts += ["Start-up and study:", "", *process, ""]
    sweep = sweep_table(rows)
    if sweep:
        parts += ["Sweep executors (the same spec with local processes and on a local Dask cluster):", "", *sweep, ""]
    return parts


def main(argv: list[str]) -> int:
    args = argv[1:]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: python -m benchmarks.table [bench.csv]  (docs/performance.md's block: make readme)",
              file=sys.stderr)
        return 2
    path = Path(args[0]) if args else Path("results") / "bench" / "bench.csv"
    try:
        rows = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"benchmarks.table: cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc}",
              file=sys.stderr)
        return 2
    sys.stdout.write(render(rows, read_env(path.parent / "env.json")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

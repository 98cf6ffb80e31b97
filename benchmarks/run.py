"""`python -m benchmarks`: speed and overhead figures of memstudy, written to results/bench/.

Figures (one CSV row each; ratios are measured side by side in one run, see benchmarks.timing):
  engine_vs_numpy         memstudy training step / the same step by hand in plain numpy (the floor)
  minimal_vs_numpy        the same step through a minimal autograd (benchmarks.minimal_engine: one node per op,
                          none of memstudy's features) / the numpy floor: what recording a graph costs at all
  engine_vs_minimal       memstudy step / the minimal engine's: what memstudy's features add on top
  ledger_overhead         step with the memory ledger on (register, record, finish) / ledger off
  tracemalloc_overhead    step with tracemalloc tracing / tracing off
  engine_vs_torch         memstudy step / PyTorch CPU step, same threads (torch in its own process)
  floor_vs_torch          the numpy floor's step / PyTorch's (no target: what numpy's BLAS allows against torch's)
  cnn_engine_vs_numpy, cnn_engine_vs_torch, cnn_floor_vs_torch   the same for a CNN step (benchmarks.cnn), and
  cnn_batched_vs_torch, cnn_auto_vs_torch   the other conv_algos against torch
  activation_bytes_vs_torch   ledger activation_bytes of a training step / what PyTorch's autograd saves
                          (saved_tensors_hooks, each storage once), less parameters, input x, labels, 0-d scalars
  inference_peak_vs_floor ledger step peak of an inference step / 2 × batch × width × itemsize
  inference_traced_peak_vs_floor   the same from tracemalloc (no target: it sees the output and hidden scratch)
  sweep_cells_per_second  `memstudy sweep SPEC` into a temporary folder
  sweep_jobs1_cells_per_second, sweep_jobs2_cells_per_second, sweep_cluster2_cells_per_second
                          the same spec with --jobs 1, --jobs 2 and --cluster local:2 (two Dask workers), side by side
  cluster_fixed_seconds   what --cluster local:2 adds once: a sweep with nothing left to run, on the cluster minus
                          locally (start and stop of the workers, every host's provenance)
  cluster_seconds_per_cell   what it adds per cell: (cluster − jobs 2 − fixed) ÷ cells (a task's round trip)
  study_wall_seconds      the sweep plus `memstudy report` (what `make study` runs, into a temporary folder)
  make_study_fresh_clone_seconds   `make study` on a fresh clone, install included (benchmarks.study_speed)
  study_seconds_new_vs_old   studies swept with today's code (main's merge base) and this checkout, side by side:
                          wall-time ratio, identical ledger and predicted columns, the probes' agreement
                          (benchmarks.study_compare)
  python_startup_seconds, numpy_import_seconds, cell_import_seconds   `python -c ...` wall time, median
  gpt_engine_vs_numpy, gpt_engine_vs_torch, gpt_floor_vs_torch, gpt_ops_*   the GPT step (benchmarks.gpt_bench)
  predict_seconds, predict_traced_mb   predicting a depth-96, width-12288, batch-2048 Adam step (232 GB)
                          on shape-only arrays, in-process: median seconds, tracemalloc peak (benchmarks.predict_cost)
  predict_mlp_depth1000_seconds, predict_mlp_depth100000_seconds, predict_gpt2_small_seconds, predict_gpt80_seconds,
  predict_llama70b_seconds    predicting deep models with repeated blocks predicted once (and the depth-1000 MLP with
                          every block run: predict_mlp_depth1000_every_block_seconds), median seconds
  predict_cli_llama70b_seconds, predict_cli_gpt2_small_seconds   the same from `memstudy predict --hf-config`,
                          a fresh process each (benchmarks.predict_cost.CLI)
  plan_llama8b_seconds    `memstudy plan` over Llama-3-8B on 8 x 80 GB with the CLI's defaults (benchmarks.plan_bench;
                          528 configurations; target 60 s), one in-process timing (not in --quick)
  bf16_step_vs_float32_gpt, bf16_step_vs_float32_mlp, bf16_mixed_step_vs_float32_gpt, fp16_step_vs_float32_gpt
                          a 16-bit step (emulated on numpy) / the float32 step, side by side
                          (benchmarks.precision_bench)
  flash_step_vs_eager_gpt  a GPT step with attention flash (the fused op) / with the eager attention ops, side by
                          side, no target (benchmarks.flash_bench)

A timed step is one training-loop iteration: gradients set to None (last step's freed), forward, mean
cross-entropy, backward, SGD update. The plain numpy step frees its gradients inside its step too.
Every timing process runs as a user's process comes (`--heap default`): memstudy's Workload warms glibc's heap
before its first step (memstudy/measure/heap.py), PyTorch's import already did, and the numpy
floor shares memstudy's process. `--heap warm` is the companion run in which every timing process first allocates
and frees one 24 MiB buffer (benchmarks.heap). Every speed row carries the minor page faults per step of the two
variants it compares.
Every timed row carries `foreign_cores`, the cores other processes kept busy meanwhile (benchmarks.load):
on a shared 2-core machine a size is timed again while that exceeds --quiet-cores.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from memstudy.config import normalize
from memstudy.measure import probes
from memstudy.measure.workload import Workload
from memstudy.run.results.provenance import collect_env, git_info, write_json

from . import gpt_bench, plan_bench, predict_cost, table
from .harness import Settings, engine_variant, time_variants, torch_missing_row
from .heap import HEAP_MODES, HEAP_WARMUP_BYTES, warm_up_heap
from .load import ForeignLoad, wait_until_quiet
from .minimal_engine import MinimalMLP
from .reference import NumpyMLP

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((4, 512, 256), (16, 256, 128), (4, 64, 32))  # (depth, width, batch)
LARGE_SIZES = SIZES[:2]
DTYPES = ("float32", "float64")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
CLASSES = 10
SECTIONS = ("speed", "memory", "gpt", "cnn", "precision", "flash", "startup", "study", "sweep", "newcomer", "compare")
SWEEP_EXECUTORS = (("jobs1", ["--jobs", "1"], "--jobs 1"), ("jobs2", ["--jobs", "2"], "--jobs 2"),
                   ("cluster2", ["--cluster", "local:2"], "--cluster local:2"))
COLUMNS = table.COLUMNS
TORCH_HINT = "pip install memstudy[torch] (torch==2.13.0, CPU)"


def torch_note(worker: "TorchWorker | None") -> str:
    """Why the PyTorch figures are skipped."""
    if worker is None:
        return f"skipped (--no-torch); for these figures: {TORCH_HINT}"
    if worker.failed:
        return f"torch worker failed ({worker.failed}); {TORCH_HINT}"
    return f"torch unavailable ({worker.info.get('reason', '?')}): {TORCH_HINT}"


# --- targets ----------------------------------------------------------------------------------------

def target(figure: str, size: tuple[int, int, int] | None = None) -> tuple[str, float] | None:
    """(operator, bound) of a figure's target, or None when the issue sets none."""
    if figure == "engine_vs_numpy":
        return ("<=", 1.10) if size in LARGE_SIZES else ("<=", 1.3)
    if figure == "engine_vs_torch":
        return ("<=", 1.0)
    if figure == "cnn_engine_vs_torch":  # issue 28 item 2
        return ("<=", 1.3)
    if figure in ("gpt_engine_vs_numpy", "cnn_engine_vs_numpy"):
        return ("<=", 1.15)
    if figure == "ledger_overhead":
        return ("<=", 1.05) if size in LARGE_SIZES else None
    if figure == "activation_bytes_vs_torch":
        return ("==", 1.0)
    if figure == "inference_peak_vs_floor":
        return ("<=", 1.05)
    if figure == "cell_import_seconds":
        return ("<=", 0.25)
    if figure == "study_wall_seconds":
        return ("<=", 180.0)
    if figure == "make_study_fresh_clone_seconds":  # issue 28 item 6
        return ("<=", 90.0)
    if figure == "study_seconds_new_vs_old":  # issue 28 item 1
        return ("<=", 0.5)
    if figure == "predict_seconds":
        return ("<=", 1.0)
    if figure == "predict_traced_mb":
        return ("<=", 10.0)
    if figure in predict_cost.DEEP and predict_cost.DEEP[figure][2] is not None:
        return ("<=", predict_cost.DEEP[figure][2])
    if figure in predict_cost.CLI and predict_cost.CLI[figure][1] is not None:
        return ("<=", predict_cost.CLI[figure][1])
    if figure in ("bf16_step_vs_float32_gpt", "bf16_step_vs_float32_mlp"):
        return ("<=", 2.0)
    if figure == "plan_llama8b_seconds":
        return ("<=", plan_bench.TARGET_SECONDS)
    return None


def make_row(figure: str, value: float | None, unit: str, *, size=None, dtype="", activation="", bias="",
             measured=None, reference=None, measured_label="", reference_label="", samples="",
             round_min=None, round_max=None, foreign_cores=None, status="ok", note="",
             measured_faults_per_step=None, reference_faults_per_step=None) -> dict[str, Any]:
    goal = target(figure, size)
    met = ""
    if goal is not None and value is not None and status == "ok":
        op, bound = goal
        met = "yes" if (value <= bound if op == "<=" else value == bound) else "no"
    depth, width, batch = size if size is not None else ("", "", "")
    return {
        "figure": figure, "depth": depth, "width": width, "batch_size": batch, "dtype": dtype,
        "activation": activation, "bias": bias, "value": _num(value), "unit": unit,
        "target": "" if goal is None else f"{goal[0]} {goal[1]:g}", "met": met,
        "measured": _num(measured), "reference": _num(reference), "measured_label": measured_label,
        "reference_label": reference_label, "samples": samples, "round_min": _num(round_min),
        "round_max": _num(round_max), "foreign_cores": _num(None if foreign_cores is None else round(foreign_cores, 3)),
        "measured_faults_per_step": _num(measured_faults_per_step),
        "reference_faults_per_step": _num(reference_faults_per_step),
        "status": status, "note": note,
    }


def _num(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def config_for(size: tuple[int, int, int], dtype: str, activation: str = "relu", bias: bool = True,
               mode: str = "train") -> dict[str, Any]:
    depth, width, batch = size
    return normalize({"depth": depth, "width": width, "batch_size": batch, "out_features": CLASSES,
                      "activation": activation, "bias": bias, "dtype": dtype, "mode": mode,
                      "optimizer": "sgd", "seed": 0})


# --- threads and the torch process ------------------------------------------------------------------

def blas_threads() -> tuple[int, str]:
    """Threads numpy's BLAS uses (threadpoolctl's view if installed, else the environment / usable cores)."""
    try:
        import threadpoolctl

        counts = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        if counts:
            return max(counts), "threadpoolctl"
    except ImportError:
        pass
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name]), name
    try:
        return len(os.sched_getaffinity(0)), "usable cores"
    except AttributeError:
        return os.cpu_count() or 1, "cpu_count"


class TorchWorker:
    """benchmarks.torch_worker in its own process, driven one JSON line at a time."""

    def __init__(self, threads: int, heap: str = "warm"):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.torch_worker", str(threads), heap],
                                     cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.failed = ""
        self.threads = threads
        self.minor_faults = 0  # the worker's minor page faults so far, as of its last reply
        hello = self._read()
        self.available = bool(hello.get("available"))
        self.info = hello
        if not self.available:
            self.close()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch worker exited (status {self.proc.poll()})")
        return json.loads(line)

    def request(self, **message: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"torch worker: {reply['error']}")
        self.minor_faults = reply.get("minor_faults", self.minor_faults)
        return reply

    def fail(self, exc: BaseException) -> None:
        """The worker broke: remember why, stop it, and let the rest of the run go on without torch."""
        self.failed = f"{type(exc).__name__}: {exc}"
        self.available = False
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- speed ------------------------------------------------------------------------------------------

# what each timed variant's step is, in bench.csv's measured_label / reference_label
STEP_LABELS = {"memstudy": "memstudy step s", "numpy": "numpy step s", "ledger": "ledger-on step s",
               "tracemalloc": "tracemalloc-on step s", "torch": "torch step s", "minimal": "minimal-engine step s"}


def speed_rows(size, dtype: str, worker: TorchWorker | None, settings: Settings) -> list[dict[str, Any]]:
    """The MLP's speed figures at one size and dtype (benchmarks.harness: retries, quiet check, ratio rows)."""
    config = config_for(size, dtype)
    work = Workload(config)
    reference = NumpyMLP.from_memstudy(work.model)
    minimal = MinimalMLP.from_memstudy(work.model)
    x, labels = work.inputs.data, work.labels
    optimizer = work.optimizer

    def engine_step() -> None:
        optimizer.zero_grad()
        work.step()

    def ledger_step() -> None:
        optimizer.zero_grad()
        work.ledger_step()

    variants = [
        engine_variant("memstudy", engine_step),
        engine_variant("numpy", lambda: reference.step(x, labels)),
        engine_variant("minimal", lambda: minimal.step(x, labels)),
        engine_variant("ledger", ledger_step),
        engine_variant("tracemalloc", engine_step, before=tracemalloc.start, after=tracemalloc.stop),
    ]
    run = time_variants(f"{size} {dtype}", variants, settings, engine_step, 5, worker,
                        {"key": f"{size}-{dtype}", **config})
    common = dict(size=size, dtype=dtype, activation="relu", bias=True)

    def ratio_row(figure: str, measured: str, reference: str, **kwargs: Any) -> dict[str, Any]:
        return run.ratio_row(make_row, STEP_LABELS, figure, measured, reference, **kwargs, **common)

    rows = [
        ratio_row("engine_vs_numpy", "memstudy", "numpy"),
        ratio_row("minimal_vs_numpy", "minimal", "numpy",
                  note="benchmarks/minimal_engine.py: autograd with none of memstudy's features"),
        ratio_row("engine_vs_minimal", "memstudy", "minimal"),
        ratio_row("ledger_overhead", "ledger", "memstudy", reference_label="ledger-off step s"),
        ratio_row("tracemalloc_overhead", "tracemalloc", "memstudy", reference_label="tracemalloc-off step s"),
    ]
    if run.torch_ok:
        rows.append(ratio_row("engine_vs_torch", "memstudy", "torch",
                              note=f"torch {worker.info.get('torch')} with {worker.info.get('threads')} threads, "
                                   f"numpy's BLAS {worker.threads}"))
        rows.append(ratio_row("floor_vs_torch", "numpy", "torch",
                              note="the hand-written numpy floor against torch: engine_vs_torch cannot go below "
                                   "this without beating the floor"))
    else:
        rows.append(torch_missing_row(make_row, run, "engine_vs_torch", "memstudy step s", worker, torch_note(worker),
                                      **common))
    return rows


# --- memory -----------------------------------------------------------------------------------------

def memory_rows(size, dtype: str, activation: str, bias: bool, worker: TorchWorker | None) -> list[dict[str, Any]]:
    depth, width, batch = size
    itemsize = np.dtype(dtype).itemsize
    common = dict(size=size, dtype=dtype, activation=activation, bias=bias)
    rows = []

    train = Workload(config_for(size, dtype, activation, bias))
    train.step()  # warm-up: a steady-state step, as a cell measures it
    train.reset()
    account = train.ledger_step()
    ours = account.activation_bytes
    expected = f"{depth} x {batch}x{width} hidden + {batch}x{CLASSES} probs, x {itemsize} B"
    saved = None
    if worker is not None and worker.available:
        try:
            saved = worker.request(cmd="saved", **config_for(size, dtype, activation, bias))
        except (RuntimeError, OSError, ValueError) as exc:
            worker.fail(exc)
    if saved is not None:
        b, n = saved["bytes"], saved["tensors"]
        theirs = b["hidden"] + b["loss"]
        note = (f"memstudy: {account.saved_tensors} saved buffers ({expected}); torch saves hidden {b['hidden']} B "
                f"in {n['hidden']} storages + log_softmax output {b['loss']} B; not compared (memstudy counts them "
                f"as input/parameter/metadata): input x {b['input']} B, labels {b['labels']} B, "
                f"0-d scalars {b['scalar']} B ({n['scalar']}: nll_loss total_weight), parameters {b['parameter']} B "
                f"({n['parameter']} weights kept for input grads)")
        rows.append(make_row("activation_bytes_vs_torch", ours / theirs, "ratio", measured=ours, reference=theirs,
                             measured_label="memstudy activation_bytes", reference_label="torch saved bytes",
                             note=note, **common))
    else:
        rows.append(make_row("activation_bytes_vs_torch", None, "ratio", measured=ours,
                             measured_label="memstudy activation_bytes",
                             status="failed" if worker and worker.failed else "skipped",
                             note=f"{torch_note(worker)}; memstudy: {expected}", **common))

    infer = Workload(config_for(size, dtype, activation, bias, mode="inference"))
    infer.step()
    infer.reset()
    peak = infer.ledger_step().step_peak_bytes
    infer.reset()
    traced = probes.tracemalloc_step_peak_bytes(infer.step)
    floor = 2 * batch * width * itemsize
    rows.append(make_row("inference_peak_vs_floor", peak / floor, "ratio", measured=peak, reference=floor,
                         measured_label="ledger step_peak_bytes", reference_label="2 x batch x width x itemsize",
                         **common))
    if traced is not None:
        rows.append(make_row("inference_traced_peak_vs_floor", traced / floor, "ratio", measured=traced,
                             reference=floor, measured_label="tracemalloc step peak bytes",
                             reference_label="2 x batch x width x itemsize",
                             note="tracemalloc also sees the logits and each op's hidden scratch", **common))
    return rows


# --- start-up and study -----------------------------------------------------------------------------

STARTUP = (
    ("python_startup_seconds", "pass"),
    ("numpy_import_seconds", "import numpy"),
    ("cell_import_seconds", "import memstudy.measure.cell"),
)


def startup_rows(samples: int) -> list[dict[str, Any]]:
    """Wall time of `python -c CODE` (interpreter start-up included), interleaved, median of `samples`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    seconds: dict[str, list[float]] = {name: [] for name, _ in STARTUP}
    load = ForeignLoad().start()
    for repeat in range(samples + 1):  # the first round warms the page cache and is dropped
        for name, code in STARTUP:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    foreign = load.cores()
    rows = []
    for name, code in STARTUP:
        values = seconds[name]
        rows.append(make_row(name, statistics.median(values), "s", measured_label=f"python -c {code!r}",
                             samples=len(values), round_min=min(values), round_max=max(values), foreign_cores=foreign,
                             note="wall time of a fresh process, interpreter start-up included"))
    return rows


def predict_rows(samples: int) -> list[dict[str, Any]]:
    """The cost of predicting a huge step: it must not grow with the sizes (benchmarks.predict_cost)."""
    config = predict_cost.HUGE
    load = ForeignLoad().start()
    result = predict_cost.measure(config, samples)
    foreign = load.cores()
    common = dict(size=(config["depth"], config["width"], config["batch_size"]), dtype=config["dtype"],
                  foreign_cores=foreign, measured_label="memstudy.measure.predict.predict (adam)")
    peak = result["prediction"]["predicted_peak_bytes"]
    return [
        make_row("predict_seconds", result["seconds"], "s", samples=samples, round_min=result["seconds_min"],
                 round_max=result["seconds_max"], note=f"in-process, warm; the predicted step peaks at "
                 f"{peak / 1e9:.1f} GB", **common),
        make_row("predict_traced_mb", result["traced_peak_bytes"] / 2 ** 20, "MB", samples=1,
                 measured=result["traced_peak_bytes"], note="tracemalloc peak over one prediction", **common),
    ] + deep_predict_rows(samples)


def plan_rows() -> list[dict[str, Any]]:
    """`memstudy plan` over Llama-3-8B on 8 devices, the CLI's defaults (benchmarks.plan_bench): one timing."""
    load = ForeignLoad().start()
    result = plan_bench.measure()
    foreign = load.cores()
    return [make_row("plan_llama8b_seconds", result["seconds"], "s", samples=1, foreign_cores=foreign,
                     measured_label="memstudy.plan.plan (llama-3-8b, 8 x 80 GB)",
                     note=f"in-process; {result['configurations']} configurations, {result['predictions']} rank graphs "
                          f"predicted, {result['skipped']} skipped, {result['fitting']} fit; {result['jobs']} processes")]


def deep_predict_rows(samples: int) -> list[dict[str, Any]]:
    """Predicting deep models: repeated blocks predicted once, so the depth costs nothing (benchmarks.predict_cost)."""
    rows = []
    for figure, (config, memoise, _) in predict_cost.DEEP.items():
        load = ForeignLoad().start()
        result = predict_cost.measure(config, samples, memoise, traced=False)
        foreign = load.cores()
        model = config.get("model", "mlp")
        how = "repeated blocks predicted once" if memoise else "every block run (predict(..., memoise=False))"
        peak = result["prediction"]["predicted_peak_bytes"]
        rows.append(make_row(
            figure, result["seconds"], "s", size=(config["depth"], config["width"], config["batch_size"]),
            dtype="float32", samples=samples, round_min=result["seconds_min"], round_max=result["seconds_max"],
            foreign_cores=foreign, measured_label=f"memstudy.measure.predict.predict ({model})",
            note=f"in-process, warm; {how}; the predicted step peaks at {peak / 1e9:.1f} GB"))
    for figure, (args, _) in predict_cost.CLI.items():
        load = ForeignLoad().start()
        result = predict_cost.cli_seconds(args, max(1, samples // 3))  # a fresh process each: 3 of the full run's 9
        foreign = load.cores()
        ok = result["seconds"] is not None and not result["error"]
        rows.append(make_row(
            figure, result["seconds"], "s", samples=result["samples"], round_min=result.get("seconds_min"),
            round_max=result.get("seconds_max"), foreign_cores=foreign, status="ok" if ok else "failed",
            measured_label="memstudy predict " + " ".join(Path(a).name if a.endswith(".json") else a for a in args),
            note="a fresh process each: interpreter start, imports, the config read, the table printed"
                 + ("" if ok else f"; {result['error']}")))
    return rows


def study_rows(spec_path: Path, log) -> list[dict[str, Any]]:
    """Time `memstudy sweep SPEC --out TMP` and `memstudy report TMP` (results/ is never written)."""
    from memstudy.run.spec import load_spec

    spec = load_spec(spec_path)
    cells = len(spec.cells())
    out = Path(tempfile.mkdtemp(prefix="memstudy-bench-study-"))
    try:
        command = [sys.executable, "-m", "memstudy"]
        log(f"  study: sweeping {cells} cells of {spec_path.name} into {out} (a few minutes)")
        load = ForeignLoad().start()
        start = time.perf_counter()
        sweep = subprocess.run(command + ["sweep", str(spec_path), "--out", str(out / "study"), "--no-progress"],
                               cwd=ROOT, capture_output=True, text=True)
        sweep_seconds = time.perf_counter() - start
        start = time.perf_counter()
        report = subprocess.run(command + ["report", str(out / "study")], cwd=ROOT, capture_output=True, text=True)
        report_seconds = time.perf_counter() - start
        foreign = load.cores()
        statuses: dict[str, int] = {}
        runs = out / "study" / "runs.csv"
        if runs.exists():
            with open(runs, newline="") as fh:
                seen = set()
                for row in csv.DictReader(fh):
                    if row["cell"] not in seen:
                        seen.add(row["cell"])
                        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    finally:
        shutil.rmtree(out, ignore_errors=True)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no runs.csv"
    ok = sweep.returncode == 0 and report.returncode == 0
    error = "" if ok else " | ".join(
        f"{name} exited {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1]}"
        for name, p in (("sweep", sweep), ("report", report)) if p.returncode)
    status = "ok" if ok else "failed"
    return [
        make_row("sweep_cells_per_second", cells / sweep_seconds, "cells/s", measured=cells, reference=sweep_seconds,
                 measured_label="cells", reference_label="sweep s", status=status, foreign_cores=foreign,
                 note=f"memstudy sweep {spec_path.relative_to(ROOT)} ({spec.repeats} repeats, jobs {spec.jobs}): "
                      f"{summary}{'; ' + error if error else ''}"),
        make_row("study_wall_seconds", sweep_seconds + report_seconds, "s", measured=sweep_seconds,
                 reference=report_seconds, measured_label="sweep s", reference_label="report s", status=status,
                 foreign_cores=foreign,
                 note="what `make study` runs (memstudy study = sweep + report), into a temporary folder"),
    ]


def _timed_sweep(spec_path: Path, out: Path, flags: list[str]) -> tuple[float, float | None, str]:
    """Wall seconds of `memstudy sweep SPEC --out OUT FLAGS`, others' load meanwhile, and an error ('' if ok)."""
    load = ForeignLoad().start()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "memstudy", "sweep", str(spec_path), "--out", str(out),
                           "--no-progress", *flags], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    error = "" if done.returncode == 0 else \
        f"exited {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"
    return seconds, load.cores(), error


def sweep_rows(spec_path: Path, log) -> list[dict[str, Any]]:
    """Cells per second of one spec with --jobs 1, --jobs 2 and --cluster local:2, and what the cluster adds."""
    from memstudy.run.spec import load_spec

    spec = load_spec(spec_path)
    cells = len(spec.cells())
    tmp = Path(tempfile.mkdtemp(prefix="memstudy-bench-sweep-"))
    rows: list[dict[str, Any]] = []
    try:
        seconds: dict[str, float] = {}
        for name, flags, label in SWEEP_EXECUTORS:
            log(f"  sweep: {cells} cells of {spec_path.name} with {label}")
            wall, foreign, error = _timed_sweep(spec_path, tmp / name, flags)
            seconds[name] = wall
            rows.append(make_row(f"sweep_{name}_cells_per_second", cells / wall, "cells/s", measured=cells,
                                 reference=wall, measured_label="cells", reference_label="sweep s",
                                 status="failed" if error else "ok", foreign_cores=foreign,
                                 note=f"memstudy sweep {spec_path.name} {label} ({spec.repeats} repeats)"
                                      + (f"; {error}" if error else "")))
        # fixed cost: resume each folder with nothing left to run, on the cluster and locally
        log("  sweep: a resume with nothing to run, locally and on local:2 (the cluster's fixed cost)")
        local_wall, _, local_error = _timed_sweep(spec_path, tmp / "jobs1", ["--jobs", "1"])
        cluster_wall, foreign, cluster_error = _timed_sweep(spec_path, tmp / "cluster2", ["--cluster", "local:2"])
        fixed = cluster_wall - local_wall
        error = local_error or cluster_error
        status = "failed" if error or any(r["status"] != "ok" for r in rows) else "ok"
        rows.append(make_row("cluster_fixed_seconds", fixed, "s", measured=cluster_wall, reference=local_wall,
                             measured_label="resume on local:2 s", reference_label="resume locally s",
                             status=status, foreign_cores=foreign,
                             note="start and stop of 2 Dask workers and their hosts' provenance" +
                                  (f"; {error}" if error else "")))
        per_cell = (seconds["cluster2"] - seconds["jobs2"] - fixed) / cells
        rows.append(make_row("cluster_seconds_per_cell", per_cell, "s", measured=seconds["cluster2"],
                             reference=seconds["jobs2"], measured_label="local:2 s", reference_label="--jobs 2 s",
                             status=status, note=f"(local:2 − jobs 2 − fixed) ÷ {cells} cells: a task's round trip"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# --- main -------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"), metavar="DIR",
                        help="where bench.csv, env.json and bench.md go (results/bench)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the smallest size, float32, few steps, no study (seconds)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-study", action="store_true", help="skip the sweep/study timing (minutes)")
    parser.add_argument("--spec", default=str(ROOT / "experiments" / "default.toml"), metavar="SPEC.toml",
                        help="spec whose sweep is timed (experiments/default.toml)")
    parser.add_argument("--only", default=",".join(SECTIONS), metavar="SECTIONS",
                        help=f"comma-separated subset of {','.join(SECTIONS)} (all)")
    parser.add_argument("--rounds", type=int, default=None, help="block rotations per size (15; quick 2)")
    parser.add_argument("--retries", type=int, default=None,
                        help="time a size again, up to this many times, while other processes keep more than "
                             "--quiet-cores cores busy; the quietest attempt is kept (2; quick 0)")
    parser.add_argument("--quiet-cores", type=float, default=0.15,
                        help="other processes' average CPU use (cores) that still counts as quiet (0.15)")
    parser.add_argument("--max-wait", type=float, default=None,
                        help="before timing a size (and the study), wait up to this many seconds for other "
                             "processes to quieten (120; quick 0)")
    parser.add_argument("--heap", choices=HEAP_MODES, default="default",
                        help="default: every timing process as it comes (memstudy's Workload warms the heap itself, "
                             "see memstudy/measure/heap.py); warm: the benchmark first allocates and frees one "
                             "24 MiB buffer in every timing process (see benchmarks/heap.py) (default)")
    parser.add_argument("--block-seconds", type=float, default=None,
                        help="target length of one block (0.1 s; quick 0.01 s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    git = git_info()  # before this run writes bench.csv into the tree, which would read as uncommitted changes
    # PYTHONDONTWRITEBYTECODE (some sandboxes and CI images set it) makes every child process compile memstudy from
    # source: ~0.1 s a process here (import memstudy.measure.cell 0.25 s against 0.15 s), in the start-up figures,
    # every study cell and the fresh clone's `make study`. A user's checkout keeps its __pycache__ (gitignored), so
    # the children run with it unset; env.json records what was found.
    dont_write_bytecode = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    quick = args.quick
    rounds = args.rounds or (2 if quick else 15)
    args.retries = (0 if quick else 2) if args.retries is None else args.retries
    args.max_wait = (0.0 if quick else 120.0) if args.max_wait is None else args.max_wait
    block_seconds = args.block_seconds or (0.01 if quick else 0.1)
    min_steps, max_steps = (3, 10) if quick else (8, 400)
    sizes = SIZES[2:] if quick else SIZES
    dtypes = DTYPES[:1] if quick else DTYPES
    memory_combos = [("relu", True)] if quick else [(a, b) for a in ACTIVATIONS for b in (True, False)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        build_parser().error(f"--only: unknown section {unknown[0]!r} (choose from {', '.join(SECTIONS)})")
    threads, threads_source = blas_threads()
    if args.heap == "warm":
        warm_up_heap(lambda nbytes: np.empty(nbytes, dtype=np.uint8))
    worker = None
    if not args.no_torch and ("speed" in sections or "memory" in sections or "gpt" in sections
                              or "cnn" in sections):
        worker = TorchWorker(threads, args.heap)
        log(f"torch: {worker.info.get('torch', worker.info.get('reason'))}"
            + (f", {worker.info.get('threads')} threads" if worker.available else " (skipping torch figures)"))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    settings = Settings(rounds, block_seconds, min_steps, max_steps, log, retries=args.retries,
                        quiet_cores=args.quiet_cores, max_wait=args.max_wait)
    try:
        if "speed" in sections:
            for size in sizes:
                for dtype in dtypes:
                    rows += speed_rows(size, dtype, worker, settings)
        if "cnn" in sections:
            from .cnn import cnn_speed_rows

            rows += cnn_speed_rows("float32", worker, settings, make_row, torch_note)
        if "memory" in sections:
            log("  memory: activation bytes vs torch, inference peak vs floor")
            for size in sizes:
                for dtype in dtypes:
                    for activation, bias in memory_combos:
                        rows += memory_rows(size, dtype, activation, bias, worker)
        if "gpt" in sections:
            rows += gpt_bench.speed_rows(worker, make_row, settings, quick=quick)
    finally:
        if worker is not None:
            worker.close()
    if "precision" in sections:
        from .precision_bench import precision_rows

        rows += precision_rows(make_row, rounds, block_seconds, min_steps, max_steps, log, quick=quick,
                               quiet_cores=args.quiet_cores, max_wait=args.max_wait)
    if "flash" in sections:
        from .flash_bench import flash_rows

        rows += flash_rows(make_row, rounds, block_seconds, min_steps, max_steps, log, quick=quick,
                           quiet_cores=args.quiet_cores, max_wait=args.max_wait)
    if "startup" in sections:
        log("  start-up: python -c ... (median)")
        if args.max_wait > 0:
            wait_until_quiet(args.quiet_cores, args.max_wait, log=log)
        rows += startup_rows(3 if quick else 9)
        rows += predict_rows(3 if quick else 9)
        if not quick:
            rows += plan_rows()
    if "study" in sections:
        if quick or args.no_study:
            rows.append(make_row("study_wall_seconds", None, "s", status="skipped",
                                 note="skipped (--quick)" if quick else "skipped (--no-study)"))
        else:
            if args.max_wait > 0:
                wait_until_quiet(args.quiet_cores, args.max_wait, log=log)
            rows += study_rows(Path(args.spec).resolve(), log)
    if "sweep" in sections:
        if quick or args.no_study:
            rows.append(make_row("sweep_cluster2_cells_per_second", None, "cells/s", status="skipped",
                                 note="skipped (--quick)" if quick else "skipped (--no-study)"))
        else:
            if args.max_wait > 0:
                wait_until_quiet(args.quiet_cores, args.max_wait, log=log)
            rows += sweep_rows(Path(args.spec).resolve(), log)

    for name, module in (("newcomer", "study_speed"), ("compare", "study_compare")):
        if name not in sections:
            continue
        figure = {"newcomer": "make_study_fresh_clone_seconds", "compare": "study_seconds_new_vs_old"}[name]
        if quick or args.no_study:
            rows.append(make_row(figure, None, "s" if name == "newcomer" else "ratio", status="skipped",
                                 note="skipped (--quick)" if quick else "skipped (--no-study)"))
            continue
        if args.max_wait > 0:
            wait_until_quiet(args.quiet_cores, args.max_wait, log=log)
        import importlib

        rows += importlib.import_module(f"benchmarks.{module}").rows(make_row, log)

    csv_path = out / "bench.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    bench_info = {
        "quick": quick, "rounds": rounds, "block_seconds": block_seconds, "steps_per_block": [min_steps, max_steps],
        "sections": sections, "retries": args.retries, "quiet_cores": args.quiet_cores, "max_wait": args.max_wait,
        "blas_threads": threads, "blas_threads_source": threads_source,
        "heap": args.heap, "heap_warmup_bytes": HEAP_WARMUP_BYTES if args.heap == "warm" else 0,
        "malloc_environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},
        "pythondontwritebytecode_unset_for_children": dont_write_bytecode,
        "thread_environment": {k: v for k, v in sorted(os.environ.items())
                               if k.startswith(("OPENBLAS_", "GOMP_", "OMP_", "MKL_"))},
        "torch": ({**worker.info, "failed": worker.failed} if worker is not None
                  else {"available": False, "reason": "--no-torch"}),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": [Path(sys.executable).name, "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])],
    }
    write_json(out / "env.json", collect_env(extra={"bench": bench_info}, git=git))
    markdown = table.render(table.read_csv(csv_path), table.read_env(out / "env.json"))
    (out / "bench.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    log(f"wrote {csv_path}, {out / 'env.json'}, {out / 'bench.md'}")
    return 0

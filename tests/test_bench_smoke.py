"""The benchmark harness (benchmarks/): a quick run writes its three files, and its numpy floor is the same math.

No torch needed (`--no-torch`); the quick run takes a few seconds and writes into a temporary folder.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package

from benchmarks.reference import NumpyMLP  # noqa: E402
from benchmarks.table import COLUMNS  # noqa: E402


def test_quick_run_writes_csv_env_and_markdown(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-torch", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "bench.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    figures = {r["figure"] for r in rows}
    assert {"engine_vs_numpy", "ledger_overhead", "tracemalloc_overhead", "engine_vs_torch",
            "activation_bytes_vs_torch", "inference_peak_vs_floor", "cell_import_seconds",
            "study_wall_seconds", "predict_seconds", "predict_traced_mb"} <= figures
    by_figure = {r["figure"]: r for r in rows}
    assert float(by_figure["predict_traced_mb"]["value"]) < 10 and by_figure["predict_traced_mb"]["met"] == "yes"
    assert by_figure["predict_seconds"]["status"] == "ok" and float(by_figure["predict_seconds"]["value"]) > 0
    assert by_figure["engine_vs_torch"]["status"] == "skipped"
    assert "pip install memstudy[torch]" in by_figure["engine_vs_torch"]["note"]
    ratio = by_figure["engine_vs_numpy"]
    assert ratio["status"] == "ok" and float(ratio["value"]) > 0 and ratio["target"] == "<= 1.3"  # issue 13
    assert {"minimal_vs_numpy", "engine_vs_minimal"} <= figures and by_figure["engine_vs_minimal"]["status"] == "ok"
    assert float(by_figure["inference_peak_vs_floor"]["value"]) > 0
    for figure in ("bf16_step_vs_float32_gpt", "bf16_step_vs_float32_mlp"):  # issue 23: a bfloat16 step ≤ 2× float32's
        assert by_figure[figure]["status"] == "ok" and by_figure[figure]["target"] == "<= 2"
    flash = by_figure["flash_step_vs_eager_gpt"]  # issue 27: what the fused attention costs in time, with the load
    assert flash["status"] == "ok" and float(flash["value"]) > 0 and flash["foreign_cores"] != ""
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["bench"]["quick"] is True and "git" in env and "numpy" in env
    markdown = (tmp_path / "bench.md").read_text()
    assert "engine_vs_numpy" in markdown and "skipped" in markdown
    assert done.stdout.strip() == markdown.strip()


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_numpy_floor_is_the_same_step_as_memstudy(activation, bias):
    from memstudy import nn, optim

    model = nn.MLP(12, 16, 3, 5, activation=activation, bias=bias, dtype="float64", seed=3)
    floor = NumpyMLP.from_memstudy(model, lr=0.1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 12)), rng.integers(0, 5, size=8)
    expected_loss = floor.step(x, y)
    loss = nn.cross_entropy(model(x), y)
    loss.backward()
    optim.SGD(model.parameters(), lr=0.1).step()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
    ours = [p for pair in zip(floor.weights, floor.biases) for p in pair if p is not None]
    for mine, theirs in zip(ours, model.parameters()):
        np.testing.assert_allclose(mine, theirs.data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_minimal_engine_is_the_same_step_as_memstudy(depth, bias):
    """engine_vs_minimal compares like with like: the minimal autograd computes memstudy's loss and update."""
    from benchmarks.minimal_engine import MinimalMLP
    from memstudy import nn, optim

    model = nn.MLP(12, 16, depth, 5, bias=bias, dtype="float64", seed=3)
    minimal = MinimalMLP.from_memstudy(model, lr=0.1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 12)), rng.integers(0, 5, size=8)
    for _ in range(2):  # the second step starts from the updated weights: gradients were reset, not summed
        expected_loss = minimal.step(x, y)
        for p in model.parameters():
            p.grad = None
        loss = nn.cross_entropy(model(x), y)
        loss.backward()
        optim.SGD(model.parameters(), lr=0.1).step()
        assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
    theirs = [p for pair in zip(minimal.weights, minimal.biases) for p in pair if p is not None]
    for mine, other in zip(model.parameters(), theirs):
        np.testing.assert_allclose(mine.data, other.data, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="ReLU"):
        MinimalMLP.from_memstudy(nn.MLP(4, 4, 1, 2, activation="tanh"))


def test_the_benchmark_block_is_generated_from_the_committed_bench_csv():
    from benchmarks.table import read_csv, read_env, readme_lines

    bench = ROOT / "results" / "bench"
    expected = "\n".join(readme_lines(read_csv(bench / "bench.csv"), read_env(bench / "env.json"))).strip("\n")
    assert expected in (ROOT / "docs" / "performance.md").read_text(encoding="utf-8"), (
        "docs/performance.md's benchmark block differs from results/bench/bench.csv: run `make readme`")


def test_the_tables_machine_facts_come_from_the_runs_provenance():
    from benchmarks.table import read_csv, read_env, render

    bench = ROOT / "results" / "bench"
    rows, env = read_csv(bench / "bench.csv"), read_env(bench / "env.json")
    cores = env["machine"]["logical_cores"]
    assert f"(this machine has {cores})" in render(rows, env)
    other = {**env, "machine": {**env["machine"], "logical_cores": cores + 62}}
    assert f"(this machine has {cores + 62})" in render(rows, other)
    assert "(the machine's core count was not recorded)" in render(rows, None)


def test_the_benchmark_lines_hold_the_targets_and_nothing_of_the_markers():
    row = dict.fromkeys(COLUMNS, "")
    row.update(figure="cell_import_seconds", value="0.1", unit="s", target="<= 0.25", met="yes", status="ok",
               round_min="0.09", round_max="0.11", samples="9")
    from benchmarks.table import readme_lines

    lines = readme_lines([row])
    assert "1 of 1 figures with a target meet it." in lines and not any("<!--" in line for line in lines)


HEAP_SCRIPT = """
import numpy as np
from benchmarks.heap import minor_faults, warm_up_heap

def faults_per_cycle(cycles=10):
    before = minor_faults()
    for _ in range(cycles):
        arrays = [np.ones(1 << 17) for _ in range(8)]  # 8 x 1 MiB, written: their pages are faulted in
        del arrays  # 8 MiB freed at the top of the heap: more than glibc's trim threshold after a 1 MiB free
    return (minor_faults() - before) / cycles

cold = faults_per_cycle()
warm_up_heap(lambda nbytes: np.empty(nbytes, dtype=np.uint8))
faults_per_cycle(1)  # the first cycle after the warm-up grows the heap once
print(cold, faults_per_cycle())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")
def test_heap_warmup_stops_the_page_faults_the_benchmark_would_otherwise_time():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's dynamic thresholds
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", HEAP_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    cold, warm = map(float, done.stdout.split())
    assert cold > 1000  # 8 MiB = 2048 pages faulted in again every cycle
    assert warm < 10


@pytest.mark.parametrize("args, message", [
    (["missing.csv"], "cannot read missing.csv"),
    (["--bogus"], "usage: python -m benchmarks.table"),
    (["one.csv", "two.csv"], "usage: python -m benchmarks.table"),
])
def test_table_command_rejects_bad_input_in_one_line(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "benchmarks.table", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr


def test_sweep_executors_are_shown_side_by_side_with_the_clusters_overhead():
    from benchmarks.run import make_row
    from benchmarks.table import render

    rows = [make_row(f"sweep_{name}_cells_per_second", 48 / wall, "cells/s", measured=48, reference=wall,
                     foreign_cores=0.01, note=name)
            for name, wall in (("jobs1", 60.0), ("jobs2", 36.0), ("cluster2", 40.0))]
    rows += [make_row("cluster_fixed_seconds", 2.5, "s", measured=2.8, reference=0.3),
             make_row("cluster_seconds_per_cell", (40.0 - 36.0 - 2.5) / 48, "s", measured=40.0, reference=36.0)]
    text = render([{k: str(v) for k, v in r.items()} for r in rows])
    assert "| --jobs 1 | 48 | 60.0 s | 0.800 |" in text and "| --cluster local:2 | 48 | 40.0 s | 1.200 |" in text
    assert "adds 2.50 s once" in text and "31 ms per cell" in text


@pytest.mark.slow
def test_sweep_section_times_three_executors(tmp_path):
    pytest.importorskip("distributed")
    spec = tmp_path / "tiny.toml"
    spec.write_text('[study]\nname = "tiny"\n[grid]\ndepth = [1, 2]\nwidth = 16\nbatch_size = 4\n[run]\nrepeats = 1\n')
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "sweep", "--spec", str(spec), "--no-torch",
                           "--max-wait", "0", "--out", str(tmp_path / "bench")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "bench" / "bench.csv", newline="") as fh:
        rows = {r["figure"]: r for r in csv.DictReader(fh)}
    for name in ("jobs1", "jobs2", "cluster2"):
        assert rows[f"sweep_{name}_cells_per_second"]["status"] == "ok", rows[f"sweep_{name}_cells_per_second"]
    assert float(rows["cluster_fixed_seconds"]["value"]) > 0


def test_children_keep_their_bytecode_cache_under_pythondontwritebytecode(tmp_path):
    """Some sandboxes set PYTHONDONTWRITEBYTECODE: every child would then compile memstudy from source (~0.1 s a
    process), which no user's checkout does. The benchmark unsets it for its children and records what it found."""
    cache = tmp_path / "pycache"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(cache)}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-torch", "--only", "startup",
                           "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert list(cache.rglob("memstudy/measure/cell*.pyc")), "the start-up children wrote no bytecode"
    info = json.loads((tmp_path / "out" / "env.json").read_text())
    assert info["bench"]["pythondontwritebytecode_unset_for_children"] == "1"

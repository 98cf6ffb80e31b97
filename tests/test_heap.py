"""A harness puts glibc's heap in its steady state before its first step (measure/heap.py: Workload does, the
engine does not), unless the allocator was configured explicitly or the user opted out; measured cells keep
their RSS accuracy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One MLP training step in a loop, as a harness runs it (heap.settle() before the first step): page faults per step
# with and without the warm-up. The step's 1 MiB activations are mmapped buffers until the heap is warm.
SCRIPT = """
import json, resource
import numpy as np
import memstudy as ms
from memstudy import nn
from memstudy.measure import heap

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

model = nn.MLP(256, 1024, 2, 10, dtype="float64", seed=0)
x = ms.Tensor(np.random.default_rng(0).standard_normal((256, 256)))
y = np.arange(256) % 10
def step():
    for p in model.parameters():
        p.grad = None
    nn.cross_entropy(model(x), y).backward()
heap.settle()  # the harness's call (measure.workload.Workload makes it)
step()
step()  # the heap grows once to the step's size
before = faults()
for _ in range(5):
    step()
print(json.dumps({"warmed": heap.should_warm_up(), "faults_per_step": (faults() - before) / 5}))
"""


def run(env_changes: dict[str, str | None]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MEMSTUDY_HEAP_WARMUP"}
    env["PYTHONPATH"] = str(ROOT)
    for key, value in env_changes.items():
        if value is not None:
            env[key] = value
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")
def test_the_warm_up_removes_the_page_faults_and_the_opt_out_shows_why():
    warm = run({})
    cold = run({"MEMSTUDY_HEAP_WARMUP": "0"})
    assert warm["warmed"] and not cold["warmed"]
    # each step's ~1 MiB buffers (and larger) are faulted in again without the warm-up: 256 pages per MiB
    assert cold["faults_per_step"] > 1000
    assert warm["faults_per_step"] < 50


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")
def test_an_explicit_allocator_setting_wins():
    explicit = run({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not explicit["warmed"]
    assert explicit["faults_per_step"] > 1000  # every buffer is its own mmap, as the cells want for RSS


def test_cells_keep_their_allocator_setting_so_the_rss_probe_follows_live_memory():
    from memstudy.run.launcher import MMAP_THRESHOLD_ENV, cell_environment

    env = cell_environment({})
    assert env[MMAP_THRESHOLD_ENV] == "65536"
    code = "from memstudy.measure import heap; print(heap.should_warm_up())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


WHO_WARMS = """
import json
import numpy as np
import memstudy as ms
from memstudy import nn
from memstudy.config import normalize
from memstudy.measure import heap
from memstudy.measure.workload import Workload

model = nn.MLP(8, 8, 1, 2, dtype="float64", seed=0)
nn.cross_entropy(model(ms.Tensor(np.ones((4, 8)))), np.zeros(4, dtype=int)).backward()
after_backward = heap.HEAP.settled  # the engine leaves the allocator alone
Workload(normalize({"depth": 1, "width": 8, "batch_size": 4}))
print(json.dumps({"after_backward": after_backward, "after_workload": heap.HEAP.settled}))
"""


def test_the_workload_warms_the_heap_and_the_engine_does_not():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MEMSTUDY_HEAP_WARMUP"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", WHO_WARMS], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"after_backward": False, "after_workload": True}

"""The GPT benchmark: its numpy floor is the same step as memstudy's GPT, and a quick run writes its figures."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package

from benchmarks.gpt_bench import memstudy_op_seconds  # noqa: E402
from benchmarks.gpt_reference import NumpyGPT  # noqa: E402
from gradcheck import rel_error  # noqa: E402
from memstudy import nn  # noqa: E402
from memstudy.autograd import ops  # noqa: E402
from memstudy.measure.workload import Workload  # noqa: E402
from memstudy.nn.models.registry import normalize  # noqa: E402


@pytest.mark.parametrize("bias", [True, False])
def test_numpy_floor_gradients_and_update_are_memstudys(bias):
    config = normalize(dict(model="gpt", vocab=37, seq_len=10, depth=2, width=16, heads=4, batch_size=3,
                            bias=bias, dtype="float64", optimizer="sgd"))
    work = Workload(config)
    floor = NumpyGPT.from_memstudy(work.model)
    loss, grads = floor.loss_and_gradients(work.inputs.data, work.labels)
    assert sorted(grads) == sorted(name for name, _ in work.model.named_parameters())
    expected = work.step()  # forward, backward, SGD (lr 0.01)
    assert abs(loss - float(expected.data)) < 1e-12
    for name, p in work.model.named_parameters():
        assert rel_error(grads[name], p.grad) < 1e-10, name
    floor.step(work.inputs.data, work.labels)  # the floor's own step from the same start
    for name, p in work.model.named_parameters():
        np.testing.assert_allclose(floor.p[name], p.data, rtol=1e-12, atol=1e-15, err_msg=name)


def test_op_profile_restores_the_ops_and_covers_the_step():
    work = Workload(normalize(dict(model="gpt", vocab=37, seq_len=8, depth=1, width=16, heads=2, batch_size=2)))
    forward = ops.Softmax.__dict__["forward"]
    per_op, step_seconds = memstudy_op_seconds(lambda: (work.optimizer.zero_grad(), work.step()), 2)
    assert ops.Softmax.__dict__["forward"] is forward
    assert {"batched_matmul forward", "softmax backward", "layer_norm forward", "gelu backward"} <= set(per_op)
    assert 0 < sum(per_op.values()) < step_seconds


def test_quick_gpt_run_writes_its_figures(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-torch", "--only", "gpt",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "bench.csv", newline="") as fh:
        rows = {r["figure"]: r for r in csv.DictReader(fh)}
    assert rows["gpt_engine_vs_numpy"]["status"] == "ok" and float(rows["gpt_engine_vs_numpy"]["value"]) > 0
    assert rows["gpt_engine_vs_numpy"]["target"] == "<= 1.15"
    assert rows["gpt_engine_vs_torch"]["status"] == "skipped"
    assert "forward" in rows["gpt_ops_memstudy"]["note"] and "%" in rows["gpt_ops_memstudy"]["note"]
    assert "gpt_engine_vs_numpy" in (tmp_path / "bench.md").read_text()

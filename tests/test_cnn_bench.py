"""The CNN benchmark's floor is the same step as memstudy's CNN, and PyTorch's twin has the same shapes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package

from benchmarks.cnn import cnn_config  # noqa: E402
from benchmarks.cnn_reference import NumpyCNN  # noqa: E402
from memstudy.config import normalize  # noqa: E402
from memstudy.measure.workload import Workload  # noqa: E402


@pytest.mark.parametrize("batch_norm", [True, False])
def test_numpy_cnn_floor_is_the_same_step_as_memstudy(batch_norm):
    config = normalize({"model": "cnn", "depth": 3, "width": 4, "image_size": 16, "batch_size": 6,
                        "dtype": "float64", "batch_norm": batch_norm})
    work = Workload(config)
    floor = NumpyCNN(work.model)
    expected_loss = floor.step(work.inputs.data, work.labels)
    loss = work.step()  # forward, loss, backward, SGD (lr 0.01)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
    for i, block in enumerate(work.model.features):
        np.testing.assert_allclose(block.conv.weight.data, floor.conv[i], rtol=1e-12, atol=1e-14)
        if batch_norm:
            np.testing.assert_allclose(block.bn.weight.data, floor.gamma[i], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(block.bn.running_var, floor.running_var[i], rtol=1e-12)
        else:
            np.testing.assert_allclose(block.conv.bias.data, floor.conv_bias[i], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(work.model.classifier.weight.data, floor.weight, rtol=1e-12, atol=1e-14)


def test_torch_worker_builds_the_cnn_of_the_benchmark():
    torch = pytest.importorskip("torch")
    from benchmarks.torch_worker import _build
    from memstudy.nn.models.cnn import CNN

    config = cnn_config("float32")
    model, x, y = _build(torch, config)
    ours = CNN(config["in_channels"], config["width"], config["depth"], config["classes"], batch_norm=True)
    assert sorted(tuple(p.shape) for p in model.parameters()) == sorted(p.shape for p in ours.parameters())
    assert tuple(x.shape) == (32, 3, 32, 32) and model(x).shape == (32, 10)

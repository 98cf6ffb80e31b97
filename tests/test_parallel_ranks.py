"""Real ranks (issue 26): N processes, torch.distributed gloo over loopback. Each rank's ledger equals its own
prediction buffer for buffer, and the parameters after one step, gathered, equal one device's step on the whole
batch to 1e-12 in float64. Skipped with a note without torch (the `collectives` extra)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="real multi-process ranks need torch (pip install memstudy[collectives])")

from memstudy.config import get_family, normalize  # noqa: E402
from memstudy.measure.workload import Workload  # noqa: E402
from memstudy.parallel.launch import gathered, run_ranks  # noqa: E402

WORLD = 2
PER_RANK = 3
MLP = dict(model="mlp", depth=2, width=6, in_features=5, out_features=3, dtype="float64", optimizer="adam",
           param_persistence_threshold=0)


def single_device_step(batch) -> dict[str, np.ndarray]:
    config = normalize({**MLP, "batch_size": WORLD * PER_RANK})
    work = Workload(config)
    work.inputs.data[...] = batch[0]
    work.labels[...] = batch[1]
    work.step()
    return {name: p.data.copy() for name, p in work.model.named_parameters()}


# each case starts two processes that import torch (~15 s): stage 3 (every collective of the path) stays fast
@pytest.mark.parametrize("stage", [pytest.param(0, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.slow),
                                   pytest.param(2, marks=pytest.mark.slow), 3])
def test_real_ranks_equal_their_prediction_and_one_device(stage):
    whole = normalize({**MLP, "batch_size": WORLD * PER_RANK})
    batch = get_family("mlp").batch(whole)
    inputs = batch[0].data if hasattr(batch[0], "data") else batch[0]
    batch = (np.asarray(inputs), np.asarray(batch[1]))
    reports = run_ranks({**MLP, "batch_size": PER_RANK, "data_parallel": WORLD, "zero": stage}, WORLD, batch)
    assert all(r["same"] for r in reports), [(r["peak_bytes"], r["predicted_peak_bytes"]) for r in reports]
    reference = single_device_step(batch)
    ours = gathered(reports, {name: p.shape for name, p in reference.items()})
    for name, value in reference.items():
        np.testing.assert_allclose(ours[name], value, rtol=0, atol=1e-12, err_msg=name)

"""Parallelism's shared pieces (issue 26): the fields, the collectives as ops under the ledger, the rank's row."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from memstudy import cli
from memstudy.autograd import Tensor, meta
from memstudy.config import ConfigError, normalize
from memstudy.measure.ledger import CATEGORIES, Ledger
from memstudy.parallel import collectives as C
from memstudy.parallel.rank import notes
from memstudy.report.style import CATEGORY_COLORS, CATEGORY_LABELS
from memstudy.report.timeline import LATER_CATEGORIES
from memstudy.run.results.fields import ROW_FIELDS


def test_parallel_fields_defaults_change_nothing():
    plain = normalize({"model": "gpt"})
    assert (plain["data_parallel"], plain["zero"], plain["rank"], plain["reduce_bucket_size"]) == (1, 0, None, 5 * 10**8)
    from memstudy.nn.models.registry import get_family
    assert get_family("gpt").describe(plain) == get_family("gpt").describe({**plain, "zero": 0})
    assert "zero 3" in get_family("gpt").describe(normalize({"model": "gpt", "zero": 3, "data_parallel": 4}))


@pytest.mark.parametrize("raw,words", [
    ({"zero": 4}, "zero must be at most 3"),
    ({"data_parallel": 0}, "data_parallel must be at least 1"),
    ({"rank": 2, "data_parallel": 2}, "rank must be below the 2 ranks"),
    ({"tensor_parallel": 2, "model": "mlp"}, r"tensor_parallel 2: model 'mlp' has no tensor-parallel layers \(gpt, "
     r"llama have\)"),
    ({"pipeline_parallel": 2}, "pipeline_parallel 2: not yet"),
    ({"schedule": "zigzag"}, "schedule must be one of 1f1b, gpipe"),
    ({"zero": 1, "mode": "inference"}, "zero 1 shards training state"),
])
def test_bad_parallel_fields_one_line(raw, words):
    with pytest.raises(ConfigError, match=words):
        normalize({"model": "gpt", **raw})


def test_cli_bad_parallel_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", "--model", "gpt", "--zero", "5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "must be at most 3" in err and "\n" not in err
    assert cli.main(["predict", "--model", "gpt", "--pipeline-parallel", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not yet" in err and "\n" not in err


def test_zero_on_one_rank_says_it_changes_nothing():
    config = normalize({"model": "mlp", "zero": 2})
    assert any("changes nothing" in line for line in notes(config))
    assert notes(normalize({"model": "mlp"})) == []


def test_communication_is_a_category_everywhere():
    assert "communication" in CATEGORIES and "communication" in LATER_CATEGORIES
    assert "communication" in CATEGORY_LABELS and "communication" in CATEGORY_COLORS
    for column in ("peak_communication_bytes", "data_parallel", "zero", "accounted_rank", "shape_only"):
        assert column in ROW_FIELDS
    assert ROW_FIELDS[-1] == "predicted_communication_bytes"  # appended, after every older column


def _collective_step(shape_only: bool):
    with contextlib.ExitStack() as stack:
        stack.enter_context(C.use_backend(C.Simulated(4, 1)))
        if shape_only:
            stack.enter_context(meta.meta_mode())
        x = Tensor(np.arange(24, dtype=np.float64).reshape(8, 3), requires_grad=True)
        ledger = Ledger()
        ledger.register(x.data, "input")
        ledger.start()
        y = C.all_gather(x)                                # (32, 3): 768 bytes, communication
        z = C.reduce_scatter(y * 2.0)                      # (8, 3)
        w = C.reduce_from_parallel(C.copy_to_parallel(z))  # Megatron's f then g
        w.sum().backward()
        account = ledger.finish()
        return account, x.grad


def test_collectives_are_communication_buffers_prediction_equals_ledger():
    real, grad = _collective_step(False)
    predicted, _ = _collective_step(True)
    assert real.collective_bytes == predicted.collective_bytes
    assert real.peak_by_category == predicted.peak_by_category and real.raw_events == predicted.raw_events
    assert real.collective_bytes["all_gather"] == [1, 32 * 3 * 8]
    assert real.collective_bytes["reduce_scatter"] == [1, 8 * 3 * 8]
    assert {b.category for b in real.buffers if b.op in ("all_gather", "reduce_scatter")} == {"communication"}
    # 4 simulated ranks holding the same values: gather tiles, reduce-scatter sums 4 copies, g sums 4, f's
    # backward sums 4 more: d/dx = 2 * 4 (reduce-scatter) ... the gradient flows back through each conjugate
    assert grad.shape == (8, 3) and np.all(grad == grad[0, 0])

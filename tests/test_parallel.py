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
from memstudy.run.results.fields import CONV_ROW_FIELDS, PREDICTED_CATEGORY_FIELDS, ROW_FIELDS


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
    ({"pipeline_parallel": 2}, "microbatches 1 < pipeline_parallel 2: the 1f1b schedule needs at least p"),
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
    assert "microbatches 1 < pipeline_parallel 2" in err and "\n" not in err


def test_zero_on_one_rank_says_it_changes_nothing():
    config = normalize({"model": "mlp", "zero": 2})
    assert any("changes nothing" in line for line in notes(config))
    assert notes(normalize({"model": "mlp"})) == []


def test_communication_is_a_category_everywhere():
    assert "communication" in CATEGORIES and "communication" in LATER_CATEGORIES
    assert "communication" in CATEGORY_LABELS and "communication" in CATEGORY_COLORS
    for column in ("peak_communication_bytes", "data_parallel", "zero", "accounted_rank", "shape_only"):
        assert column in ROW_FIELDS
    # appended, after every older column; the shape-only rows' predicted categories after them, then the
    # convolutions' columns
    tail = ("predicted_communication_bytes", *PREDICTED_CATEGORY_FIELDS, *CONV_ROW_FIELDS)
    assert ROW_FIELDS[-len(tail):] == tail


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
    # calls and this rank's input bytes: gather 8x3 (forward) and again in reduce-scatter's backward; reduce-scatter
    # 32x3 (forward) and in gather's backward; all-reduce 8x3 in g's forward and f's backward
    assert real.collective_bytes == {"all_gather": [2, 2 * 8 * 3 * 8], "reduce_scatter": [2, 2 * 32 * 3 * 8],
                                     "all_reduce": [2, 2 * 8 * 3 * 8]}
    assert {b.category for b in real.buffers if b.op in ("all_gather", "reduce_scatter")} == {"communication"}
    # 4 simulated ranks holding the same values: gather tiles, reduce-scatter sums 4 copies, g sums 4, f's
    # backward sums 4 more: d/dx = 2 * 4 (reduce-scatter) ... the gradient flows back through each conjugate
    assert grad.shape == (8, 3) and np.all(grad == grad[0, 0])


# --- ZeRO (memstudy/parallel/zero.py) ------------------------------------------------------------------------------
from memstudy.measure.predict import memoised_account, predict, predicted_account  # noqa: E402

# every parameter's size divisible by 4 ranks: no padding, so ZeRO's Table 1 holds exactly
ZERO_GPT = dict(model="gpt", depth=6, width=16, heads=4, seq_len=8, vocab=24, batch_size=2, optimizer="adam",
                precision="bf16-master", param_persistence_threshold=0)


@pytest.mark.parametrize("stage,states", [(0, lambda p, n: 16 * p), (1, lambda p, n: 4 * p + 12 * p // n),
                                          (2, lambda p, n: 2 * p + 14 * p // n), (3, lambda p, n: 16 * p // n)])
def test_zero_model_states_per_rank_are_table_1(stage, states):
    """bf16 parameters and gradients, fp32 master weights and Adam moments: 2Ψ + 2Ψ + 12Ψ/N, 2Ψ + 14Ψ/N, 16Ψ/N."""
    single = predict({**ZERO_GPT, "data_parallel": 1})
    psi = single["parameter_count"]
    n = 4
    rank = predict({**ZERO_GPT, "data_parallel": n, "zero": stage})
    held = rank["parameter_bytes"] + rank["gradient_bytes"] + rank["optimizer_state_bytes"]
    assert held == states(psi, n)
    assert rank["accounted_rank"] == 0 and rank["rank_choice"] == "largest peak" and rank["shape_only"]


def test_zero_on_one_rank_changes_nothing():
    plain = predict({**ZERO_GPT, "data_parallel": 1})
    for stage in (1, 2, 3):
        zeroed = predict({**ZERO_GPT, "data_parallel": 1, "zero": stage})
        assert {k: v for k, v in zeroed.items() if k in plain} == plain


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_repeated_blocks_stand_for_every_block(stage):
    """The memoised prediction (one block standing for the run of alike ones) equals every block run: no bucket state
    passes from block to block (depth 6: a run of four alike blocks is compressed)."""
    from memstudy.config import normalize

    config = normalize({**ZERO_GPT, "data_parallel": 4, "zero": stage})
    full, memo = predicted_account(config), memoised_account(config)
    assert memo.repeated and not full.repeated
    for name in ("peak_bytes", "step_peak_bytes", "peak_by_category", "max_by_category", "registered_bytes",
                 "saved_tensors", "buffer_count", "collective_bytes", "parameter_count"):
        assert getattr(memo, name) == getattr(full, name), name


def test_zero_3_frees_gathered_parameters_after_each_module():
    """Stage 3 holds at most a few modules' gathered parameters at once, never the whole model's."""
    from memstudy.config import normalize

    config = normalize({**ZERO_GPT, "data_parallel": 4, "zero": 3})
    account = predicted_account(config)
    whole_bytes = 2 * predict({**ZERO_GPT, "data_parallel": 1})["parameter_count"]
    largest = max(b.nbytes for b in account.buffers if b.op == "zero_all_gather")
    assert account.max_by_category["communication"] <= 2 * largest < whole_bytes / 4
    forward = sum(1 for b in account.buffers if b.op == "zero_all_gather")
    backward = sum(1 for b in account.buffers if b.op == "zero_regather")  # gathered again before each backward
    assert forward == backward and account.collective_bytes["all_gather"][0] == forward + backward


def test_zero_table_1_at_64_ranks_for_7_5b():
    """docs/parallel.md's block (slow to render whole): its N = 64 row for 7.5 B, paper 120 / 31.4 / 16.6 / 1.88 GB."""
    from tools import zero_tables as z

    psi = 7.5e9
    assert [z._gb(z.paper_states_bytes(psi, 64, s)) for s in range(4)] == ["120", "31.4", "16.6", "1.88"]
    config = {**z.GPT_BASE, **z.GPT_SIZES[0][1], "data_parallel": 64}
    ours = []
    for stage in range(4):
        states = z.predicted_states({**config, "zero": stage})
        ours.append((states["parameter"] + states["gradient"] + states["optimizer_state"]) / 1e9)
    psi = z.psi_of(z.GPT_SIZES[0][1])
    assert ours[0] == 16 * psi / 1e9 and abs(ours[1] - (4 * psi + 12 * psi / 64) / 1e9) < 0.01
    assert [round(x, 1) for x in ours[:3]] == [119.3, 31.2, 16.5] and round(ours[3], 2) == 1.87


def test_deepspeed_formulas():
    from tools import zero_tables as z

    assert z.deepspeed_zero2_bytes(10**9, 8) == 2 * 10**9 + 18 * 10**9 // 8
    assert z.deepspeed_zero3_bytes(10**9, 10**6, 8) == 4 * 10**6 + 18 * 10**9 // 8

"""The ledger against counts worked out by hand, and against the predictor, exactly.

Everything here runs in-process (memstudy.measure.workload.Workload + ledger_step), so it is fast. The
probes' agreement with the ledger (fresh processes) is tested in test_probe_agreement.py.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from memstudy import nn
from memstudy.autograd import Tensor
from memstudy.config import normalize
from memstudy.measure.ledger import CATEGORIES, Ledger, StepAccount
from memstudy.measure.predict import predict
from memstudy.measure.workload import Workload


def measured(**fields) -> tuple[StepAccount, Workload]:
    """A steady-state step as the cell measures it: warm-up step, gradients None, then the ledger step."""
    work = Workload(normalize(fields))
    work.step()  # warm-up: optimiser state exists
    work.reset()
    return work.ledger_step(), work


# --------------------------------------------------------------------------------------------------
# A tiny graph counted by hand
# --------------------------------------------------------------------------------------------------
# MLP depth 2, width 8, in 4, classes 3, batch 5, float64 (8 bytes), biases, SGD, relu.
B, IN, W, C, ITEM = 5, 4, 8, 3, 8
HIDDEN = B * W * ITEM  # one batch x width buffer: 320
LOGITS = B * C * ITEM  # 120
LOSS = ITEM  # the scalar loss: 8
P0, P1, P2 = (W * IN + W) * ITEM, (W * W + W) * ITEM, (C * W + C) * ITEM  # 320, 576, 216
PARAMS = P0 + P1 + P2  # 1112
INPUTS = B * IN * ITEM + B * 8  # x (160) + int64 labels (40)
BASELINE = PARAMS + INPUTS  # 1312

# The step, event by event (live bytes over the baseline):
#   forward   z0 +320, h0 +320, z0 -320, z1 +320, h1 +320, z1 -320, logits +120, loss +8, probs +120,
#             logits -120                                                              -> 888
#   backward  seed +8, dlogits +120, seed -8, probs -120                               -> 888
#             layer 2: dh1 +320, dW2 +192, db2 +24, dlogits -120                       -> 1304
#             relu 1: dz1 +320, dh1 -320, h1 -320                                      -> 984
#             layer 1: dh0 +320, dW1 +512, db1 +64  (first peak: 1760), dz1 -320       -> 1440
#             relu 0: dz0 +320 (1760 again, not higher), dh0 -320, h0 -320             -> 1120
#             layer 0: (no dx: x needs no grad) dW0 +256, db0 +64, dz0 -320            -> 1120
# At the first 1760: h0 (activation), dh0 + dz1 (temporaries), dW2 db2 dW1 db1 (gradients), loss.
HAND_PEAK_BY_CATEGORY = {
    "parameter": PARAMS,
    "optimizer_state": 0,
    "input": INPUTS,
    "kv_cache": 0,
    "communication": 0,
    "gradient": (C * W + C + W * W + W) * ITEM,  # 792
    "activation": HIDDEN,  # h0 only: h1 was released by relu 1's backward
    "temporary": 2 * HIDDEN,
    "output": LOSS,
}
HAND_STEP_PEAK = 1760


@pytest.fixture(scope="module")
def tiny() -> StepAccount:
    account, _ = measured(depth=2, width=W, in_features=IN, out_features=C, batch_size=B, dtype="float64",
                          bias=True, activation="relu", optimizer="sgd", mode="train")
    return account


def test_tiny_activation_bytes_and_saved_tensors_by_hand(tiny):
    # held for backward at the end of forward: h0, h1 (batch x width each) and the softmax probabilities
    assert tiny.activation_bytes == 2 * 5 * 8 * 8 + 5 * 3 * 8 == 760
    assert tiny.saved_tensors == 3
    activation_buffers = sorted((b.shape, b.saved_by) for b in tiny.buffers if b.category == "activation")
    assert activation_buffers == [((5, 3), "softmax_cross_entropy"), ((5, 8), "relu"), ((5, 8), "relu")]


def test_tiny_parameter_gradient_input_bytes_by_hand(tiny):
    assert tiny.registered_bytes == {"parameter": 1112, "optimizer_state": 0, "input": 200}
    assert PARAMS == 1112 and INPUTS == 200
    gradients = [b for b in tiny.buffers if b.category == "gradient"]
    assert sorted(b.nbytes for b in gradients) == sorted([256, 64, 512, 64, 192, 24])
    assert sum(b.nbytes for b in gradients) == PARAMS
    assert tiny.max_by_category["gradient"] == PARAMS
    assert tiny.baseline_bytes == BASELINE == 1312


def test_tiny_peak_by_hand_and_breakdown_sums_to_peak(tiny):
    assert tiny.step_peak_bytes == HAND_STEP_PEAK
    assert tiny.peak_bytes == BASELINE + HAND_STEP_PEAK == 3072
    assert tiny.step_peak_bytes == tiny.peak_bytes - tiny.baseline_bytes
    assert tiny.peak_by_category == HAND_PEAK_BY_CATEGORY
    assert sum(tiny.peak_by_category.values()) == tiny.peak_bytes
    # the peak is the first event reaching 1760: layer 1's bias gradient
    peak = tiny.events[tiny.peak_event]
    assert (peak.phase, peak.op, peak.layer, peak.delta_bytes) == ("backward", "linear_backward", 1, 64)


def test_relu_output_saved_by_relu_and_next_linear_counts_once(tiny):
    # h0 and h1 are each saved by their relu (as out) and by the next Linear (as x): one buffer each
    hidden_saved = [b for b in tiny.buffers if b.category == "activation" and b.shape == (B, W)]
    assert len(hidden_saved) == 2
    assert [b.saved_layer for b in hidden_saved] == [0, 1]
    # counted twice, activation_bytes would be 4 * 320 + 120
    assert tiny.activation_bytes == 2 * HIDDEN + LOGITS


def test_buffer_saved_by_two_ops_counted_once_and_view_adds_no_bytes():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((5, 8)), requires_grad=True)
    weight = Tensor(rng.standard_normal((3, 8)), requires_grad=True)
    ledger = Ledger()
    ledger.register(x.data, "input")
    ledger.register(weight.data, "parameter", layer=0, leaf=weight)
    with ledger:
        h = x.relu()  # saved by relu
        y = nn.functional.linear(h, weight)  # saves h again (as x)
        t = h.T  # a view of h's buffer
        p = t * t  # saves two views of h (a and b)
        s = p.sum()
        n_events = len(ledger.events)
    account = ledger.finish()
    # the engine really did save h three more times, under other names / as views
    relu_saved = h._node.saved[0]
    assert y._node.saved[0] is relu_saved
    assert all(a.base is relu_saved for a in p._node.saved)
    # the ledger: h once; y, p and s are new buffers; the transpose made no buffer and no event
    new = [b for b in account.buffers if b.phase != "baseline"]
    assert [b.op for b in new] == ["relu", "linear", "mul", "sum"]
    assert [b.nbytes for b in new] == [5 * 8 * 8, 5 * 3 * 8, 8 * 5 * 8, 8]
    assert len(account.events) == n_events == 2 + 4  # two registrations, four new buffers, no frees
    assert "transpose" not in {b.op for b in account.buffers}
    assert account.saved_tensors == 1
    assert account.activation_bytes == h.data.nbytes == 320
    assert account.step_peak_bytes == 320 + 120 + 320 + 8
    del t, s  # kept alive until finish(), so nothing above was freed


def test_tiny_timeline_ends_with_what_is_alive(tiny):
    rows = tiny.timeline_rows()
    assert len(rows) == len(tiny.events)
    last = rows[-1]
    # alive after the step: the baseline (parameters, inputs), every gradient and the loss
    assert last["live_bytes"] == BASELINE + PARAMS + LOSS == 2432
    assert {c: last[f"{c}_bytes"] for c in CATEGORIES} == {
        "parameter": PARAMS, "optimizer_state": 0, "input": INPUTS, "kv_cache": 0, "communication": 0, "gradient": PARAMS,
        "activation": 0, "temporary": 0, "output": LOSS,
    }
    assert sum(r["delta_bytes"] for r in rows) == last["live_bytes"]
    assert max(r["live_bytes"] for r in rows) == tiny.peak_bytes
    assert rows[tiny.peak_event]["live_bytes"] == tiny.peak_bytes
    for row in rows:
        assert row["live_bytes"] == sum(row[f"{c}_bytes"] for c in CATEGORIES)
    phases = [r["phase"] for r in rows]
    assert phases == sorted(phases, key=["baseline", "forward", "backward", "optimizer"].index)


def test_tiny_by_layer(tiny):
    assert tiny.by_layer() == [
        {"layer": 0, "activation_bytes": HIDDEN, "parameter_bytes": P0, "gradient_bytes": P0, "gradient_buffers": 2},
        {"layer": 1, "activation_bytes": HIDDEN, "parameter_bytes": P1, "gradient_bytes": P1, "gradient_buffers": 2},
        {"layer": 2, "activation_bytes": 0, "parameter_bytes": P2, "gradient_bytes": P2, "gradient_buffers": 2},
        {"layer": "loss", "activation_bytes": LOGITS, "parameter_bytes": 0, "gradient_bytes": 0, "gradient_buffers": 0},
    ]


# --------------------------------------------------------------------------------------------------
# Ledger == predictor, exactly, for every combination
# --------------------------------------------------------------------------------------------------
COMBINATIONS = list(itertools.product(
    ("relu", "sigmoid", "tanh"), ("float32", "float64"), ("sgd", "momentum", "adam"), (True, False),
    ("train", "inference"),
))


def assert_ledger_equals_predictor(config: dict) -> StepAccount:
    config = normalize(config)
    account, work = measured(**config)
    prediction = predict(config)
    train = config["mode"] == "train"
    parameter_bytes = account.registered_bytes["parameter"]
    assert parameter_bytes == prediction["parameter_bytes"] == work.model.parameter_nbytes()
    assert account.registered_bytes["optimizer_state"] == prediction["optimizer_state_bytes"]
    assert account.registered_bytes["input"] == prediction["input_bytes"]
    assert account.activation_bytes == prediction["predicted_activation_bytes"]
    assert account.saved_tensors == prediction["predicted_saved_tensors"]
    # gradients: every parameter's gradient is alive at the end of a training step, none in inference
    final_gradient_bytes = account.timeline_rows()[-1]["gradient_bytes"]
    assert final_gradient_bytes == account.max_by_category["gradient"] == prediction["gradient_bytes"]
    assert final_gradient_bytes == (parameter_bytes if train else 0)
    assert account.peak_bytes == prediction["predicted_peak_bytes"]
    assert account.step_peak_bytes == prediction["predicted_step_peak_bytes"]
    assert account.peak_by_category == prediction["predicted_peak_by_category"]
    if train:
        assert account.activation_bytes > 0 and final_gradient_bytes > 0
    else:
        assert account.activation_bytes == 0 and account.saved_tensors == 0
    return account


@pytest.mark.parametrize("activation,dtype,optimizer,bias,mode", COMBINATIONS)
def test_ledger_equals_predictor(activation, dtype, optimizer, bias, mode):
    assert_ledger_equals_predictor(dict(depth=3, width=16, in_features=12, out_features=5, batch_size=7,
                                        activation=activation, dtype=dtype, optimizer=optimizer, bias=bias,
                                        mode=mode))


# Sizes where the peak falls inside backward, before the gradients dominate (in an activation's
# backward, or in the loss's backward): the order of every allocation and free there must match too.
ACTIVATION_HEAVY = {
    "batch-heavy": dict(depth=3, width=16, in_features=12, out_features=5, batch_size=200),
    "classes-heavy": dict(depth=2, width=8, in_features=4, out_features=300, batch_size=50),
    "one-layer": dict(depth=1, width=64, in_features=3, out_features=2, batch_size=100),
}


@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", list(ACTIVATION_HEAVY), ids=list(ACTIVATION_HEAVY))
def test_ledger_equals_predictor_when_peak_is_mid_backward(shape, activation, dtype, mode):
    account = assert_ledger_equals_predictor({**ACTIVATION_HEAVY[shape], "activation": activation,
                                              "dtype": dtype, "mode": mode})
    if mode == "train":
        peak = account.events[account.peak_event]
        assert peak.phase == "backward" and account.peak_by_category["activation"] > 0


@pytest.mark.parametrize("optimizer,copies", [("sgd", 0), ("momentum", 1), ("adam", 2)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_optimizer_state_is_copies_of_parameters(optimizer, copies, dtype):
    config = dict(depth=3, width=16, in_features=12, out_features=5, batch_size=7, dtype=dtype,
                  optimizer=optimizer, mode="train")
    account, work = measured(**config)
    parameter_bytes = account.registered_bytes["parameter"]
    assert parameter_bytes > 0
    assert account.registered_bytes["optimizer_state"] == copies * parameter_bytes
    assert work.optimizer.state_nbytes() == copies * parameter_bytes
    assert predict(config)["optimizer_state_bytes"] == copies * parameter_bytes
    # inference registers no optimiser state, whatever the optimiser
    account, _ = measured(**{**config, "mode": "inference"})
    assert account.registered_bytes["optimizer_state"] == 0


# --------------------------------------------------------------------------------------------------
# How the bytes scale
# --------------------------------------------------------------------------------------------------
def test_inference_peak_over_parameters_and_input_does_not_grow_with_depth():
    above = {}
    for depth in (2, 32):
        account, _ = measured(depth=depth, width=256, batch_size=64, mode="inference")
        above[depth] = (account.peak_bytes - account.registered_bytes["parameter"]
                        - account.registered_bytes["input"])
    print(f"inference peak - parameters - input: {above}")
    assert above[2] > 0
    assert abs(above[32] - above[2]) <= 0.05 * above[2], above


def test_training_activation_bytes_linear_in_depth():
    batch, width, itemsize = 64, 256, 4
    activation = {d: measured(depth=d, width=width, batch_size=batch, mode="train")[0].activation_bytes
                  for d in (1, 2, 4, 8)}
    depths = sorted(activation)
    slopes = [(activation[b] - activation[a]) / (b - a) for a, b in zip(depths, depths[1:])]
    assert slopes == [batch * width * itemsize] * 3, activation


def test_training_activation_bytes_linear_in_batch():
    depth, width, classes, itemsize = 4, 256, 10, 4
    activation = {b: measured(depth=depth, width=width, batch_size=b, out_features=classes,
                              mode="train")[0].activation_bytes for b in (16, 32, 64)}
    slope = depth * width * itemsize + classes * itemsize
    assert activation == {b: b * slope for b in (16, 32, 64)}
    batches = sorted(activation)
    assert [(activation[b] - activation[a]) / (b - a) for a, b in zip(batches, batches[1:])] == [slope, slope]


def test_by_layer_places_parameters_by_the_op_that_takes_them():
    """Issue 21 item 9: a model without parameter_layers() had every parameter in the "loss" row; each parameter
    now sits in the layer of the first op that takes it, and its gradient with it."""
    from pathlib import Path

    from memstudy.measure.workload import Workload
    from memstudy.nn.models.registry import normalize

    family = f"{Path(__file__).parent}/families/plain.py:PlainFamily"  # layer_scope per block, no parameter_layers
    account = Workload(normalize({"model": family, "depth": 2, "width": 8, "batch_size": 4, "classes": 3})).ledger_step()
    rows = {r["layer"]: r for r in account.by_layer()}
    block, head = (8 * 8 + 8) * 4, (8 * 3 + 3) * 4
    assert [rows[i]["parameter_bytes"] for i in (0, 1, 2)] == [block, block, head]
    assert [rows[i]["gradient_bytes"] for i in (0, 1, 2)] == [block, block, head]
    assert rows["loss"]["parameter_bytes"] == 0


def test_by_layer_counts_a_tied_weights_gradient_twice():
    """GPT-2's wte is also lm_head: its gradient is made by lm_head's backward, then summed with the embedding's;
    the embedding layer's row counts both buffers (3 for 2 parameters), which the run's table explains."""
    from memstudy.measure.workload import Workload
    from memstudy.nn.models.registry import normalize

    config = normalize({"model": "gpt", "depth": 1, "width": 8, "heads": 2, "seq_len": 4, "vocab": 10,
                        "batch_size": 2})
    rows = {r["layer"]: r for r in Workload(config).ledger_step().by_layer()}
    embedding = rows[2]  # depth + 1
    wte, wpe = 10 * 8 * 4, 4 * 8 * 4
    assert embedding["parameter_bytes"] == wte + wpe
    assert embedding["gradient_buffers"] == 3 and embedding["gradient_bytes"] == 2 * wte + wpe

"""The CNN family: its module tree, its config rules, and what the ledger counts for one step (by hand)."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import rel_error
from memstudy import nn
from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import ConfigError, get_family, normalize


def config(**fields):
    return normalize({"model": "cnn", "dtype": "float32", **fields})


def test_parameter_names_follow_pytorch_and_layers_are_blocks():
    model = nn.CNN(in_channels=3, width=4, depth=2, classes=5, batch_norm=True)
    names = [name for name, _ in model.named_parameters()]
    assert names == ["features.0.conv.weight", "features.0.bn.weight", "features.0.bn.bias",
                     "features.1.conv.weight", "features.1.bn.weight", "features.1.bn.bias",
                     "classifier.weight", "classifier.bias"]
    assert [p.shape for p in model.parameters()] == [(4, 3, 3, 3), (4,), (4,), (8, 4, 3, 3), (8,), (8,), (5, 8), (5,)]
    assert model.parameter_layers() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert [name for name, _ in model.named_buffers()] == [
        "features.0.bn.running_mean", "features.0.bn.running_var",
        "features.1.bn.running_mean", "features.1.bn.running_var"]
    assert model.buffer_layers() == [0, 0, 1, 1]
    plain = nn.CNN(in_channels=1, width=2, depth=1, classes=3, batch_norm=False)
    assert [name for name, _ in plain.named_parameters()] == ["features.0.conv.weight", "features.0.conv.bias",
                                                              "classifier.weight", "classifier.bias"]
    assert plain.named_buffers() == []


def test_family_fields_defaults_and_layer_names():
    cfg = config()
    assert (cfg["depth"], cfg["width"], cfg["image_size"], cfg["in_channels"], cfg["classes"], cfg["batch_norm"],
            cfg["conv_save"]) == (3, 16, 32, 3, 10, True, "input")
    assert get_family("cnn").layer_names(cfg) == ["block 0 (16 ch, 32×32)", "block 1 (32 ch, 16×16)",
                                                  "block 2 (64 ch, 8×8)", "head"]
    x, y = get_family("cnn").batch(config(batch_size=5, image_size=8, in_channels=2, classes=4))
    assert x.shape == (5, 2, 8, 8) and x.dtype == np.float32 and y.shape == (5,) and y.max() < 4


@pytest.mark.parametrize("fields,message", [
    ({"image_size": 4, "depth": 3}, "image_size 4 is too small for 3 pooling blocks"),
    ({"image_size": 0}, "image_size must be at least 1"),
    ({"image_size": -8}, "image_size must be at least 1"),
    ({"in_channels": 0}, "in_channels must be at least 1"),
    ({"classes": 0}, "classes must be at least 1"),
    ({"width": 0}, "width must be at least 1"),
    ({"conv_save": "outputs"}, "conv_save must be one of input, columns"),
    ({"batch_norm": "yes"}, "batch_norm must be true or false"),
])
def test_bad_configs_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError, match=message) as info:
        config(**fields)
    assert "\n" not in str(info.value)


def test_the_smallest_image_for_the_depth_is_accepted():
    assert config(image_size=8, depth=3)["image_size"] == 8


def step_grads(cfg):
    work = Workload(cfg)
    work.reset()
    loss = work.loss(work.policy)
    loss.backward()
    return ({name: p.grad.copy() for name, p in work.model.named_parameters()},
            {name: a.copy() for name, a in work.model.named_buffers()})


@pytest.mark.parametrize("batch_norm", [True, False])
def test_conv_save_and_checkpointing_give_the_same_gradients_and_statistics(batch_norm):
    base = dict(dtype="float64", depth=3, width=4, image_size=16, batch_size=4, batch_norm=batch_norm)
    grads, stats = step_grads(config(**base))
    for variant in ({"conv_save": "columns"}, {"checkpoint": "sqrt"}, {"checkpoint": "every:1"},
                    {"checkpoint": "sqrt", "conv_save": "columns"}):
        other_grads, other_stats = step_grads(config(**base, **variant))
        for name in grads:
            assert rel_error(other_grads[name], grads[name]) < 1e-12, (variant, name)
        for name in stats:  # a recomputed segment must not update the running statistics a second time
            assert rel_error(other_stats[name], stats[name]) < 1e-14, (variant, name)


def expected_activation_bytes(batch, width, depth, side, classes, batch_norm, conv_save, itemsize=4,
                              in_channels=3):
    """Per layer, the bytes held for backward in the CNN as worked out by hand (the attribution is the layer
    whose op saved the buffer first: a block's input is saved by its convolution)."""
    per_layer = {}
    channels = in_channels
    for i in range(depth):
        out_channels = width * 2 ** i
        plane = batch * side * side
        if conv_save == "columns":
            held = plane * channels * 9 * itemsize
        else:
            held = 0 if i == 0 else plane * channels * itemsize  # block 0's input is the registered input
        if batch_norm:
            held += plane * out_channels * itemsize + 2 * out_channels * itemsize  # x, mean, invstd
        held += plane * out_channels * itemsize  # ReLU's output
        held += batch * out_channels * (side // 2) ** 2  # max-pool's positions, one byte each
        per_layer[i] = held
        channels, side = out_channels, side // 2
    per_layer[depth] = batch * channels * itemsize  # the classifier's input (global pooling saves nothing)
    per_layer["loss"] = batch * classes * itemsize  # the softmax probabilities
    return per_layer


@pytest.mark.parametrize("conv_save", ["input", "columns"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_ledger_activation_bytes_per_layer_by_hand(batch_norm, conv_save):
    cfg = config(depth=3, width=4, image_size=16, batch_size=3, classes=5, batch_norm=batch_norm,
                 conv_save=conv_save)
    work = Workload(cfg)
    work.step()  # warm-up
    work.reset()
    account = work.ledger_step()
    by_layer = {row["layer"]: row["activation_bytes"] for row in account.by_layer()}
    expected = expected_activation_bytes(3, 4, 3, 16, 5, batch_norm, conv_save)
    assert by_layer == expected
    assert account.activation_bytes == sum(expected.values())  # everything is held at the end of forward


def test_running_statistics_are_model_state_not_gradients_or_activations():
    work = Workload(config(depth=2, width=4, image_size=8, batch_size=2))
    work.step()
    work.reset()
    account = work.ledger_step()
    state = [b for b in account.buffers if b.role.endswith(("running_mean", "running_var"))]
    assert [(b.role, b.category, b.layer) for b in state] == [
        ("features.0.bn.running_mean", "parameter", 0), ("features.0.bn.running_var", "parameter", 0),
        ("features.1.bn.running_mean", "parameter", 1), ("features.1.bn.running_var", "parameter", 1)]
    parameters = sum(p.nbytes for p in work.model.parameters())
    assert account.registered_bytes["parameter"] == parameters + sum(b.nbytes for b in state)
    assert account.peak_by_category["gradient"] <= parameters  # the statistics take no gradient


def test_checkpointing_holds_less_and_recomputes():
    base = dict(depth=4, width=4, image_size=16, batch_size=4)
    plain = Workload(config(**base))
    plain.step()
    plain.reset()
    plain_account = plain.ledger_step()
    ckpt = Workload(config(**base, checkpoint="sqrt"))
    ckpt.step()
    ckpt.reset()
    ckpt_account = ckpt.ledger_step()
    assert ckpt_account.recomputed_ops > 0 and plain_account.recomputed_ops == 0
    assert ckpt_account.activation_bytes < plain_account.activation_bytes


def test_inference_holds_nothing_for_backward_and_counts_the_column_workspace():
    work = Workload(config(mode="inference", depth=2, width=4, image_size=8, batch_size=2))
    assert work.model.features[0].bn.training is False  # inference normalises by the running statistics
    work.step()
    work.reset()
    account = work.ledger_step()
    assert account.activation_bytes == 0
    columns = [b for b in account.buffers if b.op == "conv2d.columns"]
    assert [b.nbytes for b in columns] == [2 * 3 * 9 * 8 * 8 * 4, 2 * 4 * 9 * 4 * 4 * 4]


def test_model_rejects_an_image_too_small_for_its_pooling():
    model = nn.CNN(in_channels=1, width=2, depth=3, classes=2)
    with pytest.raises(ValueError, match="does not fit"):
        model(np.zeros((2, 1, 4, 4), dtype=np.float32))


@pytest.mark.parametrize("mode,conv_save,checkpoint", [("train", "input", "none"), ("train", "columns", "sqrt"),
                                                       ("inference", "input", "none")])
def test_tracemalloc_sees_no_more_than_the_ledger_plus_small_change(mode, conv_save, checkpoint):
    """Every column workspace, and every result made beside one, is in the ledger at the right moment: numpy's
    own count of the step's peak (tracemalloc) exceeds the ledger's only by Python objects and small scratch."""
    from memstudy.measure import probes

    work = Workload(config(mode=mode, conv_save=conv_save, checkpoint=checkpoint, depth=3, width=16, image_size=64,
                           batch_size=4))
    work.step()
    work.reset()
    ledger_bytes = work.ledger_step().step_peak_bytes
    work.reset()
    traced_bytes = probes.tracemalloc_step_peak_bytes(work.step)
    assert ledger_bytes > 2 * 2 ** 20
    assert 0 <= traced_bytes - ledger_bytes < 48 * 1024, (traced_bytes, ledger_bytes)

"""nn.GPT and the `gpt` family: names, layers, initialisation, bad input, checkpointing, dropout's gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest

from memstudy import nn
from memstudy.autograd import Tensor, no_grad
from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import ConfigError, get_family, normalize

SMALL = dict(vocab=23, seq_len=8, depth=3, width=16, heads=4)


def small_config(**fields):
    return normalize({"model": "gpt", **SMALL, "batch_size": 2, **fields})


def test_parameter_names_are_nanogpts_and_the_tied_head_is_listed_once():
    model = nn.GPT(**SMALL)
    names = [name for name, _ in model.named_parameters()]
    block = [f"transformer.h.0.{n}" for n in (
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
        "mlp.c_proj.bias")]
    assert names[:2] == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert names[2:14] == block
    assert names[-2:] == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    assert len(names) == 2 + 12 * 3 + 2 and not any("lm_head" in n for n in names)
    assert model.lm_head.weight is model.transformer.wte.weight
    h, v = SMALL["width"], SMALL["vocab"]
    expected = v * h + SMALL["seq_len"] * h + 3 * (12 * h * h + 13 * h) + 2 * h  # GPT-2's count, tied head
    assert sum(p.data.size for p in model.parameters()) == expected


def test_without_bias_there_are_no_bias_parameters():
    names = [name for name, _ in nn.GPT(**SMALL, bias=False).named_parameters()]
    assert not any(n.endswith(".bias") for n in names) and len(names) == 2 + 6 * 3 + 1


def test_parameter_layers_blocks_then_head_then_embedding():
    model = nn.GPT(**SMALL)
    layers = dict(zip([n for n, _ in model.named_parameters()], model.parameter_layers()))
    assert layers["transformer.wte.weight"] == layers["transformer.wpe.weight"] == SMALL["depth"] + 1
    assert layers["transformer.h.2.mlp.c_fc.weight"] == 2 and layers["transformer.h.0.ln_1.bias"] == 0
    assert layers["transformer.ln_f.weight"] == SMALL["depth"]
    config = small_config()
    assert get_family("gpt").layer_names(config) == ["block 0", "block 1", "block 2", "head", "embedding"]


def test_initialisation_is_gpt2s():
    model = nn.GPT(vocab=500, seq_len=64, depth=4, width=128, heads=4, seed=1)
    params = dict(model.named_parameters())
    assert abs(params["transformer.wte.weight"].data.std() - 0.02) < 0.001
    assert abs(params["transformer.h.0.attn.c_attn.weight"].data.std() - 0.02) < 0.001
    scaled = 0.02 / math.sqrt(2 * 4)
    for name in ("transformer.h.1.attn.c_proj.weight", "transformer.h.1.mlp.c_proj.weight"):
        assert abs(params[name].data.std() - scaled) < 0.0005, name
    assert np.all(params["transformer.h.0.ln_1.weight"].data == 1)
    assert np.all(params["transformer.h.0.ln_1.bias"].data == 0)
    assert np.all(params["transformer.h.0.attn.c_attn.bias"].data == 0)
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert all(p.dtype == np.float64 for p in nn.GPT(**SMALL, dtype="float64").parameters())


def test_logits_shape_and_the_step_runs_in_float32():
    work = Workload(small_config(optimizer="adam", dropout=0.1))
    assert work.inputs.shape == (2, 8) and work.labels.shape == (2, 8)
    tokens = work.inputs.data.base
    np.testing.assert_array_equal(work.labels, tokens[:, 1:])  # next-token targets
    assert tokens.min() >= 0 and tokens.max() < SMALL["vocab"]
    logits = work.model(work.inputs)
    assert logits.shape == (2, 8, SMALL["vocab"]) and logits.dtype == np.float32
    loss = work.step()
    assert loss.dtype == np.float32 and np.isfinite(loss.data)


def test_causal_logits_do_not_depend_on_later_tokens():
    model = nn.GPT(**SMALL, dtype="float64")
    idx = np.random.default_rng(0).integers(0, SMALL["vocab"], size=(2, 8))
    other = idx.copy()
    other[:, 5:] = (other[:, 5:] + 1) % SMALL["vocab"]
    with no_grad():
        a, b = model(idx).data, model(other).data
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=0, atol=1e-12)
    assert not np.allclose(a[:, 5:], b[:, 5:])


# --- bad input: one line each --------------------------------------------------------------------------

@pytest.mark.parametrize("fields,message", [
    (dict(width=18, heads=4), "heads must divide width: width 18 is not a multiple of heads 4"),
    (dict(dropout=1.0), "dropout must be below 1"),
    (dict(dropout=-0.1), "dropout must be at least 0"),
    (dict(checkpoint="everything"), "checkpoint must be none, sqrt, selective or every:K"),
    (dict(seq_len=0), "seq_len must be at least 1"),
])
def test_bad_configs_get_one_line(fields, message):
    with pytest.raises(ConfigError) as caught:
        small_config(**fields)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_bad_model_arguments_and_tokens_get_one_line():
    with pytest.raises(ValueError, match="heads must divide width"):
        nn.GPT(vocab=5, seq_len=4, depth=1, width=10, heads=4)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        nn.GPT(vocab=5, seq_len=4, depth=1, width=8, heads=2, dropout=1.0)
    model = nn.GPT(**SMALL)
    cases = [
        (np.zeros((2, 9), dtype=np.int64), "sequence length 9 is above the model's seq_len 8"),
        (np.full((2, 4), 23), r"token ids must be in \[0, 23\), got ids from 23 to 23"),
        (np.full((2, 4), -1), r"token ids must be in \[0, 23\)"),
        (np.zeros((2, 4)), "tokens must be integers"),
        (np.zeros(4, dtype=np.int64), r"tokens must be a \(batch, seq_len\) array"),
    ]
    for idx, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            model(idx)
        assert "\n" not in str(caught.value)


# --- checkpointing and dropout --------------------------------------------------------------------------

def gradients(config):
    work = Workload(config)
    loss = work.loss("minimal")
    loss.backward()
    return float(loss.data), {name: p.grad.copy() for name, p in work.model.named_parameters()}, work


@pytest.mark.parametrize("checkpoint", ["sqrt", "every:1", "every:2", "selective"])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_checkpointing_gives_the_same_gradients(checkpoint, dropout):
    loss, grads, _ = gradients(small_config(dtype="float64", dropout=dropout))
    loss_c, grads_c, work = gradients(small_config(dtype="float64", dropout=dropout, checkpoint=checkpoint))
    assert loss_c == loss
    for name, g in grads.items():
        np.testing.assert_allclose(grads_c[name], g, rtol=1e-12, atol=1e-14, err_msg=name)
    account_plain = Workload(small_config(dropout=dropout)).ledger_step()
    account = Workload(small_config(dropout=dropout, checkpoint=checkpoint)).ledger_step()
    assert account.recomputed_ops > 0 and account_plain.recomputed_ops == 0
    held = sum(b.nbytes for b in account.buffers if b.category == "activation" and b.phase == "forward")
    held_plain = sum(b.nbytes for b in account_plain.buffers if b.category == "activation")
    assert held < held_plain


def test_selective_recomputes_the_attention_core_only():
    config = small_config(dropout=0.1, checkpoint="selective")
    account = Workload(config).ledger_step()
    recomputed = [b.op for b in account.buffers if b.phase == "recompute" and b.role == "out"]
    # per block: q @ kᵀ, scale, mask, softmax, dropout, @ v (and the transposes that are views of k)
    assert set(recomputed) == {"batched_matmul", "scale", "causal_mask", "softmax", "dropout"}
    assert account.recomputed_ops == SMALL["depth"] * 7  # those six ops and k's transpose, per block


def test_dropout_gradient_is_the_directional_derivative():
    """With dropout > 0 the model's gradient (masks fixed by the forward call's generators) matches central
    differences along a random direction over every parameter."""
    model = nn.GPT(**SMALL, dropout=0.3, dtype="float64", seed=2)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, SMALL["vocab"], size=(2, 9))

    def loss_at(call):
        model.calls = call - 1  # the same forward call: the same dropout masks
        return nn.cross_entropy(model(idx[:, :-1]), idx[:, 1:])

    loss = loss_at(1)
    loss.backward()
    params = model.parameters()
    direction = [rng.standard_normal(p.shape) for p in params]
    analytic = sum(float(np.vdot(p.grad, d)) for p, d in zip(params, direction))
    eps = 1e-6
    values = []
    for sign in (1, -1):
        for p, d in zip(params, direction):
            p.data += sign * eps * d
        with no_grad():
            values.append(float(loss_at(1).data))
        for p, d in zip(params, direction):
            p.data -= sign * eps * d
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))
    with no_grad():  # another call draws other masks
        assert float(loss_at(2).data) != float(loss_at(1).data)


def test_evaluation_mode_has_no_dropout_and_inference_holds_nothing():
    model = nn.GPT(**SMALL, dropout=0.5, dtype="float64")
    idx = np.random.default_rng(0).integers(0, SMALL["vocab"], size=(2, 8))
    model.eval()
    with no_grad():
        a, b = model(idx).data, model(idx).data
    np.testing.assert_array_equal(a, b)
    account = Workload(small_config(dropout=0.5, mode="inference")).ledger_step()
    assert account.activation_bytes == 0 and not Workload(small_config(mode="inference")).model.training


def test_model_accepts_a_tensor_of_tokens():
    model = nn.GPT(**SMALL, dtype="float64")
    idx = np.random.default_rng(0).integers(0, SMALL["vocab"], size=(2, 5))
    with no_grad():
        np.testing.assert_array_equal(model(idx).data, model(Tensor(idx)).data)

"""LoRA (memstudy/nn/lora.py) on every family whose layers are Linears: names, freezing and output as peft's;
what it saves, read from the ledger's buffers: gradients and optimiser state for the adapters only, and no input
kept by a frozen Linear."""
from __future__ import annotations

import numpy as np
import pytest

from memstudy import nn
from memstudy.autograd import Tensor, apply, ops, saved_buffers
from memstudy.config import ConfigError, normalize
from memstudy.measure.workload import Workload
from memstudy.nn.lora import LoraLinear, add_lora

LLAMA = dict(vocab=23, seq_len=6, depth=2, width=16, heads=4, kv_heads=2, ffn=24, dtype="float64", seed=0)


def test_add_lora_names_freezes_and_initialises_as_peft():
    model = add_lora(nn.Llama(**LLAMA), rank=4, alpha=8.0, targets="q_proj,v_proj", seed=1)
    names = [n for n, _ in model.named_parameters()]
    assert names[:8] == ["model.embed_tokens.weight",
                         "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.lora_A.weight",
                         "model.layers.0.self_attn.q_proj.lora_B.weight", "model.layers.0.self_attn.k_proj.weight",
                         "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.v_proj.lora_A.weight",
                         "model.layers.0.self_attn.v_proj.lora_B.weight"]
    params = dict(model.named_parameters())
    trainable = [n for n, p in params.items() if p.requires_grad]
    assert trainable == [n for n in names if ".lora_" in n] and len(trainable) == 2 * 2 * LLAMA["depth"]
    a, b = params["model.layers.0.self_attn.v_proj.lora_A.weight"], params["model.layers.0.self_attn.v_proj.lora_B.weight"]
    assert a.shape == (4, 16) and b.shape == (8, 4)  # r × in, out × r (v_proj: 16 → kv·d = 8)
    assert np.all(b.data == 0) and 0 < np.abs(a.data).max() <= 1 / np.sqrt(16)  # kaiming_uniform(a=√5), zeros
    assert isinstance(model.model.layers[1].self_attn.q_proj, LoraLinear)
    assert not isinstance(model.model.layers[1].self_attn.k_proj, LoraLinear)


def test_lora_output_is_base_plus_scaled_low_rank_product():
    base = nn.Linear(5, 3, True, "float64", np.random.default_rng(0))
    weight, bias = base.weight.data.copy(), base.bias.data.copy()
    layer = LoraLinear(base, rank=2, alpha=6.0, rng=np.random.default_rng(1))
    layer.lora_B.weight.data[...] = np.random.default_rng(2).standard_normal((3, 2))
    x = np.random.default_rng(3).standard_normal((4, 5))
    expected = x @ weight.T + bias + (6.0 / 2) * (x @ layer.lora_A.weight.data.T) @ layer.lora_B.weight.data.T
    np.testing.assert_allclose(layer(Tensor(x)).data, expected, rtol=1e-14)
    model = nn.Llama(**LLAMA)
    ids = np.random.default_rng(4).integers(0, 23, size=(2, 6))
    before = model(ids).data
    np.testing.assert_array_equal(add_lora(model, rank=2)(ids).data, before)  # lora_B = 0: the same model at first


def test_targets_match_as_pefts_list_and_all_linear_leaves_the_head_out():
    gpt = add_lora(nn.GPT(vocab=11, seq_len=4, depth=2, width=8, heads=2), rank=2, targets="c_attn")
    assert [n for n, p in gpt.named_parameters() if p.requires_grad] == [
        f"transformer.h.{i}.attn.c_attn.lora_{ab}.weight" for i in range(2) for ab in "AB"]
    mlp = add_lora(nn.MLP(in_features=6, hidden=8, depth=3, out_features=4), rank=2, targets="all-linear")
    assert [n for n, p in mlp.named_parameters() if p.requires_grad] == [
        f"hidden_layers.{i}.lora_{ab}.weight" for i in range(3) for ab in "AB"]
    assert len(mlp.parameter_layers()) == len(mlp.parameters())
    llama = add_lora(nn.Llama(**LLAMA), rank=2, targets="all-linear")
    adapted = {n.rsplit(".", 3)[-3] for n, p in llama.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # not lm_head
    one = add_lora(nn.Llama(**LLAMA), rank=2, targets=["layers.1.mlp.up_proj"])  # a dotted suffix: one layer
    assert [n for n, p in one.named_parameters() if p.requires_grad] == [
        "model.layers.1.mlp.up_proj.lora_A.weight", "model.layers.1.mlp.up_proj.lora_B.weight"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(rank=0), "lora_rank must be a positive integer"),
    (dict(rank=9, targets="v_proj"), "lora_rank 9 is above the dimensions of model.layers.0.self_attn.v_proj "
                                     "(16 -> 8): at most 8"),
    (dict(rank=2, targets="q_proj,qproj"), "lora_targets: 'qproj' matches no Linear of the model"),
    (dict(rank=2, targets=" , "), "lora_targets names no Linear"),
    (dict(rank=2, targets="all-linear,q_proj"), "all-linear stands alone"),
])
def test_bad_lora_arguments_name_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        add_lora(nn.Llama(**LLAMA), **kwargs)


def test_adding_lora_twice_is_refused():
    model = add_lora(nn.Llama(**LLAMA), rank=2)
    with pytest.raises(ValueError, match="has LoRA adapters already"):
        add_lora(model, rank=2)


@pytest.mark.parametrize("fields,message", [
    (dict(model="llama", lora_rank=65), "lora_rank 65 is above the dimensions of model.layers.0.self_attn.q_proj"),
    (dict(model="llama", lora_rank=2, lora_targets="c_attn"), "lora_targets: 'c_attn' matches no Linear"),
    (dict(model="gpt", lora_rank=2, lora_targets="q_proj"), "lora_targets: 'q_proj' matches no Linear"),
    (dict(model="mlp", width=8, lora_rank=9), "lora_rank 9 is above the dimensions of hidden_layers.0"),
    (dict(model="llama", lora_rank=-1), "lora_rank must be at least 0"),
])
def test_bad_lora_fields_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        normalize(fields)


def test_lora_fields_leave_earlier_cell_ids_and_descriptions_alone():
    from memstudy.nn.models.registry import get_family
    from memstudy.run.spec import cell_id

    gpt = normalize(dict(model="gpt"))
    assert "lora" not in cell_id(gpt) and "lora" not in get_family("gpt").describe(gpt)
    mlp = normalize(dict(model="mlp", lora_rank=2))
    assert cell_id(mlp).endswith("-lora_rank=2") and "lora rank 2" in get_family("mlp").describe(mlp)
    assert cell_id(mlp) != cell_id(normalize(dict(model="mlp")))


def test_a_frozen_linear_keeps_its_weight_not_its_input():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True) * 1.0
    trained = Tensor(np.ones((2, 4)), requires_grad=True)
    frozen = Tensor(np.ones((2, 4)))
    assert [(b.role, b.kind) for b in saved_buffers(apply(ops.Linear, x, trained))] == [
        ("x", "activation"), ("weight", "parameter")]
    assert [(b.role, b.kind) for b in saved_buffers(apply(ops.Linear, x, frozen))] == [("weight", "parameter")]


def trainable_count(work: Workload) -> tuple[int, int]:
    params = work.model.parameters()
    return sum(p.data.size for p in params if p.requires_grad), sum(p.data.size for p in params)


@pytest.mark.parametrize("model,fields", [
    ("llama", dict(depth=2, width=16, heads=4, kv_heads=2, ffn=24, seq_len=8, vocab=23, batch_size=3)),
    ("gpt", dict(depth=2, width=16, heads=4, seq_len=8, vocab=23, batch_size=3)),
    ("mlp", dict(depth=3, width=16, batch_size=5)),
])
def test_the_ledger_shows_what_lora_saves(model, fields):
    """By category, from the ledger's own buffers: the optimiser state and the gradients are Ψ_trainable's, the
    frozen weights stay model state, and fewer activations are held, because no frozen Linear keeps its input."""
    full = Workload(normalize(dict(model=model, **fields, optimizer="adam")))
    lora = Workload(normalize(dict(model=model, **fields, optimizer="adam", lora_rank=2)))
    full_account, lora_account = full.ledger_step(), lora.ledger_step()
    lora.reset()
    lora_account = lora.ledger_step()  # steady state: the optimiser state exists
    trainable, total = trainable_count(lora)
    assert trainable < total // 5
    itemsize = 4  # float32
    assert lora_account.registered_bytes["parameter"] == total * itemsize  # the frozen base is model state
    assert full_account.registered_bytes["parameter"] == (total - trainable) * itemsize  # the base alone
    assert lora_account.registered_bytes["optimizer_state"] == 2 * itemsize * trainable  # adam: 2 moments
    assert lora_account.max_by_category["gradient"] == itemsize * trainable
    assert all(p.grad is None for p in lora.model.parameters() if not p.requires_grad)
    adapters = [m for _, m in lora.model.named_modules() if isinstance(m, LoraLinear)]
    if model == "mlp":
        # each hidden Linear's input is the previous ReLU's output, which that ReLU keeps for its own backward: LoRA
        # frees nothing here, and adds each adapter's lora_A output (batch × r)
        assert lora_account.activation_bytes == full_account.activation_bytes + \
            len(adapters) * fields["batch_size"] * 2 * itemsize
    else:
        assert lora_account.activation_bytes < full_account.activation_bytes

    def linear_inputs(account):
        return sorted(b.shape for b in account.buffers if b.category == "activation" and b.saved_by == "linear")

    # under LoRA the Linears keep exactly: each adapter's input (kept by its lora_A) and lora_A's output (kept by
    # lora_B); an input two adapters share (Llama's q and v read one norm output) is one buffer
    kept = linear_inputs(lora_account)
    assert len(kept) <= 2 * len(adapters)
    assert sum(1 for shape in kept if shape[-1] == 2) == len(adapters)  # lora_A outputs: r = 2 wide
    if model != "mlp":  # (the MLP's Linear inputs are first saved by its ReLUs, in full and under LoRA)
        assert len(linear_inputs(full_account)) > len(kept)


def test_lora_step_updates_the_adapters_only():
    work = Workload(normalize(dict(model="llama", depth=2, width=16, heads=4, ffn=24, seq_len=8, vocab=23,
                                   batch_size=3, lora_rank=2, optimizer="sgd", dtype="float64")))
    before = {n: p.data.copy() for n, p in work.model.named_parameters()}
    work.step()
    work.step()  # lora_B starts at 0: lora_A moves from the second step on
    for name, p in work.model.named_parameters():
        changed = not np.array_equal(before[name], p.data)
        assert changed == (".lora_" in name), name

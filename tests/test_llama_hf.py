"""The llama family and LoRA against the real implementations: transformers' `LlamaForCausalLM` (eager attention)
and peft's LoRA, weights copied by name. Skipped (with the reason) when torch, transformers or peft are missing:
`pip install 'memstudy[hf]'`.

- Gradients of every parameter equal transformers' in float64 to 1e-9 relative, with grouped-query attention and
  without, head tied and untied; LoRA adapters' gradients equal peft's the same way.
- Activation + input bytes (the ledger's, and `saved_buffers` on the graph) against the bytes of the tensors
  transformers' model saves (`saved_tensors_hooks`, each storage once, parameters and buffers excluded): the
  difference is exactly two named items computed here, nothing else —
  * `repeat_kv`: transformers' eager attention copies each K/V head a / kv times before its matmuls and keeps the
    copies, 2 · b · a · s · d per layer, where memstudy keeps the kv heads themselves (2 · b · kv · s · d);
  * RMSNorm's x̂: transformers' unfused `weight * x̂` keeps x̂ = x · rstd for the weight's gradient (b · s · h per
    norm whose weight is trained); memstudy's RMSNorm op recomputes it from x and rstd, which both keep.
- Llama-3-8B's parameter count from its config is 8,030,261,248 by memstudy's prediction, its closed form and
  transformers on the meta device; LoRA r = 16 on q_proj and v_proj trains 6,815,744 parameters, as peft counts.

In float64, transformers' code is run with its float32 upcasts (RMSNorm's `.to(torch.float32)`, the softmax's
`dtype=torch.float32`, the rotary tables' `torch.float`) made float64: they exist for 16-bit models, and in a
float64 model they would round every norm and softmax to float32 (relative errors ~1e-7, not 1e-9). The float32
checks run transformers' code unchanged.
"""
from __future__ import annotations

import json
import types
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the transformers cross-checks need torch (pip install 'memstudy[hf]')")
transformers = pytest.importorskip("transformers", reason="pip install 'memstudy[hf]' for the transformers checks")
peft = pytest.importorskip("peft", reason="pip install 'memstudy[hf]' for the peft checks")

import transformers.models.llama.modeling_llama as modeling_llama  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from gradcheck import rel_error  # noqa: E402
from memstudy import nn  # noqa: E402
from memstudy.autograd import saved_buffers  # noqa: E402
from memstudy.config import normalize  # noqa: E402
from memstudy.measure.predict import predict  # noqa: E402
from memstudy.measure.workload import Workload  # noqa: E402
from memstudy.nn.models.llama import parameter_count  # noqa: E402

TOL = 1e-9
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab=37, seq_len=7, depth=2, width=32, heads=4, ffn=48, rope_theta=500.0, eps=1e-5)


class _Float64Torch(types.ModuleType):
    """`torch` as modeling_llama sees it, with float32 (and its alias float) meaning float64."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str):
        return torch.float64 if name in ("float32", "float") else getattr(torch, name)


@contextmanager
def float64_upcasts():
    saved = modeling_llama.torch
    modeling_llama.torch = _Float64Torch()
    try:
        yield
    finally:
        modeling_llama.torch = saved


def hf_config(model: nn.Llama) -> "transformers.LlamaConfig":
    return transformers.LlamaConfig(
        vocab_size=model.vocab, hidden_size=model.width, intermediate_size=model.ffn, num_hidden_layers=model.depth,
        num_attention_heads=model.heads, num_key_value_heads=model.kv_heads, max_position_embeddings=model.seq_len,
        rope_theta=model.rope_theta, rms_norm_eps=model.eps, tie_word_embeddings=model.tie,
        attn_implementation="eager")


def peft_name(name: str) -> str:
    """peft's parameter name in memstudy's form: no wrapper prefix, no adapter name, the base weight as itself."""
    return name.removeprefix("base_model.model.").replace(".default.", ".").replace(".base_layer.", ".")


def twin(model: nn.Llama, dtype, lora: dict | None = None):
    """transformers' model (with peft's LoRA when `lora` gives LoraConfig's arguments), memstudy's weights copied by
    name; every name must match."""
    hf = transformers.LlamaForCausalLM(hf_config(model)).to(dtype)
    if lora is not None:
        hf = peft.get_peft_model(hf, peft.LoraConfig(lora_dropout=0.0, **lora))
    params = {peft_name(n): p for n, p in hf.named_parameters()}
    ours = model.named_parameters()
    assert sorted(params) == sorted(n for n, _ in ours)
    with torch.no_grad():
        for name, p in ours:
            params[name].copy_(torch.from_numpy(p.data))
            assert params[name].requires_grad == p.requires_grad, name
    return hf, params


def torch_loss(logits, targets):
    """Mean next-token cross-entropy as log_softmax + gather: it saves what memstudy's fused loss saves (the
    log-probabilities and the targets); F.cross_entropy would add a 0-d total-weight tensor."""
    return -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).mean()


def torch_saved(module, run) -> tuple[dict[int, int], object]:
    """{storage address: bytes} of what autograd saves while `run()` builds the graph (each storage once,
    parameters and buffers excluded), and run()'s result."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    owned = {t.untyped_storage().data_ptr() for t in list(module.parameters()) + list(module.buffers())}
    storages = {}
    for t in saved:
        storage = t.untyped_storage()
        if storage.data_ptr() not in owned:
            storages[storage.data_ptr()] = storage.nbytes()
    return storages, out


def llama(kv_heads: int, tie: bool, dtype: str = "float64", seed: int = 1) -> nn.Llama:
    return nn.Llama(**TINY, kv_heads=kv_heads, tie=tie, dtype=dtype, seed=seed)


def tokens(batch: int = 2, length: int = 7, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TINY["vocab"], size=(batch, length + 1))


def step_both(model: nn.Llama, hf, ids: np.ndarray):
    logits = model(ids[:, :-1])
    loss = nn.cross_entropy(logits, ids[:, 1:])
    loss.backward()
    t = torch.from_numpy(ids)
    t_logits = hf(t[:, :-1]).logits
    t_loss = torch_loss(t_logits, t[:, 1:])
    t_loss.backward()
    return logits, loss, t_logits, t_loss


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_gradients_of_every_parameter_equal_transformers_in_float64(kv_heads, tie):
    model = llama(kv_heads, tie)
    with float64_upcasts():
        hf, params = twin(model, torch.float64)
        logits, loss, t_logits, t_loss = step_both(model, hf, tokens())
    assert rel_error(logits.data, t_logits.detach().numpy()) < TOL
    assert rel_error(loss.data, t_loss.detach().numpy()) < TOL
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert rel_error(p.grad, params[name].grad.numpy()) < TOL, name


def test_float32_gradients_agree_with_transformers_unchanged():
    """transformers' code as it is (float32 RMSNorm, softmax and rotary tables are then the model's own dtype)."""
    model = llama(2, False, dtype="float32")
    hf, params = twin(model, torch.float32)
    logits, _, t_logits, _ = step_both(model, hf, tokens())
    assert rel_error(logits.data, t_logits.detach().numpy()) < 1e-5
    for name, p in model.named_parameters():
        assert rel_error(p.grad, params[name].grad.numpy()) < 1e-4, name


def test_float64_needs_the_upcasts_lifted():
    """Why the float64 checks lift transformers' float32 upcasts: with them, its float64 model rounds to float32."""
    model = llama(2, False)
    hf, _ = twin(model, torch.float64)
    ids = tokens()
    logits = model(ids[:, :-1]).data
    err = rel_error(logits, hf(torch.from_numpy(ids[:, :-1])).logits.detach().numpy())
    assert 1e-12 < err < 1e-5


def lora_pair(kv_heads: int, rank: int = 3, alpha: float = 6.0, targets=("q_proj", "v_proj"), dtype="float64"):
    """memstudy's model with LoRA and peft's on transformers', the same weights; lora_B drawn at random (at peft's
    zero init lora_A's gradient would be zero, and the check could not fail)."""
    model = nn.add_lora(llama(kv_heads, False, dtype=dtype), rank=rank, alpha=alpha, targets=targets, seed=4)
    rng = np.random.default_rng(9)
    for name, p in model.named_parameters():
        if name.endswith("lora_B.weight"):
            p.data[...] = rng.standard_normal(p.shape) * 0.1
    hf, params = twin(model, getattr(torch, dtype), lora=dict(r=rank, lora_alpha=alpha, target_modules=list(targets)))
    return model, hf, params


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("k_proj", "o_proj", "gate_proj", "down_proj")])
def test_lora_adapter_gradients_equal_pefts_in_float64(targets):
    with float64_upcasts():
        model, hf, params = lora_pair(2, targets=targets)
        logits, loss, t_logits, t_loss = step_both(model, hf, tokens())
    assert rel_error(logits.data, t_logits.detach().numpy()) < TOL
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n for n, _ in trained)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert rel_error(p.grad, params[name].grad.numpy()) < TOL, name
        else:  # frozen: no gradient on either side
            assert p.grad is None and params[name].grad is None, name


def named_differences(model: nn.Llama, batch: int, length: int, itemsize: int) -> dict[str, int]:
    """What transformers' eager Llama keeps beyond memstudy's, item by item (see the module docstring)."""
    b, s, h, a, kv, d = batch, length, model.width, model.heads, model.kv_heads, model.head_dim
    norms = [layer.input_layernorm for layer in model.model.layers] + \
        [layer.post_attention_layernorm for layer in model.model.layers] + [model.model.norm]
    trained_norms = sum(norm.weight.requires_grad for norm in norms)
    return {
        "repeat_kv copies beyond the kv heads (K and V)": model.depth * 2 * b * (a - kv) * s * d * itemsize,
        "RMSNorm x̂ kept by weight * x̂": trained_norms * b * s * h * itemsize,
    }


def ledger_and_graph_bytes(work: Workload) -> tuple[int, int]:
    account = work.ledger_step()
    ledger = account.activation_bytes + account.registered_bytes["input"]
    loss = nn.cross_entropy(work.model(work.inputs), work.labels)
    graph = sum(b.nbytes for b in saved_buffers(loss, inputs=[work.inputs, work.labels])
                if b.kind in ("activation", "input"))
    return ledger, graph


@pytest.mark.parametrize("kv_heads,tie,lora,dtype", [
    (4, False, 0, "float32"), (2, False, 0, "float32"), (1, True, 0, "float32"), (2, True, 0, "float64"),
    (2, False, 3, "float32"), (4, True, 3, "float64"),
])
def test_saved_bytes_reconcile_with_transformers_item_by_item(kv_heads, tie, lora, dtype):
    cfg = normalize(dict(model="llama", **TINY, kv_heads=kv_heads, tie=tie, dtype=dtype, batch_size=3,
                         lora_rank=lora, optimizer="sgd", seed=1))
    work = Workload(cfg)
    ledger, graph = ledger_and_graph_bytes(work)
    ids = torch.from_numpy(work.inputs.data.base)  # the (b, s + 1) draw: ids and targets are its views
    with float64_upcasts() if dtype == "float64" else nullcontext():
        hf, _ = twin(work.model, getattr(torch, dtype),
                     lora=dict(r=lora, lora_alpha=cfg["lora_alpha"], target_modules=["q_proj", "v_proj"])
                     if lora else None)
        storages, _ = torch_saved(hf, lambda: torch_loss(hf(ids[:, :-1]).logits, ids[:, 1:]))
    hf_bytes = sum(storages.values())
    items = named_differences(work.model, cfg["batch_size"], cfg["seq_len"], np.dtype(dtype).itemsize)
    assert ledger == graph
    assert hf_bytes - ledger == sum(items.values()), (hf_bytes, ledger, items)
    if kv_heads < TINY["heads"]:
        assert items["repeat_kv copies beyond the kv heads (K and V)"] > 0
    assert (items["RMSNorm x̂ kept by weight * x̂"] > 0) == (lora == 0)


LLAMA_3_8B = ROOT / "experiments" / "configs" / "llama-3-8b.json"


def meta_hf_llama(path: Path):
    """transformers' model of a config.json on the meta device (shapes only, nothing allocated)."""
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**json.loads(path.read_text())))


def llama_3_8b_config(**fields) -> dict:
    from memstudy.nn.models.hf_config import hf_config_fields

    _, from_file = hf_config_fields(LLAMA_3_8B)
    return normalize({"model": "llama", **from_file, "seq_len": 16, "batch_size": 1, "optimizer": "adam", **fields})


def test_llama_3_8b_parameter_count_by_prediction_closed_form_and_transformers():
    cfg = llama_3_8b_config(mode="inference")
    predicted = predict(cfg)["parameter_bytes"] // np.dtype(cfg["dtype"]).itemsize
    hf_count = sum(p.numel() for p in meta_hf_llama(LLAMA_3_8B).parameters())
    assert predicted == parameter_count(cfg) == hf_count == 8_030_261_248


def test_lora_r16_on_q_and_v_of_llama_3_8b_trains_what_peft_trains():
    model = peft.get_peft_model(meta_hf_llama(LLAMA_3_8B),
                                peft.LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    peft_trainable, peft_all = model.get_nb_trainable_parameters()
    cfg = llama_3_8b_config(lora_rank=16, lora_alpha=32.0)
    itemsize = np.dtype(cfg["dtype"]).itemsize
    prediction = predict(cfg)
    assert prediction["optimizer_state_bytes"] == 2 * itemsize * peft_trainable  # adam: two moments per trainable
    assert prediction["gradient_bytes"] == itemsize * peft_trainable  # a gradient for the adapters only
    assert prediction["parameter_bytes"] == itemsize * peft_all  # the frozen base is model state all the same
    assert peft_trainable == 6_815_744 == cfg["depth"] * 16 * (2 * 4096 + 4096 + 1024)

"""The GPT family against a hand-written PyTorch GPT (nanoGPT's explicit attention path), weights copied by name.

The reference is benchmarks/torch_gpt.py (also the benchmark's PyTorch side). Two checks of what a step holds:
- gradients of every parameter in float64 agree to 1e-9 relative;
- activation + input bytes (ledger, and `saved_buffers` on the graph) equal the bytes of PyTorch's saved
  tensors (`saved_tensors_hooks`, each storage once, parameters and registered buffers excluded), exactly,
  at dropout 0.

Why not at dropout > 0: PyTorch's CPU dropout saves a noise tensor in the input's dtype (4 bytes per element
in float32), where memstudy (and the Megatron-LM paper, and PyTorch's fused CUDA kernel) keeps a 1-byte
boolean mask; `test_torch_cpu_dropout_saves_a_noise_tensor_of_the_input_dtype` measures that fact.

The reference does not use `scaled_dot_product_attention` (on CPU it may take a fused kernel that saves no
s × s tensor). Its causal mask is a registered buffer (masked_fill saves a view of it, excluded, as memstudy's
mask op saves nothing); its loss is log_softmax + gather (F.cross_entropy would also save a 0-d total-weight
tensor).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.torch_gpt import TorchGPT, next_token_loss as torch_loss  # noqa: E402
from gradcheck import rel_error  # noqa: E402
from memstudy import nn  # noqa: E402
from memstudy.autograd import Tensor, apply, ops, saved_buffers  # noqa: E402
from memstudy.measure.workload import Workload  # noqa: E402
from memstudy.nn.models.registry import normalize  # noqa: E402

TOL = 1e-9


def torch_twin(model: nn.GPT, dtype) -> TorchGPT:
    bias = model.transformer.ln_f.bias is not None
    twin = TorchGPT(model.vocab, model.seq_len, model.depth, model.width, model.heads, 0.0, bias).to(dtype)
    params = dict(twin.named_parameters())
    ours = model.named_parameters()
    assert sorted(params) == sorted(name for name, _ in ours)  # nanoGPT's names, the tied head listed once
    with torch.no_grad():
        for name, p in ours:
            params[name].copy_(torch.from_numpy(p.data))
    return twin


def torch_saved_bytes(module, run) -> int:
    """Bytes of the storages PyTorch saves for backward while `run()` builds the graph (each storage once,
    parameters and registered buffers excluded)."""
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
    return sum(storages.values()), out


def config(**fields):
    base = dict(model="gpt", vocab=61, seq_len=12, depth=2, width=32, heads=4, batch_size=3, dtype="float64",
                dropout=0.0, optimizer="sgd")
    return normalize({**base, **fields})


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("length", [12, 7])  # the model's seq_len, and shorter sequences
def test_gradients_match_pytorch_in_float64(bias, length):
    model = nn.GPT(vocab=61, seq_len=12, depth=2, width=32, heads=4, bias=bias, dtype="float64", seed=3)
    twin = torch_twin(model, torch.float64)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 61, size=(3, length + 1))
    idx, targets = tokens[:, :-1], tokens[:, 1:]

    logits = model(idx)
    assert logits.shape == (3, length, 61) and logits.dtype == np.float64
    loss = nn.cross_entropy(logits, targets)
    loss.backward()
    t_tokens = torch.from_numpy(tokens)
    t_logits = twin(t_tokens[:, :-1])
    t_loss = torch_loss(t_logits, t_tokens[:, 1:])
    t_loss.backward()

    assert rel_error(logits.data, t_logits.detach().numpy()) < TOL
    assert rel_error(loss.data, t_loss.detach().numpy()) < TOL
    t_params = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert rel_error(p.grad, t_params[name].grad.numpy()) < TOL, name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_activation_and_input_bytes_equal_pytorch_saved_tensors_at_dropout_0(dtype, bias):
    cfg = config(dtype=dtype, bias=bias, depth=3)
    work = Workload(cfg)
    account = work.ledger_step()
    ledger_bytes = account.activation_bytes + account.registered_bytes["input"]

    twin = torch_twin(work.model, getattr(torch, dtype))
    tokens = torch.from_numpy(work.inputs.data.base)  # the (b, s + 1) draw: idx and targets are its views
    assert tokens.shape == (cfg["batch_size"], cfg["seq_len"] + 1)
    torch_bytes, _ = torch_saved_bytes(twin, lambda: torch_loss(twin(tokens[:, :-1]), tokens[:, 1:]))

    loss = nn.cross_entropy(work.model(work.inputs), work.labels)  # the same graph, inspected directly
    graph = saved_buffers(loss, inputs=[work.inputs, work.labels])
    graph_bytes = sum(b.nbytes for b in graph if b.kind in ("activation", "input"))

    assert ledger_bytes == torch_bytes == graph_bytes
    assert torch_bytes > 0


def test_torch_cpu_dropout_saves_a_noise_tensor_of_the_input_dtype():
    """The measured fact behind comparing bytes at dropout 0 only (see the module docstring)."""
    x = torch.randn(4, 8, requires_grad=True)
    saved, _ = torch_saved_bytes(torch.nn.Module(), lambda: F.dropout(x, 0.1, True))
    assert saved == x.numel() * x.element_size()  # 4 bytes per element in float32
    ours = Tensor(x.detach().numpy(), requires_grad=True)
    out = apply(ops.Dropout, ours, p=0.1, rng=np.random.default_rng(0))
    assert [(b.dtype, b.nbytes) for b in saved_buffers(out)] == [("bool", x.numel())]  # a 1-byte mask

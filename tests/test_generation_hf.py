"""Generation against transformers: the KV cache's bytes and the greedy tokens, GPT-2 and Llama, weights copied by name.
Skipped (with the reason) when torch or transformers is missing: `pip install 'memstudy[hf]'`.

- After the prefill and after each decode step, the bytes transformers' cache holds (every layer's keys and values,
  `DynamicCache` and `StaticCache(max_cache_len = prompt_len + new_tokens)`) equal the ledger's `kv_cache` bytes at
  the end of that phase, exactly, for every dtype the registry lists (registry.DTYPES; a dtype added there joins),
  with grouped-query attention and without. Shapes decide those bytes, so transformers' model keeps its own
  weights here (and each side picks its own tokens). transformers is driven as its generate drives it: the prefill asks for
  the last position's logits only (`logits_to_keep = 1`), then one token per forward.
- `generate(do_sample=False, max_new_tokens=n)` gives the token ids memstudy's generation gives, in float64, with
  the dynamic and the static cache (weights drawn N(0, 4/fan_in) so the tokens change from step to step).
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the transformers cross-checks need torch (pip install 'memstudy[hf]')")
transformers = pytest.importorskip("transformers", reason="pip install 'memstudy[hf]' for the transformers checks")

from test_generation import lively  # noqa: E402
from test_llama_hf import float64_upcasts, hf_config, twin  # noqa: E402
from memstudy.config import normalize  # noqa: E402
from memstudy.measure.generation import cache_bytes_after_each_step  # noqa: E402
from memstudy.measure.workload import Workload  # noqa: E402
from memstudy.nn.generation import generate  # noqa: E402
from memstudy.nn.models.registry import DTYPES  # noqa: E402

GPT2_LINEARS = ("c_attn", "c_proj", "c_fc")  # transformers' Conv1D keeps these as (in, out): nanoGPT transposes them


def gpt2_config(model) -> "transformers.GPT2Config":
    return transformers.GPT2Config(
        vocab_size=model.vocab, n_positions=model.seq_len, n_embd=model.width, n_layer=model.depth,
        n_head=model.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        activation_function="gelu_new", bos_token_id=None, eos_token_id=None, attn_implementation="eager")


def gpt2_twin(model, dtype):
    """transformers' GPT2LMHeadModel (eager attention) with memstudy's GPT weights copied by name."""
    hf = transformers.GPT2LMHeadModel(gpt2_config(model)).to(dtype).eval()
    params = dict(hf.named_parameters())
    ours = model.named_parameters()
    assert sorted(params) == sorted(n for n, _ in ours)
    with torch.no_grad():
        for name, p in ours:
            value = torch.from_numpy(p.data)
            params[name].copy_(value.T if name.endswith(".weight") and name.split(".")[-2] in GPT2_LINEARS
                               else value)
    return hf


def hf_model(work: Workload, dtype):
    """transformers' model of the same config and dtype, its own weights: the cache's bytes depend on the shapes
    alone (and a 16-bit dtype needs no numpy-to-torch copy of its weights)."""
    torch_dtype = getattr(torch, dtype)
    if work.config["model"] == "gpt":
        return transformers.GPT2LMHeadModel(gpt2_config(work.model)).to(torch_dtype).eval()
    return transformers.LlamaForCausalLM(hf_config(work.model)).to(torch_dtype).eval()


def hf_twin(work: Workload, dtype):
    torch_dtype = getattr(torch, dtype)
    if work.config["model"] == "gpt":
        return gpt2_twin(work.model, torch_dtype)
    hf, _ = twin(work.model, torch_dtype)
    hf.generation_config.bos_token_id = hf.generation_config.eos_token_id = None
    return hf.eval()


def hf_cache_bytes(hf, prompt: np.ndarray, new_tokens: int, kind: str) -> list[int]:
    """The bytes transformers' cache holds after the prefill and after each decode step, as generate drives it."""
    ids = torch.from_numpy(prompt)
    cache = (transformers.DynamicCache(config=hf.config) if kind == "dynamic" else
             transformers.StaticCache(config=hf.config, max_cache_len=ids.shape[1] + new_tokens))
    held = []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = hf(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            held.append(sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers))
            ids = logits[:, -1].argmax(-1, keepdim=True)
    return held


CASES = [
    dict(model="gpt", depth=2, width=32, heads=4, vocab=50, seq_len=24),
    dict(model="llama", depth=2, width=32, heads=4, kv_heads=4, ffn=48, vocab=50, seq_len=24, rope_theta=500.0),
    dict(model="llama", depth=2, width=32, heads=4, kv_heads=1, ffn=48, vocab=50, seq_len=24, rope_theta=500.0),
]
IDS = ["gpt2", "llama-mha", "llama-mqa"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cache_bytes_equal_transformers_after_the_prefill_and_each_decode_step(case, kind, dtype):
    cfg = normalize({**case, "mode": "generate", "dtype": dtype, "batch_size": 3, "prompt_len": 9, "new_tokens": 6,
                     "kv_cache": kind})
    work = Workload(cfg)
    ours = cache_bytes_after_each_step(work.ledger_step())
    theirs = hf_cache_bytes(hf_model(work, dtype), work.inputs.data, 6, kind)
    assert ours == theirs
    assert len(set(ours)) == (6 if kind == "dynamic" else 1)  # the check can fail: a dynamic cache grows


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_greedy_tokens_equal_transformers_generate_in_float64(case):
    cfg = normalize({**case, "mode": "generate", "dtype": "float64", "batch_size": 2, "prompt_len": 6,
                     "new_tokens": 10})
    work = Workload(cfg)
    lively(work.model)
    with float64_upcasts() if case["model"] == "llama" else nullcontext():
        hf = hf_twin(work, "float64")
        prompt = torch.from_numpy(work.inputs.data)
        for kind in ("dynamic", "static"):
            ours, _ = generate(work.model, work.inputs, 10, kind)
            theirs = hf.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0,
                                 cache_implementation=kind).numpy()
            np.testing.assert_array_equal(ours.data, theirs)
    assert len(np.unique(ours.data[:, 6:])) > 3  # the check can fail: the tokens change

"""Tensor parallelism for real (memstudy/parallel/multiprocess.py): t processes, the group's collectives through
torch.distributed (gloo over loopback). Each rank's measured account equals its prediction buffer by buffer and event
by event, and its updated parameters equal its parts of the one-device step's to 1e-12 in float64 (SGD: a step whose
update is proportional to the gradient, so a gradient summed over the wrong ranks shows; Adam's first step is the
gradient's sign). Skipped, with a note, without torch (the `hf` extra)."""
from __future__ import annotations

import numpy as np
import pytest

from memstudy.config import normalize
from memstudy.parallel.tensor import sequence_partial, shard

GPT = dict(model="gpt", depth=2, width=16, heads=4, seq_len=8, vocab=23, batch_size=2, optimizer="sgd",
           dtype="float64")
LLAMA = dict(model="llama", depth=2, width=16, heads=4, kv_heads=2, ffn=24, seq_len=8, vocab=23, batch_size=2,
             optimizer="sgd", dtype="float64")


@pytest.mark.parametrize("raw", [GPT, LLAMA], ids=["gpt", "llama"])
def test_the_ranks_parts_make_the_one_device_parameters(raw):
    """Each parameter's parts over t ranks put back together are the one-device parameter (c_attn's q, k and v each
    split by heads); the shapes are those the rank builds."""
    from memstudy.autograd.meta import meta_mode
    from memstudy.config import get_family

    t = 2
    config = normalize(raw)
    model = get_family(raw["model"]).build(config)
    with meta_mode():
        rank_model = get_family(raw["model"]).build(normalize({**raw, "tensor_parallel": t}))
    shapes = {name: p.shape for name, p in rank_model.named_parameters()}
    for name, p in model.named_parameters():
        parts = [shard(name, p.data, t, r) for r in range(t)]
        assert parts[0].shape == shapes[name], name
        if parts[0].shape == p.shape:
            assert all(part is p.data for part in parts)
            continue
        axis = 1 if parts[0].shape[0] == p.shape[0] else 0
        if name.endswith("c_attn.weight") or name.endswith("c_attn.bias"):
            chunks = [np.split(part, 3, axis=0) for part in parts]
            whole = np.concatenate([np.concatenate([c[j] for c in chunks], axis=0) for j in range(3)], axis=0)
        else:
            whole = np.concatenate(parts, axis=axis)
        np.testing.assert_array_equal(whole, p.data)
    assert sequence_partial("transformer.h.0.ln_1.weight") and sequence_partial("transformer.h.0.mlp.c_proj.bias")
    assert not sequence_partial("transformer.h.0.mlp.c_fc.bias") and not sequence_partial("transformer.wte.weight")


@pytest.mark.slow
@pytest.mark.parametrize("raw", [GPT, LLAMA], ids=["gpt", "llama"])
@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp", "tp+sp"])
def test_real_ranks_equal_their_prediction_and_the_one_device_step(raw, sequence_parallel):
    pytest.importorskip("torch", reason="the real multi-process runs need torch (pip install 'memstudy[hf]')")
    from memstudy.parallel.multiprocess import run_tensor_parallel

    results = run_tensor_parallel({**raw, "tensor_parallel": 2, "sequence_parallel": sequence_parallel})
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert "error" not in r, r
        assert r["same_buffers"] and r["same_events"], r
        assert r["peak_bytes"] == r["predicted_peak_bytes"]
        assert r["communication_bytes"] > 0
        assert r["max_abs_error"] < 1e-12, r


def test_stage_parameter_names_map_to_the_one_device_model():
    from memstudy.parallel.multiprocess import _stage_name

    assert _stage_name("transformer.h.1.attn.c_attn.weight", 2) == "transformer.h.3.attn.c_attn.weight"
    assert _stage_name("model.layers.0.mlp.up_proj.weight", 4) == "model.layers.4.mlp.up_proj.weight"
    assert _stage_name("transformer.wte.weight", 2) == "transformer.wte.weight"


@pytest.mark.slow
@pytest.mark.parametrize("raw", [GPT, LLAMA], ids=["gpt", "llama"])
@pytest.mark.parametrize("schedule", ["1f1b", "gpipe"])
def test_real_pipeline_stages_equal_their_prediction_and_the_one_device_step(raw, schedule):
    """p = 2 stages as processes, m = 2 microbatches: each stage's measured account is its prediction, its updated
    parameters the one-device step's (the GPT's tied word embedding summed over the first and last stages)."""
    pytest.importorskip("torch", reason="the real multi-process runs need torch (pip install 'memstudy[hf]')")
    from memstudy.parallel.multiprocess import run_pipeline_parallel

    results = run_pipeline_parallel({**raw, "depth": 4, "batch_size": 4, "pipeline_parallel": 2, "microbatches": 2,
                                     "schedule": schedule})
    for r in results:
        assert "error" not in r, r
        assert r["same_buffers"] and r["same_events"] and r["peak_bytes"] == r["predicted_peak_bytes"], r
        assert r["communication_bytes"] > 0
        assert r["max_abs_error"] < 1e-12, r

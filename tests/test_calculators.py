"""tools/calculators.py: accelerate's estimate-memory and llm-analysis' training memory, as their source computes them,
against numbers worked out by hand from that source for Llama-3-8B (experiments/configs/llama-3-8b.json) and a
non-gated ratio (TinyLlama's ffn / hidden = 2.75, which llm-analysis counts as a 2-matrix MLP)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import calculators  # noqa: E402

LLAMA_3_8B = dict(width=4096, heads=32, kv_heads=8, ffn=14336, vocab=128256, depth=32, tie=False)
SBH = 4096 * 4096  # s·b·h at seq_len 4096, batch 1


def test_accelerate_counts_llamamodel_in_float32_and_takes_the_largest_entry():
    # LlamaModel: 32 layers × (4096·4096·2 + 2·4096·1024 + 3·4096·14336 + 2·4096) + 128256·4096 + 4096 parameters
    parameters = 32 * (33_554_432 + 8_388_608 + 176_160_768 + 8_192) + 525_336_576 + 4_096
    assert parameters == 7_504_924_672  # = 8,030,261,248 − 128256·4096 (no lm_head)
    assert calculators.accelerate_model_bytes(LLAMA_3_8B) == (parameters + 64) * 4  # + inv_freq, 64 float32
    est = calculators.accelerate_estimate(LLAMA_3_8B, "float16")
    total32 = 30_019_698_944
    assert est["model"] == total32 and est["gradients"] == total32 + total32 // 2
    assert est["optimizer"] == est["step"] == est["training_peak"] == 60_039_397_888  # 55.92 GiB
    assert est["total_size"] == total32 / 2
    f32 = calculators.accelerate_estimate(LLAMA_3_8B, "float32")
    assert f32["training_peak"] == f32["step"] == 4 * total32
    with pytest.raises(ValueError, match="float32 or float16"):
        calculators.accelerate_estimate(LLAMA_3_8B, "bfloat16")


def test_llm_analysis_llama_3_8b_by_hand():
    params = calculators.llm_analysis_parameters(LLAMA_3_8B)
    assert params["per_layer"] == 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096 == 218_112_000
    assert params["total"] == 7_504_924_672 and params["gated"] == 1
    out = calculators.llm_analysis_training(LLAMA_3_8B, 4096, 1)
    assert out["weight"] == 7_504_924_672 * 2 and out["gradient"] == 7_504_924_672 * 4
    assert out["optimizer_state"] == 7_504_924_672 * 12
    # per layer, flash attention: (5·sbh)·2 + (2·sbh + 4·a·s)·2 + sbh (dropout mask); MLP sbh·2 + 4·3.5·sbh; norms 8·sbh
    attn = 10 * SBH + 2 * (2 * SBH + 4 * 32 * 4096) + SBH
    assert attn == 252_706_816
    assert out["attn"] == 32 * attn and out["mlp"] == 32 * (2 * SBH + 14 * SBH) and out["layernorm"] == 32 * 8 * SBH
    assert out["activation"] == 32 * 655_360_000 + 2 * SBH + 128256 * 4096 * 2 + 4 * SBH == 22_122_856_448
    # peak = op + weight + max(act, grad) + max(2 layers' weights, the loss's backward s·V·2)
    assert out["peak"] == 90_059_096_064 + 15_009_849_344 + 30_019_698_688 + 1_050_673_152 == 136_139_317_248
    eager = calculators.llm_analysis_training(LLAMA_3_8B, 4096, 1, flash_attn=False)
    assert eager["attn"] == 32 * (10 * SBH + 2 * 32 * 4096 ** 2 * 2 + SBH)
    assert eager["peak"] == 90_059_096_064 + 15_009_849_344 + eager["activation"] + 1_050_673_152  # 181.40 GiB
    assert round(eager["peak"] / 2 ** 30, 2) == 181.40
    full = calculators.llm_analysis_training(LLAMA_3_8B, 4096, 1, "full")
    assert full["attn"] == 32 * 2 * SBH and full["mlp"] == full["layernorm"] == 0
    selective = calculators.llm_analysis_training(LLAMA_3_8B, 4096, 1, "attn_compute")
    assert selective["attn"] == 32 * (10 * SBH + SBH)
    with pytest.raises(ValueError, match="activation_recomputation"):
        calculators.llm_analysis_training(LLAMA_3_8B, 4096, 1, "selective")


def test_llm_analysis_counts_a_non_3_5_ratio_as_two_matrices():
    tiny = dict(width=2048, heads=32, kv_heads=4, ffn=5632, vocab=32000, depth=22)
    params = calculators.llm_analysis_parameters(tiny)
    assert params["gated"] == 0 and params["mlp_per_layer"] == 2 * 2048 * 5632


# experiments/parallel_plan_llama.toml's Llama (ffn / width = 2.75: a 2-matrix MLP to llm-analysis)
PLAN_LLAMA = dict(width=2048, heads=16, kv_heads=8, ffn=5632, vocab=32000, depth=24, tie=False)


@pytest.mark.parametrize("parallelism, batch, expected", [
    # weight, gradient, optimizer_state, activation, peak: llm-analysis' own LLMAnalysis.training at LLM_ANALYSIS_COMMIT
    # (its source run with ParallelismConfig(tp_size, pp_size, dp_size, sp_size), ds_zero, seq_len 2048,
    # activation_recomputation ATTN_COMPUTE, w16a16e16)
    ({"tp": 8, "sequence_parallel": True}, 8,
     (230490624, 460637184, 1382943744, 3377463296, 5121969664)),
    ({"tp": 2, "pp": 4, "sequence_parallel": True}, 1,
     (279496704, 558944256, 1676980224, 1688731648, 3716528128)),
    ({"dp": 8, "ds_zero": 3}, 8,
     (230318592, 460637184, 1381911552, 27019706368, 29680512512)),
])
def test_llm_analysis_parallel_is_llm_analysis(parallelism, batch, expected):
    out = calculators.llm_analysis_training(PLAN_LLAMA, 2048, batch, "attn_compute", **parallelism)
    keys = ("weight", "gradient", "optimizer_state", "activation", "peak")
    assert tuple(out[k] for k in keys) == pytest.approx(expected, abs=1e-3)

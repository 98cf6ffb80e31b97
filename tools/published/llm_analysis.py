"""docs/parallel.md's llm-analysis block: its per-GPU totals (tools/calculators.py, transcribed from its source) beside
memstudy's per-rank prediction for three parallel configurations both can express, each difference itemised.

The model is the Llama of experiments/parallel_plan_llama.toml. For the weights the difference is split into terms
computed from the shapes, each from what the two count differently (read in llm-analysis' source and in the rank's
graph, memstudy/parallel/): the gate_proj that llm-analysis leaves out of a SwiGLU MLP whose ffn/width is not 3.5, the
vocabulary (llm-analysis: the embedding divided by t on every stage, no untied head; memstudy: the embedding whole on
the first stage, the untied lm_head and final norm whole on the last), and under ZeRO 3 the layer norms memstudy
keeps whole on every rank (fewer elements than param_persistence_threshold); what those terms leave is printed as
the remainder, so the itemisation is checked against the ledger, not assumed.
"""
from __future__ import annotations

from typing import Any

from memstudy.units import format_bytes

from tools import calculators
from tools.published.results import Results

# experiments/parallel_plan_llama.toml's model, bfloat16 with float32 master weights, Adam
LLAMA = {"model": "llama", "depth": 24, "width": 2048, "heads": 16, "kv_heads": 8, "ffn": 5632, "seq_len": 2048,
         "vocab": 32000, "batch_size": 8, "dtype": "bfloat16", "master_weights": True, "optimizer": "adam"}
# (label, memstudy's fields, llm-analysis' parallelism and micro-batch); selective = its attn_compute
CONFIGURATIONS: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("t 8 + sequence parallel + selective, batch 8",
     {"tensor_parallel": 8, "sequence_parallel": True, "checkpoint": "selective"},
     {"tp": 8, "sequence_parallel": True, "batch_size": 8}),
    ("t 2 + sequence parallel + selective, p 4 1f1b, 8 microbatches of 1 (first stage)",
     {"tensor_parallel": 2, "sequence_parallel": True, "checkpoint": "selective", "pipeline_parallel": 4,
      "microbatches": 8, "schedule": "1f1b"},
     {"tp": 2, "pp": 4, "sequence_parallel": True, "batch_size": 1}),
    ("N 8, ZeRO 3, selective, batch 8",
     {"data_parallel": 8, "zero": 3, "checkpoint": "selective"},
     {"dp": 8, "ds_zero": 3, "batch_size": 8}),
)
WEIGHT_BYTES = 2  # bfloat16


def weight_terms(config: dict[str, Any], la: dict[str, Any]) -> dict[str, float]:
    """memstudy's weight bytes minus llm-analysis', term by term, from the shapes (module docstring)."""
    h, f, v, depth = config["width"], config["ffn"], config["vocab"], config["depth"]
    t, p = config.get("tensor_parallel") or 1, config.get("pipeline_parallel") or 1
    n = (config.get("data_parallel") or 1) if config.get("zero") == 3 else 1
    first, last = True, p == 1  # the accounted rank is the first stage
    gated = calculators.llm_analysis_parameters(config)["gated"]
    terms = {"gate_proj (llm-analysis counts 2·h·f per layer unless ffn/width is 3.5)":
             0.0 if gated else depth // p * h * f / t / n * WEIGHT_BYTES}
    # memstudy: the embedding (first stage) and the untied lm_head (last), ZeRO-3 parts of them; the final norm whole
    ours = ((v * h if first else 0) + (v * h if last else 0)) / n + (h if last else 0)
    theirs = (v * h / t + h / t) / n  # every stage: the embedding and the last layer norm, divided by t (and dp)
    terms["vocabulary (embedding, lm_head, final norm)"] = (ours - theirs) * WEIGHT_BYTES
    if n > 1:  # memstudy keeps each layer's two norms whole on every rank: fewer elements than the threshold
        terms["layer norms whole on every rank (ZeRO 3 persistence)"] = depth // p * 2 * h * (1 - 1 / n) * WEIGHT_BYTES
    return terms


def compare(label: str, fields: dict[str, Any], parallelism: dict[str, Any]) -> list[str]:
    from memstudy.config import normalize
    from memstudy.measure.predict import predict

    config = normalize({**LLAMA, **fields})
    ours = predict(config)
    args = dict(parallelism)
    batch = args.pop("batch_size")
    la = calculators.llm_analysis_training(config, config["seq_len"], batch, "attn_compute", **args)
    rows = (("weights", la["weight"], ours["parameter_bytes"]),
            ("gradients", la["gradient"], ours["gradient_bytes"]),
            ("optimizer state", la["optimizer_state"], ours["optimizer_state_bytes"]),
            ("activations", la["activation"], ours["predicted_activation_bytes"]),
            ("peak", la["peak"], ours["predicted_peak_bytes"]))
    lines = [f"**{label}**", "", "| | llm-analysis | memstudy | memstudy − llm-analysis |", "|---|--:|--:|--:|"]
    lines += [f"| {name} | {format_bytes(a)} | {format_bytes(b)} | {_signed(b - a)} |" for name, a, b in rows]
    terms = weight_terms(config, la)
    weight_diff = ours["parameter_bytes"] - la["weight"]
    remainder = weight_diff - sum(terms.values())
    items = "; ".join(f"{name} {_signed(value)}" for name, value in terms.items())
    state_diff = ours["optimizer_state_bytes"] - la["optimizer_state"]
    lines += ["", f"Weights, itemised: {items}; remainder {_signed(remainder)}"
              + (" (the terms account for the whole difference)." if abs(remainder) < 1 else ".")
              + f" Optimizer state: both count 12 bytes per parameter (float32 master weights and Adam's two moments),"
              f" so its difference is {state_diff / weight_diff:.2f}× the weights' (6× when the same parameters "
              "differ and ZeRO shards them alike)."
              + f" Gradients: llm-analysis counts {la['gradient'] / max(la['weight'], 1):.2f} bytes per weight byte "
              "(float32 gradients, its master_weights_dtype_bytes), memstudy the bfloat16 gradients' largest live "
              "bytes. Activations: llm-analysis' L layers at micro-batch b (attention "
              f"{format_bytes(la['attn'])}, MLP {format_bytes(la['mlp'])}, "
              f"layer norms {format_bytes(la['layernorm'])}, "
              f"input embedding {format_bytes(la['input_embedding'])}, logits {format_bytes(la['output_embedding'])}; "
              "no term for SwiGLU's third matrix, logits divided by t), memstudy's largest live activations of the "
              "rank's graph.", ""]
    return lines


def _signed(nbytes: float) -> str:
    return ("+" if nbytes >= 0 else "−") + format_bytes(abs(nbytes))


def llm_analysis_block(results: Results) -> list[str]:
    c = LLAMA
    commit = calculators.LLM_ANALYSIS_COMMIT[:12]
    lines = [f"llm-analysis (cli99/llm-analysis, `LLMAnalysis.training` at commit `{commit}`, "
             "transcribed in `tools/calculators.py`: its tp_size, pp_size, sp_size = tp_size with sequence "
             "parallelism, dp_size with ds_zero) beside memstudy's per-rank prediction (the rank's graph on shape-only "
             "arrays: bytes exact for that graph) for the Llama of `experiments/parallel_plan_llama.toml` (depth "
             f"{c['depth']}, width {c['width']}, {c['heads']} heads, {c['kv_heads']} K/V heads, ffn {c['ffn']}, "
             f"vocabulary {c['vocab']:,}, s {c['seq_len']}), bfloat16 with float32 master weights and Adam; selective "
             "recomputation is llm-analysis' `attn_compute`. Peaks: llm-analysis' estimated_peak_memory_per_gpu "
             "(weights + optimizer state + max(activations, gradients) + max(two layers' prefetch, the loss's "
             "backward)), memstudy's ledger peak.", ""]
    for label, fields, parallelism in CONFIGURATIONS:
        lines += compare(label, fields, parallelism)
    return lines[:-1]

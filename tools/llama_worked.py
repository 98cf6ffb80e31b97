"""The worked example of docs/llama.md: Llama-3-8B fine-tuned at real scale, predicted, beside two public calculators.

Llama-3-8B (experiments/configs/llama-3-8b.json) at seq_len 4096, batch 1, bfloat16 with float32 master weights and
Adam: full fine-tuning, LoRA r = 16 on q_proj and v_proj, LoRA with selective checkpointing (each layer's attention
core recomputed) and LoRA with full checkpointing (every layer a segment: `every:1`). Every memstudy figure is the
predictor's (`memory.predict.predicted_account`: the engine on shape-only arrays under the ledger), sorted into
`llama_terms`' terms by `llama_terms.step_table`; the calculators' figures are their own formulas
(`tools/calculators.py`, transcribed from their source at pinned commits), each difference stated from the numbers.

    python -m tools.llama_worked        # print the block

docs/llama.md holds it as the `llama-8b` block of tools.published (`make readme` rewrites it; slow to render: four
real-scale predictions); tests/test_llama_worked.py checks it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tools import calculators

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = "experiments/configs/llama-3-8b.json"
STEP = {"seq_len": 4096, "batch_size": 1, "dtype": "bfloat16", "master_weights": True, "optimizer": "adam"}
LORA = {"lora_rank": 16, "lora_targets": "q_proj,v_proj"}
VARIANTS = (("full fine-tune", {}), ("LoRA r=16 (q, v)", LORA),
            ("LoRA + selective checkpointing", {**LORA, "checkpoint": "selective"}),
            ("LoRA + full checkpointing (every layer)", {**LORA, "checkpoint": "every:1"}))
GIB = 2 ** 30


def config(change: dict[str, Any]) -> dict[str, Any]:
    from memstudy.config import normalize
    from memstudy.nn.models.hf_config import hf_config_fields

    _, fields = hf_config_fields(ROOT / CONFIG_PATH, "llama")
    return normalize({"model": "llama", **fields, **STEP, **change})


def predicted(change: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from memstudy.measure.predict import predicted_account

    cfg = config(change)
    return cfg, predicted_account(cfg)


def gib(value: float) -> str:
    return f"{value / GIB:,.2f} GiB"


def _cell(value: float | None) -> str:
    from memstudy.units import format_bytes

    return "—" if value is None else format_bytes(value)


def memstudy_table(results: list[tuple[str, dict[str, Any], Any]]) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The predicted table (one column per variant) and each variant's figures by label."""
    from memstudy.findings import llama_terms

    tables = {name: {r.label: r for r in llama_terms.step_table(account, cfg)} for name, cfg, account in results}
    labels = list(dict.fromkeys(label for rows in tables.values() for label in rows))
    segmented = {name for name, cfg, _ in results if str(cfg["checkpoint"]).startswith(("every", "sqrt"))}
    figures: dict[str, dict[str, int]] = {name: {} for name in tables}
    lines = ["| | " + " | ".join(tables) + " |", "|---|" + "--:|" * len(tables)]
    for label in labels:
        if label.startswith("token ids"):
            continue
        if label.startswith("activations: other") and all(
                name in segmented or tables[name].get(label) is None or not tables[name][label].ledger_bytes
                for name in tables):
            continue  # a checkpoint's layer inputs: the row below sums them
        if all(rows.get(label) is None or not rows[label].ledger_bytes for rows in tables.values()):
            continue  # a term none of the variants holds (an autocast copy, LoRA's terms in no LoRA column, ...)
        cells = []
        for name, rows in tables.items():
            row = rows.get(label)
            value = None if row is None else row.ledger_bytes
            if label.startswith("activations: ") and name in segmented:
                value = None  # the terms are recomputed in backward; the checkpoints hold each layer's input
            if value is not None:
                figures[name][label] = value
            cells.append(_cell(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    held = []
    for name, cfg, account in results:
        total = sum(r.ledger_bytes for layer in range(cfg["depth"])
                    for r in llama_terms.layer_rows(account, layer, cfg, 2))
        figures[name]["held in the decoder layers"] = total
        held.append(gib(total))
    lines.insert(len(lines) - 2, "| held in the decoder layers (all the terms above; with full checkpointing, each "
                 "layer's input, held by its checkpoint) | " + " | ".join(held) + " |")
    return lines, figures


def lines() -> list[str]:
    """The page's block (markers aside)."""
    results = [(name, *predicted(change)) for name, change in VARIANTS]
    cfg, full = results[0][1], results[0][2]
    h, a, kv, f, v, depth = (cfg["width"], cfg["heads"], cfg["kv_heads"], cfg["ffn"], cfg["vocab"], cfg["depth"])
    s, b = cfg["seq_len"], cfg["batch_size"]
    table, figures = memstudy_table(results)
    out = [f"**Predicted** by `memstudy predict --hf-config {CONFIG_PATH} --dtype bfloat16 --master-weights "
           f"--optimizer adam --batch {b} --seq-len {s}` (LoRA: `--lora-rank 16`; `--checkpoint selective` or "
           "`every:1`): Llama-3-8B, "
           f"{depth} layers, hidden {h}, {a} heads, {kv} K/V heads, ffn {f}, vocabulary {v}; seq_len {s}, batch {b}, "
           "bfloat16 parameters, activations and gradients, float32 master weights and Adam moments: "
           f"{state_per_parameter(results[0][2])} B per trainable parameter under full fine-tuning, "
           f"{state_per_parameter(results[1][2])} B under LoRA, whose float32 adapters need no master copy. Activations by `llama_terms`' terms summed over the layers (the ledger's buffers "
           "held after forward); the softmax output is float32 and its bfloat16 copy is kept by softmax · v "
           "(transformers' eager attention); a 16-bit base's LoRA adapters are float32 and read float32 copies of "
           "their inputs (peft's `autocast_adapter_dtype`).", ""] + table
    peaks = {name: account.peak_bytes for name, _, account in results}
    names = [n for n, _ in VARIANTS]
    out += ["", "Total peak: " + "; ".join(f"{n} **{gib(peaks[n])}**" for n in names) + f" (LoRA ÷ full "
            f"{peaks[names[1]] / peaks[names[0]]:.3f}, LoRA + full checkpointing ÷ full "
            f"{peaks[names[3]] / peaks[names[0]]:.3f})."]
    out += calculators_part(cfg, full, results)
    return out


def calculators_part(cfg: dict[str, Any], full: Any, results: list) -> list[str]:
    h, a, kv, f, v, depth, s, b = (cfg["width"], cfg["heads"], cfg["kv_heads"], cfg["ffn"], cfg["vocab"], cfg["depth"],
                                   cfg["seq_len"], cfg["batch_size"])
    acc = calculators.accelerate_estimate(cfg, "float16")
    lla = {name: calculators.llm_analysis_training(cfg, s, b, recompute, flash_attn=flash)
           for name, recompute, flash in (("flash", "none", True), ("eager", "none", False),
                                          ("selective", "attn_compute", True), ("full", "full", True))}
    params = full.registered_bytes["parameter"]
    grads = full.max_by_category["gradient"]
    adam = full.registered_bytes["optimizer_state"]
    n_params = params // 2
    lla_params = calculators.llm_analysis_parameters(cfg)
    acc_params = (calculators.accelerate_model_bytes(cfg) // 4) - (h // a) // 2
    lines = ["", f"Beside two calculators, for the full fine-tune (their formulas: `tools/calculators.py`, from "
             f"accelerate {calculators.ACCELERATE_COMMIT[:10]} and llm-analysis {calculators.LLM_ANALYSIS_COMMIT[:10]}; "
             "accelerate's `estimate-memory` offers float16, not bfloat16, as its 16-bit training dtype: the same "
             "formula; llm-analysis with its defaults, dtype w16a16e16, Adam, flash attention unless said):", "",
             "| | memstudy (predicted) | accelerate estimate-memory | llm-analysis | llm-analysis, no flash attention "
             "| llm-analysis, selective (attn_compute) | llm-analysis, full recomputation |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    act = full.activation_bytes

    def row(label: str, ours: float | None, accel: float | None, key: str) -> str:
        return (f"| {label} | {_cell(ours)} | {_cell(accel)} | "
                + " | ".join(_cell(lla[n][key]) if key else "—" for n in ("flash", "eager", "selective", "full"))
                + " |")

    lines += [f"| parameters counted | {n_params:,} | {acc_params:,} | " + " | ".join(
        [f"{lla_params['total']:,}"] * 4) + " |",
              row("weights", params, acc["model"], "weight"),
              row("gradients", grads, acc["gradients"], "gradient"),
              row("optimiser state", adam, acc["optimizer"], "optimizer_state"),
              row("activations", act, None, "activation"),
              row("of which logits / the loss's softmax", figures_loss(full, cfg), None, "output_embedding"),
              row("**peak**", full.peak_bytes, acc["training_peak"], "peak")]
    missing = v * h
    notes = [
        f"Parameters: memstudy counts {n_params:,} (transformers' count for this config, `tests/test_llama_hf.py`). "
        f"accelerate builds `AutoModel`, which for a Llama config is `LlamaModel`, the decoder without lm_head: "
        f"{n_params - acc_params:,} fewer ({'= V·h, the untied lm_head' if n_params - acc_params == missing else 'not V·h'})"
        f"; llm-analysis calls `get_num_params_embedding()` with shared_embedding=True: "
        f"{n_params - lla_params['total']:,} fewer "
        f"({'= V·h again' if n_params - lla_params['total'] == missing else 'not V·h'}).",
        f"accelerate: its \"Training using Adam\" is the largest of model, gradients, optimizer and step, each from the "
        f"float32 size Ψ₃₂ = {gib(calculators.accelerate_model_bytes(cfg))}: optimizer 2·Ψ₃₂ = "
        f"{gib(acc['training_peak'])}. It never adds them (model, gradients and Adam state live together: memstudy's "
        f"{gib(params + grads + adam)}) and counts no activations ({gib(act)} here), whatever the sequence length: "
        f"{full.peak_bytes / acc['training_peak']:.2f}× below memstudy's peak.",
        f"llm-analysis' model states: weights at 2 B (the same as memstudy's bfloat16 parameters but for lm_head), "
        f"gradients at 4 B per parameter where memstudy's bfloat16 gradients take 2 B "
        f"({gib(lla['flash']['gradient'])} against {gib(grads)}), Adam at 12 B "
        f"({gib(lla['flash']['optimizer_state'])} against {gib(adam)}: "
        + ("exactly 12·V·h apart, the lm_head" if adam - lla['flash']['optimizer_state'] == 12 * missing
           else "not only the lm_head apart") + ").",
        f"llm-analysis' activations: with flash attention (its default) no s² term at all, "
        f"{gib(lla['flash']['activation'])}; so its peak takes its gradients ({gib(lla['flash']['gradient'])}) "
        f"instead, as it adds max(activations, gradients): {gib(lla['flash']['peak'])}. memstudy runs transformers' "
        f"eager attention, which keeps the softmax output, a·s² per layer and sequence, in float32 and again in "
        f"bfloat16: 6·a·s²·b = {gib(6 * a * s * s * b * depth)} over the layers. Without flash attention llm-analysis "
        f"counts 2·a·s²·b·2 B (scores and softmax in 16 bits) = {gib(4 * a * s * s * b * depth)}: its activations "
        f"{gib(lla['eager']['activation'])}, peak {gib(lla['eager']['peak'])}. It counts q, k and v at h per "
        f"position each (no GQA: k and v are {kv}/{a} of that here), SwiGLU's MLP as 2·f·p + h·p per position "
        f"(memstudy keeps gate, silu, up and down's input: 4·f·p + h·p), the norms' inputs in float32 and a "
        "1-byte attention-dropout mask Llama does not have; the logits at 2 B where memstudy's loss keeps a float32 "
        f"softmax ({gib(lla['flash']['output_embedding'])} against {gib(figures_loss(full, cfg))}).",
        f"Checkpointing: llm-analysis' recomputation lowers its activations (selective "
        f"{gib(lla['selective']['activation'])}, full {gib(lla['full']['activation'])}) but not its peak, which "
        f"its 4-byte gradients ({gib(lla['flash']['gradient'])}) hold up. None of the calculators counts LoRA: "
        f"memstudy's LoRA + full checkpointing peak is {gib(results[3][2].peak_bytes)}.",
    ]
    return lines + [""] + [f"- {n}" for n in notes]


def state_per_parameter(account: Any) -> str:
    """Adam's bytes per trainable parameter: the optimiser state ÷ the account's trainable parameter count."""
    trainable = account.trainable_parameter_count
    return f"{account.registered_bytes['optimizer_state'] / trainable:g}" if trainable else "—"


def figures_loss(account: Any, cfg: dict[str, Any]) -> int:
    """The loss's softmax of the logits the step keeps for backward (the ledger's buffers)."""
    from memstudy.findings import llama_terms

    rows = llama_terms.outside_rows(account, cfg["depth"])
    return sum(r.ledger_bytes for r in rows if r.label.startswith("loss: softmax"))


def main() -> int:
    print("\n".join(lines()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())

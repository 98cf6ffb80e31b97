"""What two public memory calculators would say for a Llama, as their own formulas compute it, category by category.

The formulas are transcribed from their source at the commits named below (read there; nothing here is tuned to
memstudy's numbers). Each function takes a plain config dict with memstudy's llama field names (width, depth, heads,
kv_heads, ffn, vocab, tie: what `memstudy.nn.models.hf_config.hf_config_fields` returns) and plain numbers, and
returns bytes by category (floats where the source divides).

- Hugging Face accelerate, `accelerate estimate-memory` (src/accelerate/commands/estimate.py, gather_data and
  estimate_training_usage; src/accelerate/utils/modeling.py, compute_module_sizes), commit ACCELERATE_COMMIT.
  It builds `AutoModel.from_config(config, torch_dtype=torch.float32)` on the meta device (for a Llama config without
  an `auto_map`: `LlamaModel`, the decoder *without* lm_head) and sums every parameter and buffer in float32
  (the rotary embedding's `inv_freq`, d/2 float32 values, is a buffer). "Training using Adam" is the largest of
  model, gradients, optimizer and step computed from that float32 size; for float16 (its 16-bit choice: it offers
  float32, float16, int8 and int4, not bfloat16) model = Ψ₃₂, gradients = 1.5·Ψ₃₂, optimizer = 2·Ψ₃₂, step =
  optimizer, where Ψ₃₂ is the float32 byte size; the peak is optimizer's 2·Ψ₃₂. No activations, no batch, no
  sequence length.
- llm-analysis (cli99/llm-analysis, llm_analysis/analysis.py, `LLMAnalysis.training`; config.py,
  `get_model_config_from_hf`), commit LLM_ANALYSIS_COMMIT. Parameters: V·h for the embedding (it always calls
  `get_num_params_embedding()` with shared_embedding=True, so an untied lm_head is not counted), per layer
  2h² + 2h·(h·kv/a) + (3 if gated else 2)·h·f + 2h, gated only when f/h == 3.5 exactly, plus the final norm h.
  Weights at weight_bits, gradients at master_weights_dtype_bytes (4) per parameter, optimizer state 4 + 8 (fp32
  master copy and Adam's two moments) per parameter. Activations per layer in training, Korthikanti et al.'s terms:
  attention (s·b·h + 4·s·b·h)·p + the attention core + an attention-dropout mask s·b·h (1 byte, always on in
  training), the core 2·s·b·h + 4·a·s·b elements with flash attention (its default) or 2·a·s²·b elements without;
  MLP s·b·h·p + 2·f·s·b·p (no term for SwiGLU's third matrix); two norms at 4 bytes; plus the input embedding
  s·b·h·p, the logits s·b·V·p and the final norm s·b·h·4. K and V are counted at h per position whatever kv.
  Peak = weights + optimizer state + max(activations, gradients) + max(2 layers' weights (prefetch), the loss's
  backward s·b·V·p).
"""
from __future__ import annotations

from typing import Any

ACCELERATE_COMMIT = "16cb6eb80dd9aa8b4df1a63ef57863e455d53b83"  # github:huggingface/accelerate, 2026-07-24
LLM_ANALYSIS_COMMIT = "d841e40aec8c84b9e76ba9cfbce67418adb172bd"  # github:cli99/llm-analysis, 2024-11-13

FLOAT32_BYTES = 4
# llm-analysis' ActivationRecomputation, by name (analysis.py): what each checkpoints
RECOMPUTATION = ("none", "attn_compute", "attn", "norm_attn_norm", "full")


def _shape(config: dict[str, Any]) -> tuple[int, int, int, int, int, int, int]:
    h, a, f, v, depth = config["width"], config["heads"], config["ffn"], config["vocab"], config["depth"]
    kv = config.get("kv_heads") or a
    return h, a, kv, f, v, depth, h // a


def accelerate_model_bytes(config: dict[str, Any]) -> int:
    """The float32 size accelerate's `calculate_maximum_sizes` reports for a Llama config: `LlamaModel` (AutoModel:
    embed_tokens, the layers, norm; no lm_head, tied or not) and its rotary `inv_freq` buffer (d/2 float32)."""
    h, a, kv, f, v, depth, d = _shape(config)
    per_layer = h * a * d + 2 * h * kv * d + a * d * h + 3 * h * f + 2 * h  # q, k, v, o, gate/up/down, two norms
    parameters = v * h + depth * per_layer + h
    return (parameters + d // 2) * FLOAT32_BYTES


def accelerate_estimate(config: dict[str, Any], dtype: str = "float16") -> dict[str, float]:
    """`accelerate estimate-memory --dtypes <dtype>` for a Llama config: bytes of its columns "Total Size" (the model
    in `dtype`) and "Training using Adam" (`training_peak`, the largest of model, gradients, optimizer and step, all
    computed from the float32 size whatever the dtype, as gather_data passes the float32 total)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"accelerate estimate-memory trains in float32 or float16 only, got {dtype!r}")
    total32 = accelerate_model_bytes(config)
    fp16 = total32 // 2
    if dtype == "float32":
        sizes = {"model": total32, "gradients": total32, "optimizer": total32 * 2, "step": total32 * 4}
        total = total32
    else:  # "With mixed precision training, the model has weights stored in FP16 and FP32"
        sizes = {"model": total32, "gradients": total32 + fp16, "optimizer": total32 * 2}
        sizes["step"] = sizes["optimizer"]
        total = total32 / 2
    return {"total_size": total, **sizes, "training_peak": max(sizes.values())}


def llm_analysis_parameters(config: dict[str, Any]) -> dict[str, int]:
    """llm-analysis' parameter counts for a config as `get_model_config_from_hf` reads it."""
    h, a, kv, f, v, depth, _ = _shape(config)
    gated = f / h == 3.5  # config.py: mlp_gated_linear_units only when the expansion ratio is exactly 3.5
    attn = 2 * h * h + 2 * h * (h * kv // a)
    mlp = (3 if gated else 2) * h * f
    per_layer = attn + mlp + 2 * h
    embedding = v * h  # shared_embedding=True: no lm_head
    return {"embedding": embedding, "per_layer": per_layer, "attn_per_layer": attn, "mlp_per_layer": mlp,
            "last_layernorm": h, "total": depth * per_layer + embedding + h, "gated": int(gated)}


def llm_analysis_training(config: dict[str, Any], seq_len: int, batch_size: int = 1,
                          activation_recomputation: str = "none", flash_attn: bool = True, weight_bits: int = 16,
                          activation_bits: int = 16, embedding_bits: int = 16, master_weights_dtype_bytes: int = 4,
                          layernorm_dtype_bytes: int = 4, other_op_bytes: int | None = None, *, tp: int = 1,
                          pp: int = 1, dp: int = 1, sequence_parallel: bool = False,
                          ds_zero: int = 0) -> dict[str, float]:
    """`llm_analysis.analysis.train(...)`'s memory for one GPU (dtype w16a16e16 by default, Adam, no softmax dropout,
    its flash_attn default True): weight, gradient, optimizer_state, the activations (attn, mlp, layernorm summed over
    the layers; input_embedding, output_embedding (the logits), last_layernorm), activation (their sum), loss_bwd,
    bwd_prefetch and `peak` (its estimated_peak_memory_per_gpu). `batch_size` is its batch_size_per_gpu (the micro
    batch).

    Parallelism as its ParallelismConfig takes it (tp_size, pp_size, dp_size: the sharded data-parallel ranks ZeRO
    shards over; sp_size = tp_size with `sequence_parallel`, else 1: its own default is sp_size = tp_size). As its
    source computes it: weights, gradients and optimizer state for L/pp layers plus the whole embedding and the last
    layernorm on every stage, every Linear and the embedding divided by tp (each layer's two layernorms' weights and
    optimizer state not, their gradients too), ZeRO stage >= 1 dividing the optimizer state, >= 2 the gradients, 3 the
    weights by dp; activations for all L layers whatever pp ("the first stage must store p × L/p = L layers"), the
    residual-stream terms (QKV input, the attention-dropout mask, the MLP input, the layernorms) divided by sp, the
    others by tp, the embeddings' by tp; bwd_prefetch two unsharded layers' weights."""
    if activation_recomputation not in RECOMPUTATION:
        raise ValueError(f"activation_recomputation must be one of {', '.join(RECOMPUTATION)}, "
                         f"got {activation_recomputation!r}")
    h, a, kv, f, v, depth, _ = _shape(config)
    sp = tp if sequence_parallel else 1
    params = llm_analysis_parameters(config)
    # get_num_params_per_layer_attn: at least one K/V head per tensor-parallel GPU
    kv_heads = max(kv / tp, 1) * tp
    attn_params = 2 * h * h + 2 * h * (h * kv_heads / a)
    mlp_params, norm_params = params["mlp_per_layer"], 2 * h
    layers_per_gpu = depth // pp
    s, b = seq_len, batch_size
    p = activation_bits / 8
    sbh = s * b * h
    op_bytes = FLOAT32_BYTES + 2 * FLOAT32_BYTES if other_op_bytes is None \
        else other_op_bytes + master_weights_dtype_bytes
    w3 = dp if ds_zero == 3 else 1
    o1 = dp if ds_zero >= 1 else 1
    g2 = dp if ds_zero >= 2 else 1
    wb = weight_bits / 8
    weight = (layers_per_gpu * (attn_params * wb / tp / w3 + mlp_params * wb / tp / w3 + norm_params * wb / w3)
              + params["embedding"] / tp * embedding_bits / 8 / w3 + h * wb / tp / w3)
    optimizer_state = (layers_per_gpu * (op_bytes * mlp_params / tp / o1
                                         + op_bytes * (attn_params / tp + norm_params) / o1)
                       + op_bytes * params["embedding"] / tp / o1 + op_bytes * h / tp / o1)
    gradient = (layers_per_gpu * (mlp_params * master_weights_dtype_bytes / tp / g2
                                  + (attn_params + norm_params) * master_weights_dtype_bytes / tp / g2)
                + master_weights_dtype_bytes * params["embedding"] / tp / g2
                + master_weights_dtype_bytes * h / tp / g2)
    level = RECOMPUTATION.index(activation_recomputation)
    if activation_recomputation == "full":  # get_activation_memory_per_layer: the layer's input only
        attn, mlp, norms = sbh * p / tp, 0.0, 0.0
    else:
        if level >= RECOMPUTATION.index("norm_attn_norm"):
            attn = 0.0
        elif activation_recomputation == "attn":
            attn = sbh * p / sp
        else:
            if activation_recomputation == "attn_compute":
                core = 0.0
            elif flash_attn:
                core = (2 * sbh + 4 * a * s * b) * p / tp
            else:
                core = 2 * a * s * s * b * p / tp
            # + the attention-dropout mask, 1 byte (attn_dropout=True)
            attn = (sbh / sp + 4 * sbh / tp) * p + core + sbh / sp
        expansion = f / h
        mlp = sbh * p / sp + (p + p) * expansion * sbh / tp  # first linear's input, gelu input, second's input
        norms = (1 if activation_recomputation == "norm_attn_norm" else 2) * sbh / sp * layernorm_dtype_bytes
    input_embedding = h * b * s * p / tp
    output_embedding = v * b * s * p / tp
    last_layernorm = sbh / sp * layernorm_dtype_bytes
    activation = depth * (attn + mlp + norms) + input_embedding + output_embedding + last_layernorm
    loss_bwd = output_embedding
    unsharded_layer = attn_params * wb / tp + mlp_params * wb / tp + norm_params * wb
    bwd_prefetch = 2 * unsharded_layer  # fwd_prefetch + bwd_prefetch, one layer each
    peak = optimizer_state + weight + max(activation, gradient) + max(bwd_prefetch, loss_bwd)
    return {"weight": weight, "gradient": gradient, "optimizer_state": optimizer_state, "attn": depth * attn,
            "mlp": depth * mlp, "layernorm": depth * norms, "input_embedding": input_embedding,
            "output_embedding": output_embedding, "last_layernorm": last_layernorm, "activation": activation,
            "loss_bwd": loss_bwd, "bwd_prefetch": bwd_prefetch, "peak": peak}

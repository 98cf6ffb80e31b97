"""The Llama family (`model = "llama"`): Hugging Face's `LlamaForCausalLM` with its eager attention path.

`model.embed_tokens` (vocab × h); `depth` decoder layers x = x + self_attn(input_layernorm(x)),
x = x + mlp(post_attention_layernorm(x)); final `model.norm`; `lm_head` Linear(h, vocab, no bias), tied to
`embed_tokens` only when `tie`. RMSNorm: x · rsqrt(mean(x²) + eps) · weight. Attention: q_proj (h → a·d), k_proj and
v_proj (h → kv·d), no biases, d = h / a; the rotary embedding (transformers' rotate-half form, base `rope_theta`) on
q and k; causal softmax(q·kᵀ · d^−½)·v where each group of a / kv query heads shares one K/V head; o_proj. MLP:
down_proj(silu(gate_proj(x)) · up_proj(x)), intermediate size `ffn`, no biases. Loss: mean next-token
cross-entropy over all b·s positions (as the GPT family's). Parameter names are transformers'
(`model.embed_tokens.weight`, `model.layers.0.self_attn.q_proj.weight`, ..., `model.norm.weight`,
`lm_head.weight`), listed in its order; tests/test_llama_hf.py checks every gradient against transformers.

Grouped-query attention without repeating K and V: transformers' eager path copies each K/V head a / kv times
(`repeat_kv`) before its matmuls, and those copies are what it keeps for backward. Here the query is reshaped (a
view) from (b, a, s, d) to (b, kv, g·s, d), g = a / kv: the g query heads of one group stacked along the rows, so
one plain batched matmul per K/V head computes every group's scores, (b, kv, g·s, d) @ (b, kv, d, s), and the
softmax output, viewed as (b, kv, g·s, s), multiplies the kv V heads the same way. Nothing is repeated, and
backward's matmuls sum over the group by themselves (broadcasting a (b, kv, 1, d, s) K over a group axis would
make backward build a g-times larger product and sum it down: a hidden temporary). The causal mask and the softmax
see the scores as (b, kv, g, s, s).

The rotary angle tables (cos and sin, (s, d) each) are made once per forward by `ops.RotaryTables`, as
`LlamaModel` makes its `position_embeddings` once, and every layer's rotary op saves views of that one buffer.

Layer indices (`layer_scope`, `parameter_layers`): decoder layer i is layer i; the head (norm and lm_head) is
layer `depth`; the embedding (embed_tokens, and the rotary tables) is layer `depth + 1`, where a tied weight counts.

Attention (`attention`): `eager` as above; `flash` runs the core as one fused op (`ops.FlashAttention`: q, k, v,
its output and the softmax's log-sum-exp kept, the scores recomputed in backward, the groups stacked as here).

Generation (mode generate, `nn.generation`): `forward(idx, cache=, logits=)` reads and fills a KV cache (each layer
caches k after the rotary embedding and v, transformers' LlamaAttention order), rotates the tokens at the positions
after those the cache holds, and computes the logits of every position or of the last one only (`logits="last"`).

Checkpointing: `sqrt` / `every:K` run segments of decoder layers as one `Checkpoint` op each, holding the
segment's input and the rotary tables; `selective` runs each layer's attention core (scores, mask, softmax, @ v)
as one `Checkpoint` op holding q, k and v (after the rotary embedding), recomputed in backward.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...autograd.precision import dtype as as_dtype
from ...autograd import STATE, Tensor, apply, layer_scope
from ...autograd import checkpoint as checkpoint_segment
from ...autograd import ops
from ...autograd.autocast import Cast
from ...autograd.precision import compute_dtype
from .. import init
from ..generation import (check_cache, check_generation, generation_fields, keep_logits, prompt_tokens,
                          token_batch_bytes)
from ..layers import Linear, Module, check_dtype
from ..lora import apply_lora_config, check_lora_config, lora_fields
from ..transformer import ATTENTIONS, Embedding, RMSNorm, attention_field, flash_attention
from ..repeat import Plan
from ...parallel import pipeline
from ...parallel.tensor import TensorParallel, check_divides
from .registry import (MODES, ConfigError, Family, Field, StateBytes, check_tensor_parallel, checkpoint_segment_size,
                       parse_checkpoint)

ONE_DEVICE = TensorParallel()
INIT_STD = 0.02  # LlamaConfig.initializer_range: N(0, 0.02²) for Linear and embedding weights (norms are ones)


class LlamaAttention(Module):
    """Under tensor parallelism t (`tp`) this rank's a/t query heads and kv/t K/V heads: q_proj, k_proj and v_proj
    column-parallel, o_proj row-parallel."""

    def __init__(self, width: int, heads: int, kv_heads: int, dtype: Any, rng: np.random.Generator,
                 tp: TensorParallel = ONE_DEVICE):
        self.tp = tp
        self.heads, self.kv_heads, self.head_dim = heads // tp.size, kv_heads // tp.size, width // heads
        # transformers' eager attention: softmax(scores, dtype=torch.float32).to(query.dtype); float32 (and float64
        # here, for a float64 model: tests/test_llama_hf.py lifts the upcast there) whatever the scores' dtype
        self.softmax_dtype = compute_dtype(check_dtype(dtype))
        d, heads, kv_heads = self.head_dim, self.heads, self.kv_heads
        self.q_proj = Linear(width, heads * d, False, dtype, rng, std=INIT_STD)
        self.k_proj = Linear(width, kv_heads * d, False, dtype, rng, std=INIT_STD)
        self.v_proj = Linear(width, kv_heads * d, False, dtype, rng, std=INIT_STD)
        self.o_proj = Linear(heads * d, width, False, dtype, rng, std=INIT_STD)
        self.attention = "eager"  # or "flash": set by Llama

    def forward(self, x: Tensor, cos: Any, sin: Any, selective: bool = False, cache: Any = None) -> Tensor:
        a, kv, d, tp = self.heads, self.kv_heads, self.head_dim, self.tp
        b, s = x.shape[0], x.shape[1] * (tp.size if tp.sequence else 1)  # sequence parallel: x has s/t tokens
        x = tp.enter(x)
        q = tp.column(self.q_proj, x).reshape(b, s, a, d).transpose(0, 2, 1, 3)  # views of the projections' outputs
        k = tp.column(self.k_proj, x).reshape(b, s, kv, d).transpose(0, 2, 1, 3)
        v = tp.column(self.v_proj, x).reshape(b, s, kv, d).transpose(0, 2, 1, 3)
        x = None
        q = apply(ops.Rotary, q, cos, sin)
        k = apply(ops.Rotary, k, cos, sin)
        offset = 0
        if cache is not None:  # a KV cache layer (generation): attention reads every position it holds
            offset = cache.length
            k, v = cache.update(k, v)
        if selective and STATE.grad_enabled:
            y = checkpoint_segment(self.core, (q, k, v), [], names=("q", "k", "v"))
        else:
            y = self.core(q, k, v, offset)
        q = k = v = None
        y = y.reshape(b, a, s, d).transpose(0, 2, 1, 3).reshape(b, s, a * d)  # heads merged: a copy
        return tp.row(self.o_proj, y)

    def core(self, q: Tensor, k: Tensor, v: Tensor, offset: int = 0) -> Tensor:
        """Causal softmax(q·kᵀ · d^−½)·v with the query heads of each group stacked (see the module docstring):
        q (b, a, s, d), k and v (b, kv, t, d) → (b, kv, g·s, d), which is (b, a, s, d) in memory. t = s without a
        cache; with one, t is the positions it holds and `offset` the position of the first query. Flash: one fused
        op (`ops.FlashAttention`, groups without repeating K/V either), its output (b, a, s, d)."""
        if self.attention == "flash":
            return flash_attention(q, k, v, offset)
        b, a, s, d = q.shape
        kv, t = k.shape[1], k.shape[2]
        g = a // kv
        scores = apply(ops.BatchedMatMul, q.reshape(b, kv, g * s, d), k.transpose(0, 1, 3, 2))
        scores = scores * d ** -0.5  # transformers' `scaling = head_dim**-0.5`, after the matmul as there
        probs = apply(ops.Softmax, apply(ops.CausalMask, scores.reshape(b, kv, g, s, t), offset=offset), axis=-1,
                      dtype=self.softmax_dtype)
        if probs.dtype != q.dtype:  # `.to(query.dtype)`: a 16-bit copy (bfloat16 true), kept by the matmul
            probs = apply(Cast, probs, dtype=q.dtype)
        return apply(ops.BatchedMatMul, probs.reshape(b, kv, g * s, t), v)


class LlamaMLP(Module):
    """down_proj(silu(gate_proj(x)) · up_proj(x)): SwiGLU, the product by the engine's `Mul` (see `ops.SiLU`). Under
    tensor parallelism t gate_proj and up_proj are column-parallel (ffn/t), down_proj row-parallel; under sequence
    parallelism each of the two gathers the tokens itself (transformers' separate projections; Megatron-LM fuses
    them into one Linear and one gather)."""

    def __init__(self, width: int, ffn: int, dtype: Any, rng: np.random.Generator, tp: TensorParallel = ONE_DEVICE):
        self.tp = tp
        ffn //= tp.size
        self.gate_proj = Linear(width, ffn, False, dtype, rng, std=INIT_STD)
        self.up_proj = Linear(width, ffn, False, dtype, rng, std=INIT_STD)
        self.down_proj = Linear(ffn, width, False, dtype, rng, std=INIT_STD)

    def forward(self, x: Tensor) -> Tensor:
        tp = self.tp
        x = tp.enter(x)
        return tp.row(self.down_proj, apply(ops.SiLU, tp.column(self.gate_proj, x)) * tp.column(self.up_proj, x))


class LlamaDecoderLayer(Module):
    def __init__(self, width: int, heads: int, kv_heads: int, ffn: int, eps: float, dtype: Any,
                 rng: np.random.Generator, tp: TensorParallel = ONE_DEVICE):
        self.self_attn = LlamaAttention(width, heads, kv_heads, dtype, rng, tp)
        self.mlp = LlamaMLP(width, ffn, dtype, rng, tp)
        self.input_layernorm = RMSNorm(width, dtype, eps)
        self.post_attention_layernorm = RMSNorm(width, dtype, eps)

    def forward(self, x: Tensor, cos: Any, sin: Any, selective: bool = False, cache: Any = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, selective, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(Module):
    """transformers' `LlamaModel`: embed_tokens, layers, norm. A pipeline stage (memstudy/parallel/pipeline.py) holds
    embed_tokens if `first` (or `last` with a tied head: the last stage's copy), norm if `last`."""

    def __init__(self, vocab: int, depth: int, width: int, heads: int, kv_heads: int, ffn: int, eps: float,
                 dtype: Any, rng: np.random.Generator, plan: Plan | None = None, tp: TensorParallel = ONE_DEVICE,
                 first: bool = True, last: bool = True, tie: bool = False):
        self.embed_tokens = Embedding(vocab, width, dtype, rng, std=INIT_STD) if first or (last and tie) else None
        plan = plan or Plan(depth)  # the decoder layers are alike: the predictor runs a few of them (nn.repeat)
        self.layers = plan.build(lambda i: LlamaDecoderLayer(width, heads, kv_heads, ffn, eps, dtype, rng, tp))
        self.norm = RMSNorm(width, dtype, eps) if last else None


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class Llama(Module):
    """`LlamaForCausalLM` (see the module docstring). `model(idx)` maps (b, s) token ids to (b, s, vocab) logits.

    `Llama.from_hf_config(path_or_dict, **overrides)` builds the model a Hugging Face config.json describes."""

    output_layer_name = "lm_head"  # LoRA's `all-linear` leaves the output head out, as peft does

    def __init__(self, vocab: int, seq_len: int, depth: int, width: int, heads: int, ffn: int,
                 kv_heads: int | None = None, rope_theta: float = 10000.0, eps: float = 1e-6, tie: bool = False,
                 dtype: Any = "float32", seed: int | None = 0, checkpoint: str = "none", tensor_parallel: int = 1,
                 sequence_parallel: bool = False, first: bool = True, last: bool = True, attention: str = "eager"):
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        kv_heads = heads if kv_heads is None else kv_heads
        for name, value in (("vocab", vocab), ("seq_len", seq_len), ("depth", depth), ("width", width),
                            ("heads", heads), ("kv_heads", kv_heads), ("ffn", ffn), ("tensor_parallel", tensor_parallel)):
            _positive_int(name, value)
        problem = shape_problem(width, heads, kv_heads) or check_divides(tensor_parallel, heads=heads,
                                                                        kv_heads=kv_heads, ffn=ffn)
        if problem:
            raise ValueError(problem)
        if not rope_theta > 0:
            raise ValueError(f"rope_theta must be positive, got {rope_theta!r}")
        self.vocab, self.seq_len, self.depth, self.width, self.heads = vocab, seq_len, depth, width, heads
        self.kv_heads, self.ffn, self.head_dim = kv_heads, ffn, width // heads
        self.rope_theta, self.eps, self.tie = float(rope_theta), float(eps), bool(tie)
        self.dtype, self.seed = check_dtype(dtype), 0 if seed is None else int(seed)
        self.checkpoint = parse_checkpoint(checkpoint, ("selective",))
        self.segment_size = checkpoint_segment_size(self.checkpoint, depth)
        self.plan = Plan(depth, self.segment_size)
        rng = np.random.default_rng(seed)
        self.tp = TensorParallel(tensor_parallel, sequence_parallel)  # the decoder layers' share of this rank
        self.first, self.last = bool(first), bool(last)  # a pipeline stage: embeddings on the first, head on the last
        self.model = LlamaModel(vocab, depth, width, heads, kv_heads, ffn, eps, dtype, rng, self.plan, self.tp,
                                self.first, self.last, self.tie)
        self.lm_head = (None if not self.last else Linear.from_weight(self.model.embed_tokens.weight) if tie
                        else Linear(width, vocab, False, dtype, rng, std=INIT_STD))
        self.attention = attention
        for layer in self.model.layers:
            layer.self_attn.attention = attention

    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path, **overrides: Any) -> "Llama":
        """The model a Hugging Face Llama config.json (a path or its dict) describes; `overrides` replace fields
        (e.g. depth=2) or set dtype, seed, checkpoint. ValueError naming a key memstudy cannot honour."""
        from .hf_config import hf_config_fields

        _, fields = hf_config_fields(config, "llama")
        return cls(**{**fields, **overrides})

    def parameter_layers(self) -> list[int | None]:
        layers = []
        for name, _ in self.named_parameters():
            parts = name.split(".")
            if parts[:2] == ["model", "layers"]:
                layers.append(int(parts[2]))
            elif parts[0] == "lm_head" or parts[1] == "norm":
                layers.append(self.depth)
            else:  # embed_tokens (and the head tied to it)
                layers.append(self.depth + 1)
        return layers

    def check_tokens(self, idx: Any) -> None:
        """One-line ValueErrors for token arrays this model cannot take (shape, dtype, id range). Any length: the
        rotary embedding has no position table (transformers' does not refuse longer sequences either)."""
        if len(idx.shape) != 2:
            raise ValueError(f"tokens must be a (batch, seq_len) array, got shape {tuple(idx.shape)}")
        if np.dtype(idx.dtype).kind not in "iu":
            raise ValueError(f"tokens must be integers, got {idx.dtype}")
        if isinstance(idx, np.ndarray) and idx.size:  # shape-only arrays have no values to check
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= self.vocab:
                raise ValueError(f"token ids must be in [0, {self.vocab}), got ids from {low} to {high}")

    def forward(self, idx: Any, cache: Any = None, logits: str = "all") -> Tensor:
        """(b, s) token ids → (b, s, vocab) logits; with a KV cache (`nn.kv_cache`, generation) the tokens sit at the
        positions after those it holds and every layer reads and fills it; `logits="last"`: the last position's only,
        (b, 1, vocab), as transformers' `logits_to_keep = 1`."""
        if self.first:
            idx = idx.data if isinstance(idx, Tensor) else idx
            self.check_tokens(idx)
            start = check_cache(cache, idx.shape[1])
            s, like = idx.shape[1], idx
        else:  # a later pipeline stage: idx is the hidden states the previous stage sent
            x, start, like = idx, 0, idx.data
            s = x.shape[1] * (self.tp.size if self.tp.sequence else 1)
        m, depth = self.model, self.depth
        with ops.small_ufunc_buffer():
            with layer_scope(depth + 1):
                if self.first:  # sequence parallelism: this rank's s/t tokens until the head
                    x = self.tp.scatter(m.embed_tokens(idx))
                positions = np.arange(start, start + s, dtype=np.int64, like=like)
                tables = apply(ops.RotaryTables, positions, dim=self.head_dim, theta=self.rope_theta,
                               dtype=self.dtype)
                positions = None
            if self.segment_size is None or not STATE.grad_enabled:
                # the loop inline (as the GPT's): each layer's input is dropped once the next layer's exists
                cos, sin = tables.data[0], tables.data[1]
                tables = None
                selective = self.checkpoint == "selective"
                for i in self.plan.blocks(0, depth):
                    with layer_scope(i):
                        x = m.layers[i](x, cos, sin, selective, None if cache is None else cache.layers[i])
                cos = sin = None
            else:
                for start, stop in self.plan.segments():
                    params = [p for layer in m.layers[start:stop] for p in layer.parameters()]
                    with layer_scope(start):
                        x = checkpoint_segment(self.run_layers, (x, tables), params, start, stop,
                                               names=("x", "rotary_tables"))
                tables = None
            if not self.last:
                return x
            with layer_scope(depth):
                x = self.tp.gather(m.norm(x))  # the head, whole on every rank, sees every token
                return self.lm_head(keep_logits(x, logits))

    def run_layers(self, x: Tensor, tables: Tensor, start: int, stop: int) -> Tensor:
        """Decoder layers start..stop-1: one checkpoint segment (run again in its recompute)."""
        cos, sin = tables.data[0], tables.data[1]
        with ops.small_ufunc_buffer():  # a checkpoint recomputes this outside `forward`
            for i in self.plan.blocks(start, stop):
                with layer_scope(i):
                    x = self.model.layers[i](x, cos, sin)
        return x


def shape_problem(width: int, heads: int, kv_heads: int) -> str | None:
    """Why these attention shapes cannot be built (one line), or None."""
    if width % heads:
        return f"heads must divide width: width {width} is not a multiple of heads {heads}"
    if heads % kv_heads:
        return f"kv_heads must divide heads: heads {heads} is not a multiple of kv_heads {kv_heads}"
    if (width // heads) % 2:
        return (f"the head dimension width / heads = {width // heads} must be even (the rotary embedding rotates "
                f"pairs)")
    return None


def parameter_count(config: dict[str, Any]) -> int:
    """Parameters of a (normalized) llama config, in closed form: V·h (+ V·h untied) + h + depth · (2·h·a·d +
    2·h·kv·d + 3·h·ffn + 2·h), LoRA adapters excluded (`lora_parameter_count`)."""
    h, a, f, v = config["width"], config["heads"], config["ffn"], config["vocab"]
    kv = config["kv_heads"] or a
    d = h // a
    per_layer = 2 * h * a * d + 2 * h * kv * d + 3 * h * f + 2 * h
    return v * h * (1 if config["tie"] else 2) + h + config["depth"] * per_layer


# --- Hugging Face's LlamaConfig -----------------------------------------------------------------------------------
# key -> (field, LlamaConfig's default when the key is absent); num_key_value_heads defaults to the heads
HF_FIELDS: dict[str, tuple[str, Any]] = {
    "num_hidden_layers": ("depth", 32), "hidden_size": ("width", 4096), "num_attention_heads": ("heads", 32),
    "num_key_value_heads": ("kv_heads", None), "intermediate_size": ("ffn", 11008), "vocab_size": ("vocab", 32000),
    "max_position_embeddings": ("seq_len", 2048), "rope_theta": ("rope_theta", 10000.0),
    "rms_norm_eps": ("eps", 1e-6), "tie_word_embeddings": ("tie", False),
}
# keys whose only value this model implements (LlamaConfig's default; absent means that value)
HF_FIXED: dict[str, Any] = {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                            "attention_dropout": 0.0, "rope_scaling": None}
# keys that do not change what is computed or kept: token ids, initialisation, caching, the stored weights' dtype
# (the step's dtype is the --dtype field), tensor-parallel pretraining (transformers 5 ignores it), names
HF_IGNORED = ("_name_or_path", "architectures", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
              "model_type", "pretraining_tp", "torch_dtype", "dtype", "transformers_version", "use_cache")


def hf_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The llama fields a LlamaConfig dict describes; ConfigError naming the first key this model cannot honour."""
    fields = {field: default for field, default in HF_FIELDS.values()}
    rope = hf.get("rope_parameters")
    for key, value in hf.items():
        if key in HF_FIELDS:
            fields[HF_FIELDS[key][0]] = value
        elif key in HF_FIXED:
            if value != HF_FIXED[key]:
                what = f"a {value.get('rope_type') or value.get('type')!r} rope_scaling" if key == "rope_scaling" \
                    and isinstance(value, dict) else f"{key} = {json.dumps(value)}"
                raise ConfigError(f"hf config: {what} is not what memstudy's llama computes (it implements "
                                  f"{key} = {json.dumps(HF_FIXED[key])})")
        elif key == "rope_parameters":
            if not isinstance(rope, dict) or rope.get("rope_type", "default") != "default" \
                    or set(rope) - {"rope_type", "rope_theta"}:
                raise ConfigError(f"hf config: rope_parameters {json.dumps(rope)} is not what memstudy's llama "
                                  f"computes (the default rope: rope_type default and a rope_theta)")
            if "rope_theta" in rope:
                fields["rope_theta"] = rope["rope_theta"]
        elif key == "head_dim":
            pass  # checked below, once hidden_size and the heads are known
        elif key not in HF_IGNORED:
            raise ConfigError(f"hf config: unknown key {key!r} for a llama: it may change the architecture, and "
                              f"memstudy's llama does not implement it")
    if fields["kv_heads"] is None:
        fields["kv_heads"] = fields["heads"]
    head_dim = hf.get("head_dim")
    if head_dim is not None and isinstance(fields["width"], int) and isinstance(fields["heads"], int) \
            and fields["heads"] > 0 and head_dim != fields["width"] // fields["heads"]:
        raise ConfigError(f"hf config: head_dim {head_dim} is not hidden_size / num_attention_heads = "
                          f"{fields['width'] // fields['heads']}; memstudy's llama has d = h / a")
    return fields


class LlamaFamily(Family):
    name = "llama"
    description = ("Llama as transformers' LlamaForCausalLM computes it: embeddings, depth × (RMSNorm, grouped-query "
                   "attention with rotary embeddings, RMSNorm, SwiGLU MLP), RMSNorm, head; next-token cross-entropy")
    defaults = {"depth": 2, "width": 64, "batch_size": 4}
    checkpoints = ("selective",)
    findings = ("precision", "generation", "llama", "parallel")  # the report's sections on this family (memstudy/findings/)
    hf_model_types = ("llama",)
    tensor_parallel = True  # Megatron-LM's column- and row-parallel Linears (memstudy/parallel/tensor.py)
    pipeline_parallel = True  # one stage's blocks (memstudy/parallel/pipeline.py)
    modes = MODES  # train, inference, and generate (nn.generation)
    fields = (
        Field("heads", int, 4, "attention (query) heads (must divide width; width / heads must be even)", minimum=1),
        Field("kv_heads", int, None, "key/value heads, each shared by heads / kv_heads query heads (grouped-query "
              "attention; must divide heads; default: heads)", minimum=1),
        Field("ffn", int, 176, "the MLP's intermediate size (gate_proj and up_proj outputs)", minimum=1),
        Field("seq_len", int, 64, "tokens per sequence", minimum=1),
        Field("vocab", int, 512, "vocabulary size", minimum=1),
        Field("rope_theta", float, 10000.0, "the rotary embedding's base (positive)"),
        Field("eps", float, 1e-6, "RMSNorm's epsilon", minimum=0.0),
        Field("tie", bool, False, "lm_head tied to embed_tokens (tie_word_embeddings)"),
        attention_field(),
        *lora_fields("q_proj,v_proj"),
        *generation_fields(),
    )

    def check(self, config: dict[str, Any]) -> None:
        if config["kv_heads"] is None:
            config["kv_heads"] = config["heads"]
        problem = shape_problem(config["width"], config["heads"], config["kv_heads"])
        if problem:
            raise ConfigError(problem)
        if not config["rope_theta"] > 0:
            raise ConfigError(f"rope_theta must be positive, got {config['rope_theta']:g}")
        check_lora_config(self.base_model, config)
        check_generation(config)
        check_tensor_parallel(config, heads=config["heads"], kv_heads=config["kv_heads"], ffn=config["ffn"])

    def base_model(self, config: dict[str, Any]) -> Llama:
        """The model without LoRA."""
        stage = pipeline.stage_fields(config)  # the whole model on one stage
        return Llama(config["vocab"], config["seq_len"], stage["depth"], config["width"], config["heads"],
                     config["ffn"], kv_heads=config["kv_heads"], rope_theta=config["rope_theta"], eps=config["eps"],
                     tie=config["tie"], dtype=config["dtype"], seed=config["seed"], checkpoint=config["checkpoint"],
                     tensor_parallel=config.get("tensor_parallel") or 1,
                     sequence_parallel=bool(config.get("sequence_parallel")), first=stage["first"],
                     last=stage["last"], attention=config["attention"])

    def build(self, config: dict[str, Any]) -> Llama:
        return apply_lora_config(self.base_model(config), config)

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        """(b, seq_len) token ids in [0, vocab) and their next-token targets: two views of one (b, seq_len + 1)
        draw (the targets are the ids shifted by one position); in mode generate the prompt, (b, prompt_len)."""
        if config["mode"] == "generate":
            return prompt_tokens(config), None
        rng = np.random.default_rng(config["seed"] + 1)
        tokens = init.integers(rng, 0, config["vocab"], (config["batch_size"], config["seq_len"] + 1))
        return tokens[:, :-1], tokens[:, 1:]

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return [f"layer {i}" for i in range(config["depth"])] + ["head", "embedding"]

    def state_bytes(self, config: dict[str, Any]) -> StateBytes | None:
        """`parameter_count` in the config's dtype, all trainable; the batch: `token_batch_bytes`. With LoRA: None
        (counted from the shape-only build, each decoder layer built once and counted as many)."""
        if config.get("lora_rank") or (config.get("tensor_parallel") or 1) > 1 or pipeline.stages(config) > 1:
            return None  # counted from the shape-only build (a rank's shards)
        nbytes = parameter_count(config) * as_dtype(config["dtype"]).itemsize
        return StateBytes(nbytes, nbytes, token_batch_bytes(config))

    def from_hf_config(self, hf: dict[str, Any]) -> dict[str, Any]:
        return hf_fields(hf)


FAMILY = LlamaFamily()

__all__ = ["FAMILY", "HF_FIELDS", "Llama", "LlamaFamily", "hf_fields", "parameter_count"]

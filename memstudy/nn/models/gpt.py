"""The GPT family (`model = "gpt"`): GPT-2 as nanoGPT's model.py writes it, with its explicit attention path.

Token embedding `wte` plus learned position embedding `wpe`, dropout; `depth` blocks
x = x + attn(ln_1(x)), x = x + mlp(ln_2(x)); final `ln_f`; `lm_head` tied to `wte`. Attention:
c_attn → q, k, v (views of its output), (q @ kᵀ)/√(h/a), causal mask, softmax, dropout, @ v, heads merged,
c_proj, dropout. MLP: c_fc (4h), GELU (tanh approximation), c_proj, dropout. Loss: mean next-token
cross-entropy over all b·s positions. Parameter names are nanoGPT's (`transformer.h.0.attn.c_attn.weight`).

Layer indices (`layer_scope`, `parameter_layers`, the ledger's per-layer tables): block i is layer i
(0 ≤ i < depth); the head (ln_f and lm_head) is layer `depth`; the embeddings (wte and wpe lookups and their
dropout) are layer `depth + 1`, and the tied `wte` weight counts there. The loss is outside every layer.

Attention (`attention`): `eager` runs the core as the separate ops above; `flash` as one fused op
(`ops.FlashAttention`) that keeps q, k, v, its output and the softmax's log-sum-exp, and recomputes the scores in
backward (no attention dropout in training: the fused op draws no mask).

Generation (mode generate, `nn.generation`): `forward(idx, cache=, logits=)` reads and fills a KV cache (each block
caches its k and v, transformers' GPT2Attention order), places the tokens at the positions after those the cache
holds, and computes the logits of every position or of the last one only (`logits="last"`).

Checkpointing: `sqrt` / `every:K` run segments of blocks as one `Checkpoint` op each (as the MLP does);
`selective` (Korthikanti et al. 2022) runs each block's attention core (q @ kᵀ, scale, mask, softmax, dropout,
@ v) as one `Checkpoint` op holding q, k and v, recomputed in backward. Dropout masks are drawn from a
generator derived from (seed, forward call, layer, site), so a recompute draws the same mask.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ...autograd.precision import dtype as as_dtype
from ...autograd import STATE, Tensor, apply, layer_scope
from ...autograd import checkpoint as checkpoint_segment
from ...autograd import ops
from .. import init
from ..generation import (check_cache, check_generation, generation_fields, keep_logits, prompt_tokens,
                          token_batch_bytes)
from ..layers import Linear, Module, check_dtype
from ..lora import apply_lora_config, check_lora_config, lora_fields
from ..repeat import Plan
from ..transformer import GELU, ATTENTIONS, Dropout, Embedding, LayerNorm, attention_field, check_attention, \
    flash_attention
from ...parallel import pipeline
from ...parallel.tensor import TensorParallel, check_divides
from .registry import (MODES, ConfigError, Family, Field, StateBytes, check_tensor_parallel, checkpoint_segment_size,
                       parse_checkpoint)

ONE_DEVICE = TensorParallel()
INIT_STD = 0.02  # GPT-2's N(0, 0.02²) for Linear and embedding weights
ATTN_DROPOUT, RESID_DROPOUT, MLP_DROPOUT, EMBEDDING_DROPOUT = range(4)  # dropout sites, for their generators


def dropout_rng(stream: tuple[int, ...], site: int) -> np.random.Generator:
    """The generator of one dropout site in one forward call; `stream` = (seed, call, layer)."""
    return np.random.default_rng(stream + (site,))


class CausalSelfAttention(Module):
    """Under tensor parallelism t (`tp`) this rank's a/t heads: c_attn column-parallel (its q, k and v of those heads,
    3h/t outputs), c_proj row-parallel (h/t inputs, its bias whole)."""

    def __init__(self, width: int, heads: int, depth: int, dropout: float, bias: bool, dtype: Any,
                 rng: np.random.Generator, tp: TensorParallel = ONE_DEVICE):
        self.width, self.heads, self.tp = width, heads, tp
        local = width // tp.size  # this rank's share of the heads' width
        self.c_attn = Linear(width, 3 * local, bias, dtype, rng, std=INIT_STD)
        self.c_proj = Linear(local, width, bias, dtype, rng, std=INIT_STD / math.sqrt(2 * depth))
        self.attn_dropout = Dropout(dropout)
        self.resid_dropout = Dropout(dropout)
        self.training = True
        self.attention = "eager"  # or "flash": set by GPT

    def forward(self, x: Tensor, stream: tuple[int, ...], selective: bool = False, cache: Any = None) -> Tensor:
        b, _, width = x.shape  # under sequence parallelism x holds this rank's s/t tokens
        tp = self.tp
        a, h = self.heads // tp.size, width // tp.size  # this rank's heads and their width
        qkv = tp.column(self.c_attn, tp.enter(x))
        s = qkv.shape[1]
        q, k, v = (apply(ops.Slice, qkv, axis=2, start=i * h, stop=(i + 1) * h)  # views: nothing saved
                   .reshape(b, s, a, h // a).transpose(0, 2, 1, 3) for i in range(3))
        qkv = None
        offset = 0
        if cache is not None:  # a KV cache layer (generation): attention reads every position it holds
            offset = cache.length
            k, v = cache.update(k, v)
        if selective and STATE.grad_enabled:
            y = checkpoint_segment(self.core, (q, k, v), [], stream, names=("q", "k", "v"))
        else:
            y = self.core(q, k, v, stream, offset)
        q = k = v = None
        y = y.transpose(0, 2, 1, 3).reshape(b, s, h)  # heads merged: a copy (the transpose is not contiguous)
        return self.resid_dropout(tp.row(self.c_proj, y), dropout_rng(stream, RESID_DROPOUT), self.training)

    def core(self, q: Tensor, k: Tensor, v: Tensor, stream: tuple[int, ...], offset: int = 0) -> Tensor:
        """softmax(mask(q @ kᵀ / √d)) (dropped out) @ v, per head: the part that holds a·s² values per example.
        `offset`: the position of the first query (the positions a KV cache held before it)."""
        if self.attention == "flash":
            if self.training and self.attn_dropout.p:
                raise ValueError("attention flash takes no attention dropout in training")
            return flash_attention(q, k, v, offset)
        att = apply(ops.BatchedMatMul, q, k.transpose(0, 1, 3, 2))
        att = att * (1.0 / math.sqrt(q.shape[-1]))
        att = apply(ops.CausalMask, att, offset=offset)
        att = apply(ops.Softmax, att, axis=-1)
        att = self.attn_dropout(att, dropout_rng(stream, ATTN_DROPOUT), self.training)
        return apply(ops.BatchedMatMul, att, v)


class FeedForward(Module):
    """nanoGPT's `MLP`: c_fc (h → 4h), GELU, c_proj (4h → h), dropout; under tensor parallelism t c_fc is
    column-parallel (4h/t), c_proj row-parallel."""

    def __init__(self, width: int, depth: int, dropout: float, bias: bool, dtype: Any, rng: np.random.Generator,
                 tp: TensorParallel = ONE_DEVICE):
        self.tp = tp
        self.c_fc = Linear(width, 4 * width // tp.size, bias, dtype, rng, std=INIT_STD)
        self.gelu = GELU()
        self.c_proj = Linear(4 * width // tp.size, width, bias, dtype, rng, std=INIT_STD / math.sqrt(2 * depth))
        self.dropout = Dropout(dropout)
        self.training = True

    def forward(self, x: Tensor, stream: tuple[int, ...]) -> Tensor:
        tp = self.tp
        h = self.gelu(tp.column(self.c_fc, tp.enter(x)))
        return self.dropout(tp.row(self.c_proj, h), dropout_rng(stream, MLP_DROPOUT), self.training)


class Block(Module):
    def __init__(self, width: int, heads: int, depth: int, dropout: float, bias: bool, dtype: Any,
                 rng: np.random.Generator, tp: TensorParallel = ONE_DEVICE):
        self.ln_1 = LayerNorm(width, bias, dtype)
        self.attn = CausalSelfAttention(width, heads, depth, dropout, bias, dtype, rng, tp)
        self.ln_2 = LayerNorm(width, bias, dtype)
        self.mlp = FeedForward(width, depth, dropout, bias, dtype, rng, tp)

    def forward(self, x: Tensor, stream: tuple[int, ...], selective: bool = False, cache: Any = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), stream, selective, cache)
        return x + self.mlp(self.ln_2(x), stream)


class Transformer(Module):
    """nanoGPT's `transformer` ModuleDict: wte, wpe, drop, h (the blocks: those `plan` runs), ln_f. A pipeline stage
    (memstudy/parallel/pipeline.py) holds wpe only if `first`, ln_f only if `last`, and wte if either (the last
    stage's copy of the word embeddings for the tied head, as Megatron-LM keeps it)."""

    def __init__(self, vocab: int, seq_len: int, depth: int, width: int, heads: int, dropout: float, bias: bool,
                 dtype: Any, rng: np.random.Generator, plan: Plan, tp: TensorParallel = ONE_DEVICE,
                 first: bool = True, last: bool = True):
        self.wte = Embedding(vocab, width, dtype, rng, std=INIT_STD) if first or last else None
        self.wpe = Embedding(seq_len, width, dtype, rng, std=INIT_STD) if first else None
        self.drop = Dropout(dropout)
        self.h = plan.build(lambda i: Block(width, heads, depth, dropout, bias, dtype, rng, tp))
        self.ln_f = LayerNorm(width, bias, dtype) if last else None


class TiedHead(Module):
    """lm_head: Linear(width, vocab, no bias) whose weight is the token embedding's (one Tensor, listed once)."""

    def __init__(self, weight: Tensor):
        self.weight = weight

    def forward(self, x: Any) -> Tensor:
        return apply(ops.Linear, x, self.weight)


class GPT(Module):
    """GPT-2 (see the module docstring). `model(idx)` maps (b, s) token ids to (b, s, vocab) logits."""

    def __init__(self, vocab: int, seq_len: int, depth: int, width: int, heads: int, dropout: float = 0.0,
                 bias: bool = True, dtype: Any = "float32", seed: int | None = 0, checkpoint: str = "none",
                 tensor_parallel: int = 1, sequence_parallel: bool = False, first: bool = True, last: bool = True,
                 attention: str = "eager"):
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        for name, value in (("vocab", vocab), ("seq_len", seq_len), ("depth", depth), ("width", width),
                            ("heads", heads), ("tensor_parallel", tensor_parallel)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if width % heads:
            raise ValueError(f"heads must divide width: width {width} is not a multiple of heads {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        problem = check_divides(tensor_parallel, heads=heads, **{"the MLP's hidden size": 4 * width})
        if problem:
            raise ValueError(problem)
        self.tp = TensorParallel(tensor_parallel, sequence_parallel)  # the blocks' share of this rank
        self.vocab, self.seq_len, self.depth, self.width, self.heads = vocab, seq_len, depth, width, heads
        self.dropout, self.dtype, self.seed = dropout, check_dtype(dtype), 0 if seed is None else int(seed)
        self.checkpoint = parse_checkpoint(checkpoint, ("selective",))
        self.segment_size = checkpoint_segment_size(self.checkpoint, depth)
        self.plan = Plan(depth, self.segment_size)  # the blocks are alike: the predictor runs a few of them
        self.training = True
        self.calls = 0  # forward calls so far: part of each dropout generator's seed
        rng = np.random.default_rng(seed)
        # a pipeline stage (memstudy/parallel/pipeline.py): the embeddings only on the first, the head on the last
        self.first, self.last = bool(first), bool(last)
        self.transformer = Transformer(vocab, seq_len, depth, width, heads, dropout, bias, dtype, rng, self.plan,
                                       self.tp, self.first, self.last)
        self.lm_head = TiedHead(self.transformer.wte.weight) if self.last else None
        self.attention = attention
        for block in self.transformer.h:
            block.attn.attention = attention

    def train(self, mode: bool = True) -> "GPT":
        """Training mode (dropout on) or, with mode False, evaluation mode (dropout off, nothing saved for it)."""
        self.training = bool(mode)
        for block in self.transformer.h:
            block.attn.training = block.mlp.training = self.training
        return self

    def eval(self) -> "GPT":
        return self.train(False)

    def parameter_layers(self) -> list[int | None]:
        layers = []
        for name, _ in self.named_parameters():
            parts = name.split(".")
            if parts[1] == "h":
                layers.append(int(parts[2]))
            elif parts[1] == "ln_f":
                layers.append(self.depth)
            else:  # wte (tied with lm_head), wpe
                layers.append(self.depth + 1)
        return layers

    def check_tokens(self, idx: Any, start: int = 0) -> None:
        """One-line ValueErrors for token arrays this model cannot take (shape, dtype, length, id range); `start`:
        the position of the first token (the positions a KV cache holds)."""
        if len(idx.shape) != 2:
            raise ValueError(f"tokens must be a (batch, seq_len) array, got shape {tuple(idx.shape)}")
        if np.dtype(idx.dtype).kind not in "iu":
            raise ValueError(f"tokens must be integers, got {idx.dtype}")
        if start + idx.shape[1] > self.seq_len:
            where = f" after the {start} the cache holds" if start else ""
            raise ValueError(f"sequence length {idx.shape[1]}{where} is above the model's seq_len {self.seq_len}")
        if isinstance(idx, np.ndarray) and idx.size:  # shape-only arrays have no values to check
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= self.vocab:
                raise ValueError(f"token ids must be in [0, {self.vocab}), got ids from {low} to {high}")

    def forward(self, idx: Any, cache: Any = None, logits: str = "all") -> Tensor:
        """(b, s) token ids → (b, s, vocab) logits; with a KV cache (`nn.kv_cache`, generation) the tokens sit at the
        positions after those it holds and every block reads and fills it; `logits="last"`: the last position's only,
        (b, 1, vocab), as transformers' `logits_to_keep = 1`."""
        if not self.first:  # a later pipeline stage: idx is the hidden states the previous stage sent
            return self.stage_forward(idx)
        idx = idx.data if isinstance(idx, Tensor) else idx
        self.check_tokens(idx, 0 if cache is None else cache.length)
        start = check_cache(cache, idx.shape[1])
        self.calls += 1
        call, t, depth = self.calls, self.transformer, self.depth
        with ops.small_ufunc_buffer():  # once per forward, not once per bias add
            with layer_scope(depth + 1):
                positions = np.arange(start, start + idx.shape[1], dtype=np.int64, like=idx)
                x = t.wte(idx) + t.wpe(positions)
                positions = None
                x = self.tp.scatter(x)  # sequence parallelism: this rank's s/t tokens from here to ln_f
                x = t.drop(x, dropout_rng((self.seed, call, depth + 1), EMBEDDING_DROPOUT), self.training)
            if self.segment_size is None or not STATE.grad_enabled:
                # the loop inline (not a call to run_blocks, whose caller would hold the embeddings' output for the
                # whole loop): each block's input is dropped once the next block's exists
                selective = self.checkpoint == "selective"
                for i in self.plan.blocks(0, depth):
                    with layer_scope(i):
                        x = t.h[i](x, (self.seed, call, i), selective, None if cache is None else cache.layers[i])
            else:
                for start, stop in self.plan.segments():
                    params = [p for block in t.h[start:stop] for p in block.parameters()]
                    with layer_scope(start):
                        x = checkpoint_segment(self.run_blocks, x, params, start, stop, call)
            if not self.last:  # an earlier pipeline stage sends its hidden states
                return x
            with layer_scope(depth):  # inline, not a call: the caller's x would outlive ln_f's input
                x = self.tp.gather(t.ln_f(x))  # the head, whole on every rank, sees every token
                return self.lm_head(keep_logits(x, logits))

    def stage_forward(self, x: Tensor) -> Tensor:
        """A later pipeline stage's forward: its blocks on the hidden states received, then the head if last."""
        self.calls += 1
        call = self.calls
        with ops.small_ufunc_buffer():
            if self.segment_size is None:
                selective = self.checkpoint == "selective"
                for i in self.plan.blocks(0, self.depth):
                    with layer_scope(i):
                        x = self.transformer.h[i](x, (self.seed, call, i), selective)
            else:
                for start, stop in self.plan.segments():
                    params = [p for block in self.transformer.h[start:stop] for p in block.parameters()]
                    with layer_scope(start):
                        x = checkpoint_segment(self.run_blocks, x, params, start, stop, call)
            if not self.last:
                return x
            with layer_scope(self.depth):
                x = self.tp.gather(self.transformer.ln_f(x))
                return self.lm_head(x)

    def run_blocks(self, x: Tensor, start: int, stop: int, call: int) -> Tensor:
        """Blocks start..stop-1 of forward call `call`: one checkpoint segment (run again in its recompute)."""
        with ops.small_ufunc_buffer():  # a checkpoint recomputes this outside `forward`
            for i in self.plan.blocks(start, stop):
                with layer_scope(i):
                    x = self.transformer.h[i](x, (self.seed, call, i))
        return x


class GPTFamily(Family):
    name = "gpt"
    description = ("GPT-2 as nanoGPT writes it: embeddings, depth × (LayerNorm, causal self-attention, LayerNorm, "
                   "GELU MLP), LayerNorm, tied head; next-token cross-entropy")
    defaults = {"depth": 2, "width": 128, "batch_size": 8}
    checkpoints = ("selective",)
    findings = ("attention", "precision", "generation", "parallel")  # the report's sections on this family (memstudy/findings/)
    hf_model_types = ("gpt2",)
    tensor_parallel = True  # Megatron-LM's column- and row-parallel Linears (memstudy/parallel/tensor.py)
    pipeline_parallel = True  # one stage's blocks (memstudy/parallel/pipeline.py)
    modes = MODES  # train, inference, and generate (nn.generation)
    checkpoint_help = {"selective": "recompute each block's attention core (scores, softmax, dropout: the a·s²·b "
                                    "terms) in backward, holding only q, k, v (Korthikanti et al. 2022)"}
    fields = (
        Field("heads", int, 4, "attention heads (must divide width)", minimum=1),
        Field("seq_len", int, 64, "tokens per sequence (also the position table's length)", minimum=1),
        Field("vocab", int, 512, "vocabulary size", minimum=1),
        Field("dropout", float, 0.0, "dropout probability (embeddings, attention, residual, MLP)", minimum=0.0,
              maximum=1.0, exclusive_maximum=True),
        Field("bias", bool, True, "biases in Linear and LayerNorm"),
        attention_field(),
        *lora_fields("c_attn"),  # peft's default target for gpt2
        *generation_fields(),
    )

    def check(self, config: dict[str, Any]) -> None:
        if config["width"] % config["heads"]:
            raise ConfigError(f"heads must divide width: width {config['width']} is not a multiple of heads "
                              f"{config['heads']}")
        check_lora_config(self.base_model, config)
        check_generation(config)
        check_attention(config)
        check_tensor_parallel(config, heads=config["heads"], **{"the MLP's hidden size": 4 * config["width"]})

    def base_model(self, config: dict[str, Any]) -> GPT:
        """The model without LoRA."""
        stage = pipeline.stage_fields(config)  # the whole model on one stage
        model = GPT(config["vocab"], config["seq_len"], stage["depth"], config["width"], config["heads"],
                    dropout=config["dropout"], bias=config["bias"], dtype=config["dtype"], seed=config["seed"],
                    checkpoint=config["checkpoint"], tensor_parallel=config.get("tensor_parallel") or 1,
                    sequence_parallel=bool(config.get("sequence_parallel")), first=stage["first"], last=stage["last"],
                    attention=config["attention"])
        return model.train(config["mode"] == "train")

    def build(self, config: dict[str, Any]) -> GPT:
        return apply_lora_config(self.base_model(config), config)

    def from_hf_config(self, hf: dict[str, Any]) -> dict[str, Any]:
        return hf_fields(hf)

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        """(b, seq_len) token ids in [0, vocab) and their next-token targets: two views of one (b, seq_len + 1)
        draw (the targets are the ids shifted by one position); in mode generate the prompt, (b, prompt_len)."""
        if config["mode"] == "generate":
            return prompt_tokens(config), None
        rng = np.random.default_rng(config["seed"] + 1)
        tokens = init.integers(rng, 0, config["vocab"], (config["batch_size"], config["seq_len"] + 1))
        return tokens[:, :-1], tokens[:, 1:]

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return [f"block {i}" for i in range(config["depth"])] + ["head", "embedding"]

    def state_bytes(self, config: dict[str, Any]) -> StateBytes | None:
        """wte (vocab × h, tied with lm_head: once), wpe (seq_len × h), per block 12h² weights (c_attn 3h², c_proj h²,
        c_fc 4h², c_proj 4h²) and, with biases, 9h of Linear biases (3h + h + 4h + h) + 4h of LayerNorm (two, weight
        and bias; 2h without biases), ln_f; the batch: `token_batch_bytes` (GPT-2 small: 124,439,808 parameters with
        a 1024-position table). With LoRA: None (counted from the shape-only build, the blocks built once and counted
        as many)."""
        if config.get("lora_rank") or (config.get("tensor_parallel") or 1) > 1 or pipeline.stages(config) > 1:
            return None  # counted from the shape-only build (a rank's shards, a pipeline stage's blocks)
        h, depth = config["width"], config["depth"]
        norm = 2 * h if config["bias"] else h
        block = 12 * h * h + (9 * h if config["bias"] else 0) + 2 * norm
        count = config["vocab"] * h + config["seq_len"] * h + depth * block + norm
        nbytes = count * as_dtype(config["dtype"]).itemsize
        return StateBytes(nbytes, nbytes, token_batch_bytes(config))


# --- Hugging Face's GPT2Config ------------------------------------------------------------------------------------
# key -> (field, GPT2Config's default when the key is absent)
HF_FIELDS: dict[str, tuple[str, Any]] = {
    "n_layer": ("depth", 12), "n_embd": ("width", 768), "n_head": ("heads", 12), "n_positions": ("seq_len", 1024),
    "vocab_size": ("vocab", 50257),
}
HF_DROPOUTS = ("resid_pdrop", "embd_pdrop", "attn_pdrop")  # one `dropout` field here: they must agree
# keys whose only value this model implements (GPT2Config's default; absent means that value); n_inner None = 4·h
HF_FIXED: dict[str, Any] = {"activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
                            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
                            "add_cross_attention": False, "tie_word_embeddings": True}
# keys that do not change what a causal LM computes or keeps: token ids, initialisation, caching, the double-heads
# model's summary head, generation defaults, names, the stored weights' dtype (the step's is the --dtype field)
HF_IGNORED = ("_name_or_path", "architectures", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
              "model_type", "n_ctx", "summary_activation", "summary_first_dropout", "summary_proj_to_labels",
              "summary_type", "summary_use_proj", "task_specific_params", "torch_dtype", "dtype",
              "transformers_version", "use_cache")


def hf_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The gpt fields a GPT2Config dict describes; ConfigError naming the first key this model cannot honour."""
    fields = {field: default for field, default in HF_FIELDS.values()}
    dropouts = {key: hf.get(key, 0.1) for key in HF_DROPOUTS}
    for key, value in hf.items():
        if key in HF_FIELDS:
            fields[HF_FIELDS[key][0]] = value
        elif key in HF_FIXED:
            if value != HF_FIXED[key] and not (key == "activation_function" and value == "gelu_pytorch_tanh"):
                raise ConfigError(f"hf config: {key} = {json.dumps(value)} is not what memstudy's gpt computes (it "
                                  f"implements {key} = {json.dumps(HF_FIXED[key])})")
        elif key == "n_inner":
            pass  # checked below, once n_embd is known
        elif key not in HF_DROPOUTS and key not in HF_IGNORED:
            raise ConfigError(f"hf config: unknown key {key!r} for a gpt2: it may change the architecture, and "
                              f"memstudy's gpt does not implement it")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * fields["width"]:
        raise ConfigError(f"hf config: n_inner {n_inner} is not 4 · n_embd = {4 * fields['width']}; memstudy's gpt "
                          f"has a 4h MLP")
    if len(set(dropouts.values())) > 1:
        raise ConfigError(f"hf config: {', '.join(f'{k} = {v}' for k, v in dropouts.items())}: memstudy's gpt has one "
                          f"dropout probability for all three")
    fields["dropout"] = dropouts["resid_pdrop"]
    return fields


FAMILY = GPTFamily()

__all__ = ["FAMILY", "GPT", "GPTFamily"]

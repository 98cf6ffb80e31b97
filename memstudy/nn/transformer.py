"""The transformer's layers: LayerNorm, RMSNorm, Embedding, Dropout and GELU as Modules (the GPT and Llama families
build on them), and the attention-core strategy both families take (`attention = eager | flash`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor, apply
from ..autograd import ops
from . import init
from .layers import Module, check_dtype
from .models.registry import ConfigError, Field

ATTENTIONS = ("eager", "flash")


def attention_field() -> Field:
    """The `attention` field of the GPT and Llama families (optional: cells from before it keep their ids)."""
    return Field("attention", str, "eager", "the attention core: eager = scores, mask, softmax and @ v as separate "
                 "ops (the model's own path: its a·s² scores and probabilities kept for backward); flash = one fused "
                 "op keeping q, k, v, its output and the softmax's log-sum-exp, the scores recomputed in backward in "
                 "tiles of keys (FlashAttention)", choices=ATTENTIONS, optional=True)


def check_attention(config: dict[str, Any]) -> None:
    """ConfigError for flash attention with attention dropout in training (the fused op draws no dropout mask)."""
    if config.get("attention") == "flash" and config.get("dropout") and config["mode"] == "train":
        raise ConfigError(f"attention flash takes no dropout in training (the fused op has no dropout mask), got "
                          f"dropout {config['dropout']}")


def flash_attention(q: Tensor, k: Tensor, v: Tensor, offset: int = 0) -> Tensor:
    """The fused causal attention core (`ops.FlashAttention`): q (b, a, s, d), k and v (b, kv, t, d) → (b, a, s, d)."""
    return apply(ops.FlashAttention, q, k, v, offset=offset)


class LayerNorm(Module):
    """Normalise over the last axis, then scale by `weight` (ones) and shift by `bias` (zeros, if any)."""

    def __init__(self, width: int, bias: bool = True, dtype: Any = "float32", eps: float = 1e-5):
        dt = check_dtype(dtype)
        self.eps = eps
        self.weight = Tensor(init.constant(1.0, width, dt), requires_grad=True, name="weight")
        self.bias = Tensor(init.constant(0.0, width, dt), requires_grad=True, name="bias") if bias else None

    def forward(self, x: Any) -> Tensor:
        if self.bias is None:
            return apply(ops.LayerNorm, x, self.weight, eps=self.eps)
        return apply(ops.LayerNorm, x, self.weight, self.bias, eps=self.eps)


class RMSNorm(Module):
    """Root-mean-square normalisation over the last axis, then a scale by `weight` (ones); no bias (Llama's)."""

    def __init__(self, width: int, dtype: Any = "float32", eps: float = 1e-6):
        dt = check_dtype(dtype)
        self.eps = eps
        self.weight = Tensor(init.constant(1.0, width, dt), requires_grad=True, name="weight")

    def forward(self, x: Any) -> Tensor:
        return apply(ops.RMSNorm, x, self.weight, eps=self.eps)


class Embedding(Module):
    """A table of `rows` vectors of `width`, drawn N(0, std²); `forward(indices)` picks rows."""

    def __init__(self, rows: int, width: int, dtype: Any = "float32", seed: int | np.random.Generator | None = 0,
                 std: float = 0.02):
        dt = check_dtype(dtype)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.weight = Tensor(init.normal(rng, (rows, width), dt, std=std), requires_grad=True, name="weight")

    def forward(self, indices: Any) -> Tensor:
        return apply(ops.Embedding, indices, self.weight)


class Dropout(Module):
    """Inverted dropout with probability `p`; the identity (no op, nothing saved) when p = 0 or not training.

    The caller passes the generator of each call (`rng`): a model derives it from its seed and the call, so a
    checkpoint's recompute draws the same mask as the forward pass did.
    """

    def __init__(self, p: float = 0.0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Any, rng: np.random.Generator | None = None, training: bool = True) -> Any:
        if self.p == 0.0 or not training:
            return x
        if rng is None:
            raise ValueError("dropout with p > 0 needs a random generator")
        return apply(ops.Dropout, x, p=self.p, rng=rng)


class GELU(Module):
    """GELU in the tanh approximation (GPT-2's)."""

    def forward(self, x: Any) -> Tensor:
        return apply(ops.GELU, x)

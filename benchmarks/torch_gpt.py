"""A hand-written PyTorch GPT: nanoGPT's model.py with its explicit ("slow") attention path.

The PyTorch side of the GPT benchmark (benchmarks.torch_worker builds it for `model = "gpt"` configs) and of the
tests that check memstudy's GPT against PyTorch (tests/test_gpt_torch.py). Attention is written out
(q @ kᵀ · 1/√d, masked_fill, softmax, dropout, @ v), never `scaled_dot_product_attention`, which on CPU may take a
fused kernel that keeps no s × s tensor. The causal mask is a registered buffer (masked_fill saves a view of
it); the head is tied to the token embedding. Parameter names are nanoGPT's, as memstudy's GPT uses them.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, seq_len: int, dropout: float, bias: bool):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.c_attn = nn.Linear(width, 3 * width, bias=bias)
        self.c_proj = nn.Linear(width, width, bias=bias)
        self.register_buffer("mask", torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        d = h // self.heads
        q, k, v = self.c_attn(x).split(h, dim=2)
        q = q.view(b, s, self.heads, d).transpose(1, 2)
        k = k.view(b, s, self.heads, d).transpose(1, 2)
        v = v.view(b, s, self.heads, d).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
        att = att.masked_fill(self.mask[:s, :s], float("-inf"))
        att = F.softmax(att, dim=-1)
        att = F.dropout(att, self.dropout, self.training)
        y = (att @ v).transpose(1, 2).contiguous().view(b, s, h)
        return F.dropout(self.c_proj(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, width: int, dropout: float, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width, bias=bias)
        self.c_proj = nn.Linear(4 * width, width, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, seq_len: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, bias=bias)
        self.attn = CausalSelfAttention(width, heads, seq_len, dropout, bias)
        self.ln_2 = nn.LayerNorm(width, bias=bias)
        self.mlp = MLP(width, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, depth: int, width: int, heads: int, dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        self.dropout = dropout
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, width), wpe=nn.Embedding(seq_len, width),
            h=nn.ModuleList([Block(width, heads, seq_len, dropout, bias) for _ in range(depth)]),
            ln_f=nn.LayerNorm(width, bias=bias)))
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as nanoGPT does

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        x = F.dropout(x, self.dropout, self.training)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all positions as log_softmax + gather (F.cross_entropy also saves a 0-d
    total-weight tensor; this saves exactly what memstudy's fused loss does: the log-probabilities and the
    targets)."""
    return -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).mean()


def build(config: dict[str, Any]) -> tuple[TorchGPT, torch.Tensor, torch.Tensor]:
    """The model (GPT-2's N(0, 0.02²) init), and (batch, seq_len) tokens with their next-token targets."""
    torch.manual_seed(config.get("seed", 0))
    model = TorchGPT(config["vocab"], config["seq_len"], config["depth"], config["width"], config["heads"],
                     config.get("dropout", 0.0), config.get("bias", True)).to(getattr(torch, config["dtype"]))
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * config["depth"]))
        elif p.dim() == 2:
            nn.init.normal_(p, std=0.02)
    tokens = torch.randint(0, config["vocab"], (config["batch_size"], config["seq_len"] + 1))
    return model, tokens[:, :-1], tokens[:, 1:]

"""The floor for the GPT: one training step written by hand in plain numpy, the same math as memstudy's GPT.

GPT-2 as nanoGPT writes it (embeddings, pre-norm blocks with explicit causal attention and a GELU MLP, final
LayerNorm, head tied to the token embedding), dropout 0, mean next-token cross-entropy, then SGD on every
parameter (p ← p − lr·∂p, after the whole backward pass, as the engine does).

Written the way a careful person would write it by hand: each op's intermediates are computed with as few
passes as numpy allows, buffers that are dead after a line are reused in place (the scores become the
probabilities, which become their own gradient), and backward reads the values forward kept (x̂ and 1/std for
each layer norm, the probabilities, the GELU input). No autograd, no bookkeeping, no chunking: the time this
takes is what the arithmetic costs through numpy.
"""
from __future__ import annotations

import math

import numpy as np

C = math.sqrt(2.0 / math.pi)
K = 0.044715


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, eps: float):
    """(y, x̂, 1/std) over the last axis."""
    xhat = x - x.mean(axis=-1, keepdims=True)
    rstd = np.vecdot(xhat, xhat)[..., None]
    rstd /= x.shape[-1]
    rstd += eps
    np.sqrt(rstd, out=rstd)
    np.reciprocal(rstd, out=rstd)
    xhat *= rstd
    y = xhat * weight
    if bias is not None:
        y += bias
    return y, xhat, rstd


def _layer_norm_backward(grad: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, weight: np.ndarray):
    """(∂x, ∂weight, ∂bias); x̂ is dead afterwards and is overwritten."""
    width = grad.shape[-1]
    rows = grad.reshape(-1, width)
    grad_w = np.einsum("ij,ij->j", rows, xhat.reshape(-1, width))
    grad_b = rows.sum(axis=0)
    gw = grad * weight
    mean_gw = gw.mean(axis=-1, keepdims=True)
    mean_gwx = np.vecdot(gw, xhat)[..., None]
    mean_gwx /= width
    xhat *= mean_gwx
    gw -= xhat
    gw -= mean_gw
    gw *= rstd
    return gw, grad_w, grad_b


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x @ Wᵀ + b on (b·s, in): one BLAS call (numpy's 3-d matmul makes one per example)."""
    out = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(x.shape[:-1] + (weight.shape[0],))
    if bias is not None:
        out += bias
    return out


def _linear_backward(grad: np.ndarray, x: np.ndarray, weight: np.ndarray, has_bias: bool):
    """(∂x, ∂weight, ∂bias)."""
    rows = grad.reshape(-1, grad.shape[-1])
    grad_w = rows.T @ x.reshape(-1, x.shape[-1])
    grad_b = rows.sum(axis=0) if has_bias else None
    return (rows @ weight).reshape(grad.shape[:-1] + (weight.shape[1],)), grad_w, grad_b


class NumpyGPT:
    """Parameters as plain arrays keyed by nanoGPT's names (copied from a memstudy GPT)."""

    def __init__(self, params: dict[str, np.ndarray], depth: int, heads: int, lr: float = 0.01, eps: float = 1e-5):
        self.p = {name: np.array(value) for name, value in params.items()}
        self.depth, self.heads, self.lr, self.eps = depth, heads, lr, eps
        self.bias = "transformer.ln_f.bias" in self.p

    @classmethod
    def from_memstudy(cls, model, lr: float = 0.01) -> "NumpyGPT":
        return cls({name: t.data for name, t in model.named_parameters()}, model.depth, model.heads, lr)

    def step(self, idx: np.ndarray, targets: np.ndarray) -> float:
        """Forward, loss, backward and SGD update; returns the loss."""
        loss, grads = self.loss_and_gradients(idx, targets)
        lr, p = self.lr, self.p
        for name, grad in grads.items():  # each gradient is new: scaled in place, then subtracted
            grad *= lr
            p[name] -= grad
        return loss

    def loss_and_gradients(self, idx: np.ndarray, targets: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Forward and backward: the loss and every parameter's gradient, by name."""
        p, eps, heads = self.p, self.eps, self.heads
        b, s = idx.shape
        wte, wpe = p["transformer.wte.weight"], p["transformer.wpe.weight"]
        h = wte.shape[1]
        d = h // heads
        scale = 1.0 / math.sqrt(d)
        upper = np.triu(np.ones((s, s), dtype=bool), 1)
        x = np.take(wte, idx, axis=0)
        x += wpe[:s]
        saved = []
        for i in range(self.depth):
            pre = f"transformer.h.{i}."
            get = lambda name: p.get(pre + name)  # noqa: E731
            a1, xhat1, rstd1 = _layer_norm(x, get("ln_1.weight"), get("ln_1.bias"), eps)
            qkv = _linear(a1, get("attn.c_attn.weight"), get("attn.c_attn.bias"))
            heads_view = qkv.reshape(b, s, 3, heads, d)
            q, k, v = (heads_view[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
            att = q @ k.transpose(0, 1, 3, 2)  # scores, then probabilities, in place
            att *= scale
            att[:, :, upper] = -np.inf
            att -= att.max(axis=-1, keepdims=True)
            np.exp(att, out=att)
            att /= att.sum(axis=-1, keepdims=True)
            y = (att @ v).transpose(0, 2, 1, 3).reshape(b, s, h)
            proj = _linear(y, get("attn.c_proj.weight"), get("attn.c_proj.bias"))
            proj += x
            x = proj
            a2, xhat2, rstd2 = _layer_norm(x, get("ln_2.weight"), get("ln_2.bias"), eps)
            f = _linear(a2, get("mlp.c_fc.weight"), get("mlp.c_fc.bias"))
            g = f * f  # GELU: 0.5·f·(1 + tanh(c·(f + k·f³)))
            g *= f
            g *= K
            g += f
            g *= C
            np.tanh(g, out=g)
            g += 1
            g *= f
            g *= 0.5
            out = _linear(g, get("mlp.c_proj.weight"), get("mlp.c_proj.bias"))
            out += x
            x = out
            saved.append((xhat1, rstd1, a1, qkv, att, y, xhat2, rstd2, a2, f, g))
        af, xhatf, rstdf = _layer_norm(x, p["transformer.ln_f.weight"], p.get("transformer.ln_f.bias"), eps)
        probs = af @ wte.T  # logits, then probabilities, then their gradient, in place
        probs -= probs.max(axis=-1, keepdims=True)
        picked = np.take_along_axis(probs, targets[..., None], axis=-1)
        np.exp(probs, out=probs)
        total = probs.sum(axis=-1, keepdims=True)
        probs /= total
        positions = targets.size
        loss = float((np.log(total).sum() - picked.sum()) / positions)

        grads: dict[str, np.ndarray] = {}
        index = targets[..., None]
        column = np.take_along_axis(probs, index, axis=-1)
        column -= 1
        np.put_along_axis(probs, index, column, axis=-1)
        probs /= positions
        grad_af = probs @ wte
        grads["transformer.wte.weight"] = probs.reshape(-1, probs.shape[-1]).T @ af.reshape(-1, h)
        probs = None
        gx, grads["transformer.ln_f.weight"], grad_b = _layer_norm_backward(grad_af, xhatf, rstdf,
                                                                            p["transformer.ln_f.weight"])
        if self.bias:
            grads["transformer.ln_f.bias"] = grad_b
        for i in range(self.depth - 1, -1, -1):
            pre = f"transformer.h.{i}."
            get = lambda name: p.get(pre + name)  # noqa: E731
            xhat1, rstd1, a1, qkv, att, y, xhat2, rstd2, a2, f, g = saved.pop()
            # MLP
            dg, grads[pre + "mlp.c_proj.weight"], gb = _linear_backward(gx, g, get("mlp.c_proj.weight"), self.bias)
            if self.bias:
                grads[pre + "mlp.c_proj.bias"] = gb
            # GELU': 0.5·(1 + t) + 0.5·f·(1 − t²)·c·(1 + 3k·f²), written over g (dead)
            t = f * f
            t *= f
            t *= K
            t += f
            t *= C
            np.tanh(t, out=t)
            g = f * f
            g *= 3 * K
            g += 1
            g *= C
            g *= f
            g *= 1 - t * t
            t += 1
            g += t
            g *= 0.5
            dg *= g
            da2, grads[pre + "mlp.c_fc.weight"], gb = _linear_backward(dg, a2, get("mlp.c_fc.weight"), self.bias)
            if self.bias:
                grads[pre + "mlp.c_fc.bias"] = gb
            dx2, grads[pre + "ln_2.weight"], gb = _layer_norm_backward(da2, xhat2, rstd2, get("ln_2.weight"))
            if self.bias:
                grads[pre + "ln_2.bias"] = gb
            gx = gx + dx2
            # attention
            dy, grads[pre + "attn.c_proj.weight"], gb = _linear_backward(gx, y, get("attn.c_proj.weight"),
                                                                         self.bias)
            if self.bias:
                grads[pre + "attn.c_proj.bias"] = gb
            dy = dy.reshape(b, s, heads, d).transpose(0, 2, 1, 3)
            heads_view = qkv.reshape(b, s, 3, heads, d)
            q, k, v = (heads_view[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
            dqkv = np.empty_like(qkv)
            dheads = dqkv.reshape(b, s, 3, heads, d)
            dheads[:, :, 2] = (att.transpose(0, 1, 3, 2) @ dy).transpose(0, 2, 1, 3)
            datt = dy @ v.transpose(0, 1, 3, 2)
            # softmax backward in place: P · (dP − Σ dP·P), times the scale
            datt -= np.vecdot(datt, att)[..., None]
            datt *= att
            datt *= scale
            dheads[:, :, 0] = (datt @ k).transpose(0, 2, 1, 3)
            dheads[:, :, 1] = (datt.transpose(0, 1, 3, 2) @ q).transpose(0, 2, 1, 3)
            da1, grads[pre + "attn.c_attn.weight"], gb = _linear_backward(dqkv, a1, get("attn.c_attn.weight"),
                                                                          self.bias)
            if self.bias:
                grads[pre + "attn.c_attn.bias"] = gb
            dx1, grads[pre + "ln_1.weight"], gb = _layer_norm_backward(da1, xhat1, rstd1, get("ln_1.weight"))
            if self.bias:
                grads[pre + "ln_1.bias"] = gb
            gx = gx + dx1
        np.add.at(grads["transformer.wte.weight"], idx, gx)
        grad_wpe = np.zeros_like(wpe)
        grad_wpe[:s] = gx.sum(axis=0)
        grads["transformer.wpe.weight"] = grad_wpe
        return loss, grads

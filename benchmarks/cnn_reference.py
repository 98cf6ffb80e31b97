"""The floor for the CNN: one training step of memstudy's CNN written by hand in plain numpy, the same maths.

Per block: im2col of the input (k² strided slice copies into one zeroed buffer: the padding stays zero), one
matrix product per example (W @ columns[n], straight into NCHW), batch norm with the batch's statistics (x,
μ and σ⁻¹ kept; the running statistics updated), ReLU in place, 2×2 max-pool keeping each maximum's position
within its window in one byte. Then the spatial mean, the classifier, mean softmax cross-entropy. Backward
mirrors it: the pool's gradient routed to the kept positions, ReLU's mask, batch norm's gradient built over
x̂ in one buffer, the columns rebuilt from the kept input for the weight's gradient (one example at a time),
the columns' gradient W ᵀ@ grad and col2im. Every gradient first, then SGD (lr 0.01).

Why one product per example: the other plain-numpy convolution, one GEMM for the whole batch (the columns as one
(C·9, N·H·W) matrix, the engine's `conv_algo = batched`), was written (commit 09c4012) and timed against this one side by side on
the benchmark's size and was not faster (docs/cnn.md: its ratio 1.08 with one BLAS thread, 0.96 with two, both
inside the rounds' spread under other processes' load), so the floor stays this one.

Written the way a careful person would write it by hand (in place where a buffer is dead after the line), no
autograd and no bookkeeping: the time it takes is what the arithmetic costs through numpy.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-5
MOMENTUM = 0.1


def im2col(x: np.ndarray) -> np.ndarray:
    """Columns (N, C·9, H·W) of a 3×3, stride-1, padding-1 convolution of x (N, C, H, W)."""
    n, c, h, w = x.shape
    columns = np.zeros((n, c, 3, 3, h, w), dtype=x.dtype)
    for i in range(3):
        for j in range(3):
            # output rows whose input row (o + i − 1) lies inside [0, h)
            o_top, o_bottom = max(0, 1 - i), min(h, h + 1 - i)
            o_left, o_right = max(0, 1 - j), min(w, w + 1 - j)
            columns[:, :, i, j, o_top:o_bottom, o_left:o_right] = \
                x[:, :, o_top + i - 1:o_bottom + i - 1, o_left + j - 1:o_right + j - 1]
    return columns.reshape(n, c * 9, h * w)


def col2im(grad_columns: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n, c, h, w = shape
    blocks = grad_columns.reshape(n, c, 3, 3, h, w)
    grad_x = np.zeros(shape, dtype=grad_columns.dtype)
    for i in range(3):
        for j in range(3):
            o_top, o_bottom = max(0, 1 - i), min(h, h + 1 - i)
            o_left, o_right = max(0, 1 - j), min(w, w + 1 - j)
            grad_x[:, :, o_top + i - 1:o_bottom + i - 1, o_left + j - 1:o_right + j - 1] += \
                blocks[:, :, i, j, o_top:o_bottom, o_left:o_right]
    return grad_x


def _channel_sum(a: np.ndarray) -> np.ndarray:
    n, c = a.shape[:2]
    return a.reshape(n, c, -1).sum(axis=2).sum(axis=0)


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n, c = a.shape[:2]
    return np.einsum("ncp,ncp->c", a.reshape(n, c, -1), b.reshape(n, c, -1))


class NumpyCNN:
    """Parameters as plain arrays copied from a memstudy CNN (conv without bias when batch norm is on)."""

    def __init__(self, model, lr: float = 0.01):
        self.lr = lr
        self.batch_norm = model.batch_norm
        self.conv = [block.conv.weight.data.copy() for block in model.features]
        self.conv_bias = [None if block.conv.bias is None else block.conv.bias.data.copy() for block in model.features]
        self.gamma = [block.bn.weight.data.copy() if block.bn else None for block in model.features]
        self.beta = [block.bn.bias.data.copy() if block.bn else None for block in model.features]
        self.running_mean = [block.bn.running_mean.copy() if block.bn else None for block in model.features]
        self.running_var = [block.bn.running_var.copy() if block.bn else None for block in model.features]
        self.weight = model.classifier.weight.data.copy()
        self.bias = model.classifier.bias.data.copy()

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        kept = []  # per block: (input, conv output, μ, σ⁻¹, ReLU output, positions)
        h = x
        for i, weight in enumerate(self.conv):
            n, _, side, _ = h.shape
            out_channels = weight.shape[0]
            z = np.matmul(weight.reshape(out_channels, -1), im2col(h)).reshape(n, out_channels, side, side)
            mean = invstd = None
            if self.batch_norm:
                count = z.size // out_channels
                mean = _channel_sum(z) / count
                a = z - mean[:, None, None]
                var = _channel_dot(a, a) / count
                invstd = 1.0 / np.sqrt(var + EPS)
                a *= (invstd * self.gamma[i])[:, None, None]
                a += self.beta[i][:, None, None]
                self.running_mean[i] *= 1 - MOMENTUM
                self.running_mean[i] += MOMENTUM * mean
                self.running_var[i] *= 1 - MOMENTUM
                self.running_var[i] += (MOMENTUM * count / (count - 1)) * var
            else:
                z += self.conv_bias[i][:, None, None]
                a = z.copy()  # z dies below; the copy is the ReLU's output, as the engine's
            np.maximum(a, 0, out=a)
            # 2×2 max-pool, the maximum's position within its window in one byte
            pooled = a[:, :, 0::2, 0::2].copy()
            positions = np.zeros(pooled.shape, dtype=np.uint8)
            larger = np.empty(pooled.shape, dtype=bool)
            for code, (di, dj) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
                view = a[:, :, di::2, dj::2]
                np.greater(view, pooled, out=larger)
                np.copyto(positions, code, where=larger)
                np.maximum(pooled, view, out=pooled)
            kept.append((h, z if self.batch_norm else None, mean, invstd, a, positions))
            h = pooled
        n, channels = h.shape[:2]
        features = h.reshape(n, channels, -1).sum(axis=2) / (h.shape[2] * h.shape[3])
        logits = features @ self.weight.T
        logits += self.bias
        rows = np.arange(n)
        logits -= logits.max(axis=1, keepdims=True)
        picked = logits[rows, labels]
        probs = np.exp(logits, out=logits)
        total = probs.sum(axis=1, keepdims=True)
        probs /= total
        loss = float(np.mean(np.log(total[:, 0]) - picked))
        grad = probs
        grad[rows, labels] -= 1
        grad /= n
        grads = [("weight", None, grad.T @ features), ("bias", None, grad.sum(axis=0))]
        grad_features = grad @ self.weight
        grad_h = np.broadcast_to((grad_features / (h.shape[2] * h.shape[3]))[:, :, None, None], h.shape)
        for i in range(len(self.conv) - 1, -1, -1):
            x_in, z, mean, invstd, a, positions = kept[i]
            kept[i] = None
            # max-pool: each output's gradient to the kept position of its window
            grad_a = np.zeros(a.shape, dtype=a.dtype)
            chosen = np.empty(positions.shape, dtype=bool)
            for code, (di, dj) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                target = grad_a[:, :, di::2, dj::2]
                np.equal(positions, code, out=chosen)
                np.add(target, grad_h, out=target, where=chosen)
            grad_a *= a > 0  # ReLU
            a = None
            if self.batch_norm:
                count = z.size // z.shape[1]
                grad_beta = _channel_sum(grad_a)
                grad_z = z - mean[:, None, None]
                grad_z *= invstd[:, None, None]
                grad_gamma = _channel_dot(grad_a, grad_z)
                grad_z *= (grad_gamma * (-1.0 / count))[:, None, None]
                grad_z += grad_a
                grad_z -= (grad_beta / count)[:, None, None]
                grad_z *= (self.gamma[i] * invstd)[:, None, None]
                grads += [("gamma", i, grad_gamma), ("beta", i, grad_beta)]
            else:
                grad_z = grad_a
                grads.append(("conv_bias", i, grad_z.reshape(grad_z.shape[0], grad_z.shape[1], -1).sum(axis=2)
                              .sum(axis=0)))
            z = grad_a = None
            weight = self.conv[i]
            n, out_channels = grad_z.shape[:2]
            g = grad_z.reshape(n, out_channels, -1)
            columns = im2col(x_in)
            grad_w = np.zeros((out_channels, columns.shape[1]), dtype=g.dtype)
            term = np.empty_like(grad_w)
            for k in range(n):
                np.matmul(g[k], columns[k].T, out=term)
                grad_w += term
            columns = None
            grads.append(("conv", i, grad_w.reshape(weight.shape)))
            if i > 0:
                grad_h = col2im(np.matmul(weight.reshape(out_channels, -1).T, g), x_in.shape)
        # SGD, in place, after every gradient exists
        lr = self.lr
        for name, i, g in grads:
            g *= lr
            target = {"weight": lambda _: self.weight, "bias": lambda _: self.bias, "gamma": self.gamma.__getitem__,
                      "beta": self.beta.__getitem__, "conv": self.conv.__getitem__,
                      "conv_bias": self.conv_bias.__getitem__}[name](i)
            target -= g
        return loss

"""Image layers on NCHW tensors: Conv2d, BatchNorm2d, MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten.

Parameters are named as in PyTorch (`weight`, `bias`); batch norm's running statistics are model state
(`Module.buffer_names`): plain arrays, never gradients or activations, registered by the ledger with the
parameters.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import STATE, Tensor, apply
from ..autograd import ops
from . import init
from .layers import Module, check_dtype


class Conv2d(Module):
    """A square-kernel 2-d convolution; weight (out, in, k, k) and bias (out,) drawn U(−1/√fan_in, 1/√fan_in)
    like PyTorch (fan_in = in·k·k). `save` (input | columns) chooses what backward keeps, `algo` (per_example |
    batched | auto) how the products are made: `block` examples per GEMM for batched (default all), the workspace
    limit `workspace_bytes` for auto (see ops.conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, padding: int = 0,
                 bias: bool = True, dtype: Any = "float32", seed: int | np.random.Generator | None = 0,
                 save: str = "input", algo: str = "per_example", block: int | None = None,
                 workspace_bytes: int | None = None):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel", kernel),
                            ("stride", stride)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if padding < 0:
            raise ValueError(f"padding must be at least 0, got {padding}")
        if save not in ops.CONV_SAVES:
            raise ValueError(f"save must be one of {', '.join(ops.CONV_SAVES)}, got {save!r}")
        if algo not in ops.CONV_ALGOS:
            raise ValueError(f"algo must be one of {', '.join(ops.CONV_ALGOS)}, got {algo!r}")
        if block is not None and block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        if workspace_bytes is not None and workspace_bytes < 0:
            raise ValueError(f"workspace_bytes must be at least 0, got {workspace_bytes}")
        dt = check_dtype(dtype)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(in_channels * kernel * kernel)
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.stride, self.padding, self.save = stride, padding, save
        self.algo, self.block, self.workspace_bytes = algo, block, workspace_bytes
        self.weight = Tensor(init.uniform(rng, -bound, bound, (out_channels, in_channels, kernel, kernel), dt),
                             requires_grad=True, name="weight")
        self.bias = (Tensor(init.uniform(rng, -bound, bound, out_channels, dt), requires_grad=True, name="bias")
                     if bias else None)

    def forward(self, x: Any) -> Tensor:
        params = (self.weight,) if self.bias is None else (self.weight, self.bias)
        return apply(ops.Conv2d, x, *params, stride=self.stride, padding=self.padding, save=self.save,
                     algo=self.algo, block=self.block, workspace_bytes=self.workspace_bytes)


class BatchNorm2d(Module):
    """Per-channel batch norm with γ (ones) and β (zeros), and running mean (zeros) / variance (ones).

    `training` (default True): normalise by the batch's statistics and update the running ones (momentum
    0.1, unbiased variance, as PyTorch), except while a checkpoint recomputes its segment: the recompute
    replays a forward already counted, and must not update the statistics a second time. Otherwise
    normalise by the running statistics.
    """

    buffer_names = ("running_mean", "running_var")

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, dtype: Any = "float32"):
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        dt = check_dtype(dtype)
        self.channels, self.eps, self.momentum = channels, eps, momentum
        self.weight = Tensor(init.constant(1.0, channels, dt), requires_grad=True, name="weight")
        self.bias = Tensor(init.constant(0.0, channels, dt), requires_grad=True, name="bias")
        self.running_mean = init.constant(0.0, channels, dt)
        self.running_var = init.constant(1.0, channels, dt)
        self.training = True

    def forward(self, x: Any) -> Tensor:
        if not self.training:
            return apply(ops.BatchNorm2dEval, x, self.weight, self.bias, running_mean=self.running_mean,
                         running_var=self.running_var, eps=self.eps)
        update = STATE.phase != "recompute"
        return apply(ops.BatchNorm2d, x, self.weight, self.bias, eps=self.eps, momentum=self.momentum,
                     running_mean=self.running_mean if update else None,
                     running_var=self.running_var if update else None)


class MaxPool2d(Module):
    """The maximum of each k×k window (stride default k); saves one byte per output element (ops.pool)."""

    def __init__(self, kernel: int = 2, stride: int | None = None):
        self.kernel, self.stride = kernel, kernel if stride is None else stride

    def forward(self, x: Any) -> Tensor:
        return apply(ops.MaxPool2d, x, kernel=self.kernel, stride=self.stride)


class AvgPool2d(Module):
    """The mean of each k×k window (stride default k); saves nothing."""

    def __init__(self, kernel: int = 2, stride: int | None = None):
        self.kernel, self.stride = kernel, kernel if stride is None else stride

    def forward(self, x: Any) -> Tensor:
        return apply(ops.AvgPool2d, x, kernel=self.kernel, stride=self.stride)


class GlobalAvgPool2d(Module):
    """The mean over the spatial axes, (N, C, H, W) -> (N, C); saves nothing."""

    def forward(self, x: Any) -> Tensor:
        return apply(ops.GlobalAvgPool2d, x)


class Flatten(Module):
    """Axes start_dim.. folded into one (a view); saves nothing."""

    def __init__(self, start_dim: int = 1):
        self.start_dim = start_dim

    def forward(self, x: Any) -> Tensor:
        return apply(ops.Flatten, x, start_dim=self.start_dim)

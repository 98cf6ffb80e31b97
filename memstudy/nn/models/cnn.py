"""The CNN family (`model = "cnn"`): a VGG-style stack of convolution blocks on NCHW images.

Block i: Conv2d 3×3 (stride 1, padding 1) to `width · 2^i` channels (no bias when batch norm follows) →
BatchNorm2d (unless `batch_norm = false`) → ReLU → MaxPool2d 2×2 (stride 2). Then the mean over the spatial
axes and Linear(channels, classes). Parameter names follow PyTorch's for the same module tree
(`features.0.conv.weight`, `features.0.bn.weight`, ..., `classifier.weight`).

Layer i is block i; the head (global average pool and classifier) is layer `depth`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...autograd.precision import dtype as as_dtype
from ...autograd import STATE, Tensor, layer_scope
from ...autograd import checkpoint as checkpoint_segment
from ...autograd import ops
from .. import init
from ..conv import BatchNorm2d, Conv2d, GlobalAvgPool2d, MaxPool2d
from ..layers import Linear, Module, ReLU, check_dtype
from ...units import parse_bytes
from .registry import ConfigError, Family, Field, StateBytes, checkpoint_segments, parse_checkpoint

CONV_WORKSPACE_BYTES = 4 * 2 ** 30  # TensorFlow's default cuDNN workspace limit (TF_CUDNN_WORKSPACE_LIMIT_IN_MB)
KERNEL = 3  # every block's convolution: 3×3, stride 1, padding 1 (the side is kept), then a 2×2 max-pool


class ConvBlock(Module):
    """Conv2d 3×3 → BatchNorm2d (optional) → ReLU → MaxPool2d 2×2: the side halves, the channels are `out`."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, dtype: Any,
                 rng: np.random.Generator, conv_save: str, conv_algo: str = "per_example",
                 conv_workspace: int | None = None):
        self.conv = Conv2d(in_channels, out_channels, KERNEL, stride=1, padding=KERNEL // 2, bias=not batch_norm,
                           dtype=dtype, seed=rng, save=conv_save, algo=conv_algo, workspace_bytes=conv_workspace)
        self.bn = BatchNorm2d(out_channels, dtype=dtype) if batch_norm else None
        self.relu = ReLU()
        self.pool = MaxPool2d(2, 2)

    def forward(self, x: Any) -> Tensor:
        h = self.conv.forward(x)
        if self.bn is not None:
            h = self.bn.forward(h)
        h = self.relu.forward(h)
        return self.pool.forward(h)


class CNN(Module):
    """`depth` ConvBlocks (block i has `width · 2^i` channels), global average pool, Linear to `classes`.

    `checkpoint` (none | sqrt | every:K) splits the blocks into segments, each run as one `Checkpoint` op when
    a graph is recorded (only each segment's input is held; the segment is recomputed in backward), as the
    MLP does with its layers. `train()` / `eval()` switch batch norm between batch and running statistics.
    """

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 3, classes: int = 10,
                 batch_norm: bool = True, conv_save: str = "input", dtype: Any = "float32", seed: int | None = 0,
                 checkpoint: str = "none", conv_algo: str = "per_example", conv_workspace: int | None = None):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        for name, value in (("in_channels", in_channels), ("width", width), ("classes", classes)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if conv_save not in ops.CONV_SAVES:
            raise ValueError(f"conv_save must be one of {', '.join(ops.CONV_SAVES)}, got {conv_save!r}")
        if conv_algo not in ops.CONV_ALGOS:
            raise ValueError(f"conv_algo must be one of {', '.join(ops.CONV_ALGOS)}, got {conv_algo!r}")
        rng = np.random.default_rng(seed)
        self.in_channels, self.width, self.depth, self.classes = in_channels, width, depth, classes
        self.batch_norm, self.conv_save, self.dtype = batch_norm, conv_save, check_dtype(dtype)
        channels = [in_channels] + [width * 2 ** i for i in range(depth)]
        self.conv_algo, self.conv_workspace = conv_algo, conv_workspace
        self.features = [ConvBlock(channels[i], channels[i + 1], batch_norm, self.dtype, rng, conv_save, conv_algo,
                                   conv_workspace) for i in range(depth)]
        self.pool = GlobalAvgPool2d()
        self.classifier = Linear(channels[-1], classes, True, self.dtype, rng)
        self.checkpoint = parse_checkpoint(checkpoint)
        self.segments = checkpoint_segments(self.checkpoint, depth)
        self.training = True

    def train(self, mode: bool = True) -> "CNN":
        """Batch norm uses the batch's statistics (and updates the running ones) when `mode`, else the running ones."""
        self.training = mode
        for block in self.features:
            if block.bn is not None:
                block.bn.training = mode
        return self

    def eval(self) -> "CNN":
        return self.train(False)

    def parameter_layers(self) -> list[int | None]:
        return [i for i, block in enumerate(self.features) for _ in block.parameters()] + \
            [self.depth] * len(self.classifier.parameters())

    def buffer_layers(self) -> list[int | None]:
        return [i for i, block in enumerate(self.features) for _ in block.named_buffers()]

    def forward(self, x: Any) -> Tensor:
        h = x if isinstance(x, Tensor) else Tensor(x)
        with ops.small_ufunc_buffer():  # once per forward (the bias adds), not once per layer
            if self.segments is None or not STATE.grad_enabled:
                h = self.run_blocks(h, 0, self.depth)
            else:
                for start, stop in self.segments:
                    params = [p for block in self.features[start:stop] for p in block.parameters()]
                    with layer_scope(start):
                        h = checkpoint_segment(self.run_blocks, h, params, start, stop)
            with layer_scope(self.depth):
                h = self.pool.forward(h)
                return self.classifier.forward(h)

    def run_blocks(self, h: Tensor, start: int, stop: int) -> Tensor:
        """Blocks start..stop-1 (a checkpoint's segment, or all of them), block i tagged as layer i."""
        previous_layer = STATE.layer
        try:
            with ops.small_ufunc_buffer():  # a checkpoint recomputes this outside `forward`
                for i in range(start, stop):
                    STATE.layer = i
                    # ConvBlock.forward inlined, so that the block's input is dropped right after the
                    # convolution (inference then holds it no longer than that; training saved it if needed)
                    block = self.features[i]
                    z = block.conv.forward(h)
                    h = None
                    if block.bn is not None:
                        z = block.bn.forward(z)
                    z = block.relu.forward(z)
                    h = block.pool.forward(z)
                    z = None
        finally:
            STATE.layer = previous_layer
        return h


def parse_size(value: Any) -> int:
    """conv_workspace's value in bytes: an integer, or a size such as 64MiB (memstudy.units; no percentages)."""
    if not isinstance(value, str):
        return value  # an integer: the field's type and minimum check it
    try:
        if value.strip().endswith("%"):
            raise ValueError(value)
        return parse_bytes(value, "conv_workspace")
    except ValueError:
        raise ValueError(f"must be a positive size in bytes such as 64MiB or 1048576, got {value!r}") from None


def final_side(image_size: int, depth: int) -> int:
    """The image side after `depth` 2×2 stride-2 max-pools (floor mode): image_size // 2^depth."""
    return image_size >> depth


class CNNFamily(Family):
    name = "cnn"
    description = ("depth × (Conv2d 3×3 to width·2^i channels + BatchNorm2d + ReLU + MaxPool2d 2×2), global "
                   "average pool, Linear(channels, classes); softmax cross-entropy")
    defaults = {"depth": 3, "width": 16, "batch_size": 32}
    findings = ("cnn", "precision")  # the report's sections on this family (memstudy/findings/)
    fields = (
        Field("image_size", int, 32, "side of the square input images, in pixels", minimum=1),
        Field("in_channels", int, 3, "channels of the input images", minimum=1),
        Field("classes", int, 10, "output classes", minimum=1),
        Field("batch_norm", bool, True, "BatchNorm2d after each convolution (the convolution then has no bias)"),
        Field("conv_save", str, "input", "what a convolution keeps for backward: input (rebuild the im2col "
              "columns in backward, as PyTorch) or columns (keep the k²-times larger column matrix)",
              choices=ops.CONV_SAVES),
        Field("conv_algo", str, "per_example", "how a convolution makes its products: per_example (the batch's "
              "im2col columns, one GEMM per example), batched (a block of examples per GEMM: one buffer of the block's "
              "columns, one GEMM), auto (batched with the largest block whose workspace fits conv_workspace)",
              choices=ops.CONV_ALGOS, optional=True),
        Field("conv_workspace", int, CONV_WORKSPACE_BYTES, "conv_algo auto: the most bytes of workspace one "
              "convolution may hold (a size: 64MiB, 500KB or bytes; default 4GiB, TensorFlow's cuDNN limit)",
              parse=parse_size, minimum=1, optional=True),
    )

    def check(self, config: dict[str, Any]) -> None:
        depth, side = config["depth"], config["image_size"]
        if final_side(side, depth) < 1:
            raise ConfigError(f"image_size {side} is too small for {depth} pooling blocks: each halves the side, "
                              f"so image_size must be at least {2 ** depth}")

    def build(self, config: dict[str, Any]) -> CNN:
        model = CNN(config["in_channels"], config["width"], config["depth"], config["classes"],
                    batch_norm=config["batch_norm"], conv_save=config["conv_save"], dtype=config["dtype"],
                    seed=config["seed"], checkpoint=config["checkpoint"], conv_algo=config["conv_algo"],
                    conv_workspace=config["conv_workspace"])
        return model.train(config["mode"] == "train")

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:
        rng = np.random.default_rng(config["seed"] + 1)
        batch, side = config["batch_size"], config["image_size"]
        x = init.normal(rng, (batch, config["in_channels"], side, side), config["dtype"])
        y = init.integers(rng, 0, config["classes"], batch)
        return x, y

    def state_bytes(self, config: dict[str, Any]) -> StateBytes:
        """Block i: a 3×3 kernel from c_i to c_(i+1) = width·2^i channels, then either a bias (c_(i+1)) or batch norm
        (γ, β trainable; running mean and variance, model state); the classifier (c_depth × classes + classes); the
        batch: images (batch × in_channels × side²) and int64 labels."""
        channels = [config["in_channels"]] + [config["width"] * 2 ** i for i in range(config["depth"])]
        trainable = state = 0
        for c_in, c_out in zip(channels, channels[1:]):
            trainable += KERNEL * KERNEL * c_in * c_out + (2 * c_out if config["batch_norm"] else c_out)
            state += 2 * c_out if config["batch_norm"] else 0
        trainable += channels[-1] * config["classes"] + config["classes"]
        itemsize = as_dtype(config["dtype"]).itemsize
        batch, side = config["batch_size"], config["image_size"]
        labels = 8 * batch if config["mode"] == "train" else 0
        return StateBytes((trainable + state) * itemsize, trainable * itemsize,
                          batch * config["in_channels"] * side * side * itemsize + labels)

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        side, names = config["image_size"], []
        for i in range(config["depth"]):
            names.append(f"block {i} ({config['width'] * 2 ** i} ch, {side}×{side})")
            side //= 2
        return names + ["head"]


FAMILY = CNNFamily()

__all__ = ["CNN", "CNNFamily", "ConvBlock", "FAMILY", "final_side"]

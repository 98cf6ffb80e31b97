"""Layers, model families and losses built on memstudy.autograd."""
from . import init
from .functional import cross_entropy, l2_penalty, linear, mse
from .layers import ACTIVATIONS, Linear, Module, ReLU, Sigmoid, Tanh, activation
from .transformer import GELU, Dropout, Embedding, LayerNorm
from .models.gpt import GPT
from .models.mlp import MLP
from .models.registry import (CHECKPOINTS, DTYPES, Family, Field, checkpoint_segments, get_family,
                              parse_checkpoint)
from .models.seed import SeedMLP

__all__ = [
    "ACTIVATIONS", "CHECKPOINTS", "DTYPES", "GELU", "GPT", "MLP", "Dropout", "Embedding", "Family", "Field",
    "LayerNorm", "Linear", "Module", "ReLU", "SeedMLP", "Sigmoid", "Tanh", "activation", "checkpoint_segments",
    "cross_entropy", "get_family", "init", "parse_checkpoint", "l2_penalty", "linear", "mse",
]

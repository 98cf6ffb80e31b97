"""Layers, model families and losses built on memstudy.autograd."""
from . import init
from .functional import cross_entropy, l2_penalty, linear, mse
from .layers import ACTIVATIONS, Linear, Module, ReLU, Sigmoid, Tanh, activation
from .conv import AvgPool2d, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d, MaxPool2d
from .transformer import GELU, Dropout, Embedding, LayerNorm, RMSNorm
from .models.cnn import CNN
from .models.gpt import GPT
from .models.llama import Llama
from .models.mlp import MLP
from .models.registry import (CHECKPOINTS, DTYPES, Family, Field, checkpoint_segments, get_family,
                              parse_checkpoint)
from .models.seed import SeedMLP
from .lora import LoraLinear, add_lora

__all__ = [
    "AvgPool2d", "BatchNorm2d", "CNN", "Conv2d", "Flatten", "GlobalAvgPool2d", "MaxPool2d",
    "ACTIVATIONS", "CHECKPOINTS", "DTYPES", "GELU", "GPT", "MLP", "Dropout", "Embedding", "Family", "Field",
    "LayerNorm", "Linear", "Llama", "LoraLinear", "Module", "RMSNorm", "ReLU", "SeedMLP", "Sigmoid", "Tanh",
    "activation", "add_lora", "checkpoint_segments",
    "cross_entropy", "get_family", "init", "parse_checkpoint", "l2_penalty", "linear", "mse",
]

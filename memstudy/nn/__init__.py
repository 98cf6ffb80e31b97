"""Models, layers and losses built on memstudy.autograd."""
from .functional import cross_entropy, l2_penalty, linear, mse
from .modules import (ACTIVATIONS, CHECKPOINTS, DTYPES, MLP, Linear, Module, ReLU, SeedMLP, Sigmoid, Tanh, activation,
                      checkpoint_segments, parse_checkpoint)

__all__ = [
    "ACTIVATIONS", "CHECKPOINTS", "DTYPES", "MLP", "Linear", "Module", "ReLU", "SeedMLP", "Sigmoid", "Tanh",
    "activation", "checkpoint_segments", "cross_entropy", "parse_checkpoint", "l2_penalty", "linear", "mse",
]

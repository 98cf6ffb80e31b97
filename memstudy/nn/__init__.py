"""Models, layers and losses built on memstudy.autograd."""
from .functional import cross_entropy, l2_penalty, linear, mse
from .modules import ACTIVATIONS, DTYPES, MLP, Linear, Module, ReLU, SeedMLP, Sigmoid, Tanh, activation

__all__ = [
    "ACTIVATIONS", "DTYPES", "MLP", "Linear", "Module", "ReLU", "SeedMLP", "Sigmoid", "Tanh",
    "activation", "cross_entropy", "l2_penalty", "linear", "mse",
]

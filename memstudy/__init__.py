"""memstudy: why training needs more memory than inference, measured.

`import memstudy` loads the engine, models and optimisers only (numpy, no pandas or matplotlib), so
cell processes start fast.
"""
__version__ = "0.1.0"

from .autograd import Tensor, enable_grad, no_grad, saved_buffers, saved_bytes
from . import nn, optim

__all__ = ["Tensor", "no_grad", "enable_grad", "saved_buffers", "saved_bytes", "nn", "optim", "__version__"]

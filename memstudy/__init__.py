"""memstudy: why training needs more memory than inference, measured.

`import memstudy` loads the engine, models and optimisers only (numpy, no pandas or matplotlib), so
cell processes start fast.
"""
from .autograd import Tensor, enable_grad, no_grad, saved_buffers, saved_bytes
from . import nn, optim
from .version import __version__

__all__ = ["Tensor", "no_grad", "enable_grad", "saved_buffers", "saved_bytes", "nn", "optim", "measure_model",
           "predict", "__version__"]


def __getattr__(name: str):
    """`measure_model` and `predict` load the probes and the predictor on first use, not at import."""
    if name == "measure_model":
        from .measure.model import measure_model

        return measure_model
    if name == "predict":
        from .measure.predict import predict

        return predict
    raise AttributeError(f"module 'memstudy' has no attribute {name!r}")

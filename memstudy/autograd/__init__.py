"""A small reverse-mode autograd engine on numpy whose every saved buffer can be counted."""
from .engine import Function, Node, apply, backward, enable_grad, layer_scope, no_grad, phase_scope, STATE
from .graph import SavedBuffer, base_buffer, saved_buffers, saved_bytes
from .tensor import Tensor

__all__ = [
    "Function", "Node", "STATE", "SavedBuffer", "Tensor", "apply", "backward", "base_buffer",
    "enable_grad", "layer_scope", "no_grad", "phase_scope", "saved_buffers", "saved_bytes",
]

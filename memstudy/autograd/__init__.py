"""A small reverse-mode autograd engine on numpy whose every saved buffer can be counted."""
from .engine import (POLICIES, STATE, Function, Node, backward, backward_to_inputs, enable_grad, layer_scope,
                     no_grad, phase_scope, repeat_scope, saved_tensors_policy)
from .autocast import autocast
from .checkpoint import Checkpoint, checkpoint
from .graph import SavedBuffer, base_buffer, saved_buffers, saved_bytes
from .tensor import Tensor, apply

__all__ = [
    "Checkpoint", "Function", "autocast", "Node", "POLICIES", "STATE", "SavedBuffer", "Tensor", "apply", "backward",
    "backward_to_inputs", "base_buffer", "checkpoint", "enable_grad", "layer_scope", "no_grad", "phase_scope",
    "repeat_scope", "saved_buffers", "saved_bytes", "saved_tensors_policy",
]

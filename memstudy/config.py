"""One model-and-step configuration, checked: defaults filled in, every field checked, one-line errors.

The rules live with each model family (`nn/models/`); this module is the short name callers use.
"""
from __future__ import annotations

from .nn.models.registry import ConfigError, get_family, normalize

__all__ = ["ConfigError", "get_family", "normalize"]

"""The KV cache's ops, as transformers' cache layers update it (cache_utils.py): each output is a `kv_cache`
buffer for the ledger (`output_category`), with the role `key` or `value` (`ctx.role`) and the layer of the
`layer_scope` it runs in.

- `CacheAppend` (DynamicLayer.update): torch.cat([cache, new], dim=-2), a new buffer holding the old cache and the
  new states; the old buffer dies when the cache lets it go, so for a moment both live (the ledger shows the copy).
- `CacheAllocate` (StaticLayer.lazy_initialization): zeros of (b, heads, length, d) for one layer's keys or values,
  at that layer's first update. The static cache then writes the new states into that buffer in place
  (`nn.kv_cache.StaticLayer`, as StaticLayer.update's index_copy_): a buffer the cache owns, written by its owner
  as an optimiser updates its parameters, so no op writes into its inputs and no new bytes exist.

`CacheAppend` is a concatenation and differentiates as one (the cache is filled under no_grad all the same).
"""
from __future__ import annotations

import numpy as np

from ..engine import Function, Node
from .shape import Concatenate

ROLES = ("key", "value")
KV_CACHE = "kv_cache"  # the ledger's category of every buffer these ops make


def _role(ctx: Node, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"a KV cache buffer's role is one of {', '.join(ROLES)}, got {role!r}")
    ctx.role = role


class CacheAppend(Concatenate):
    """(b, heads, t, d) cache and (b, heads, q, d) new states → (b, heads, t + q, d), a new buffer (the first update
    passes the new states alone: a copy, as torch.cat with DynamicLayer's empty start makes one).
    Shape-only prediction: by dispatch (np.concatenate)."""

    name = "kv_cache_append"
    output_category = KV_CACHE

    @staticmethod
    def forward(ctx: Node, *arrays: np.ndarray, role: str = "key") -> np.ndarray:
        _role(ctx, role)
        return Concatenate.forward(ctx, *arrays, axis=-2)


class CacheAllocate(Function):
    """Zeros of (b, heads, `length`, d) in the dtype of `like` (the first new states, (b, heads, q, d)).
    Shape-only prediction: by dispatch (np.zeros with like=)."""

    name = "kv_cache_allocate"
    output_category = KV_CACHE

    @staticmethod
    def forward(ctx: Node, like: np.ndarray, *, length: int, role: str = "key") -> np.ndarray:
        _role(ctx, role)
        b, heads, _, d = like.shape
        return np.zeros((b, heads, length, d), dtype=like.dtype, like=like)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:  # pragma: no cover - zeros do not depend on `like`
        return (None,)

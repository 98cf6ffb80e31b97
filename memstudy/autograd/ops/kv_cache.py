"""The KV cache's ops, as transformers' cache layers update it (cache_utils.py): each output is a `kv_cache`
buffer for the ledger (`output_category`), with the role `key` or `value` (`ctx.role`) and the layer of the
`layer_scope` it runs in.

- `CacheAppend` (DynamicLayer.update): torch.cat([cache, new], dim=-2), a new buffer holding the old cache and the
  new states; the old buffer dies when the cache lets it go, so for a moment both live (the ledger shows the copy).
- `CacheAllocate` (StaticLayer.lazy_initialization): zeros of (b, heads, length, d) for one layer's keys or values,
  at that layer's first update.
- `CacheWrite` (StaticLayer.update's index_copy_): the new states written into positions start..start + q of that
  buffer, in place; the output is the buffer itself (no new bytes).

The cache is filled under no_grad (generation): `CacheWrite` writes in place and refuses an input that needs a
gradient; `CacheAppend` is a concatenation and differentiates as one.
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


class CacheWrite(Function):
    """`new` (b, heads, q, d) written into `cache` (b, heads, length, d) at positions start..start + q, in place;
    returns `cache`. Shape-only prediction: by dispatch (item assignment on a shape-only array checks the shapes)."""

    name = "kv_cache_write"
    output_category = KV_CACHE

    @staticmethod
    def forward(ctx: Node, cache: np.ndarray, new: np.ndarray, *, start: int, role: str = "key") -> np.ndarray:
        _role(ctx, role)
        if any(ctx.needs_input_grad):
            raise ValueError("a static KV cache is written in place, which has no gradient: fill it under no_grad")
        stop = start + new.shape[-2]
        if start < 0 or stop > cache.shape[-2]:
            raise ValueError(f"the static cache holds {cache.shape[-2]} positions; positions {start}..{stop - 1} do "
                             f"not fit")
        cache[..., start:stop, :] = new
        return cache

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:  # pragma: no cover - refused in forward
        raise RuntimeError("a static KV cache write has no backward")

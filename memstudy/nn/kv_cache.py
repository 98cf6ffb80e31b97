"""KV caches as transformers keeps them (cache_utils.py): one layer entry per decoder layer, each holding that layer's
keys and values as (b, kv_heads, positions, head_dim) buffers, updated by the ops of `autograd/ops/kv_cache.py` so
the ledger counts every buffer as `kv_cache` (role key or value, the layer it runs in).

- `DynamicCache` (transformers' default): each update concatenates the new states to the old, keys first, then
  values (`DynamicLayer.update`); after t tokens a layer holds 2 · b · kv · t · d · itemsize bytes, and for a moment
  during each update the old keys (then the old values) live beside the new ones.
- `StaticCache(length)`: each layer's keys and values are zeros of `length` positions, allocated at the layer's
  first update (`ops.CacheAllocate`) and then written in place by the cache itself, which owns them (`StaticLayer`,
  as transformers' index_copy_: no new bytes); 2 · b · kv · length · d · itemsize bytes per layer from the first
  update on. Attention then reads the whole buffer, its unfilled positions masked, as transformers'.

`update(k, v)` returns the keys and values attention reads; `length` is how many positions the layer has seen.

A cache is state each layer fills in one forward and reads in the next, which the predictor's repeated blocks
(`nn.repeat`: one block standing for many alike) cannot stand for: made while plans are compressed, a cache raises
`NotRepeatable`, and the predictor runs every block of a generation (memory/predict.py's fallback).
"""
from __future__ import annotations

from typing import Any

from ..autograd import Tensor, apply
from ..autograd import ops
from . import repeat

KV_CACHES = ("dynamic", "static")


class DynamicLayer:
    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.length = 0

    def update(self, k: Any, v: Any) -> tuple[Tensor, Tensor]:
        self.keys = apply(ops.CacheAppend, *(() if self.keys is None else (self.keys,)), k, role="key")
        self.values = apply(ops.CacheAppend, *(() if self.values is None else (self.values,)), v, role="value")
        self.length += k.shape[-2]
        return self.keys, self.values


class StaticLayer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.length = 0

    def update(self, k: Any, v: Any) -> tuple[Tensor, Tensor]:
        if self.keys is None:
            self.keys = apply(ops.CacheAllocate, k, length=self.capacity, role="key")
            self.values = apply(ops.CacheAllocate, v, length=self.capacity, role="value")
        start, stop = self.length, self.length + k.shape[-2]
        if stop > self.capacity:
            raise ValueError(f"the static cache holds {self.capacity} positions; positions {start}..{stop - 1} do "
                             "not fit")
        self.keys.data[..., start:stop, :] = k.data  # the cache's own buffers, written in place (no new bytes)
        self.values.data[..., start:stop, :] = v.data
        self.length = stop
        return self.keys, self.values


class KVCache:
    """One layer entry per decoder layer: `cache.layers[i].update(k, v)`; `length` is the positions seen so far
    (the position of the next token)."""

    def __init__(self, depth: int, kind: str = "dynamic", capacity: int | None = None):
        if kind not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {kind!r}")
        if repeat.is_compressing():  # see the module docstring
            raise repeat.NotRepeatable("a KV cache is state each layer fills and reads again: every block runs")
        if kind == "static" and (capacity is None or capacity < 1):
            raise ValueError(f"a static cache needs a positive capacity (positions), got {capacity!r}")
        self.kind, self.capacity = kind, capacity
        self.layers = [StaticLayer(capacity) if kind == "static" else DynamicLayer() for _ in range(depth)]

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def check_room(self, new: int) -> None:
        """ValueError (one line) when `new` more positions do not fit a static cache."""
        if self.kind == "static" and self.length + new > self.capacity:
            raise ValueError(f"the static cache holds {self.capacity} positions: {self.length} seen and {new} more do "
                             f"not fit")

    def nbytes(self) -> int:
        """Bytes the cache holds now: every layer's keys and values (what transformers' cache holds, too)."""
        return sum(t.nbytes for layer in self.layers for t in (layer.keys, layer.values) if t is not None)


__all__ = ["DynamicLayer", "KVCache", "KV_CACHES", "StaticLayer"]

"""Floating-point operations of one op's forward, from its inputs' and output's shapes (no values needed).

The planner's cost model (`memstudy/plan/cost.py`) counts what a checkpoint strategy recomputes in FLOPs, read
from the graph: the ledger adds up `forward_flops` of every op `apply` runs, by phase (`forward`, `recompute`), so
the count is the one of the ops that actually ran, on real arrays or shape-only ones alike.

The rule, stated once:
- a matrix product (`matmul`, `linear`, `batched_matmul`): 2·m·n·k per product, one multiply and one add per term,
  i.e. 2 · (output elements) · (the contracted length k = the first operand's last axis), the bias add not counted
  (the convention of Kaplan et al. 2020 and of Megatron-LM's FLOP counts);
- fused attention (`flash_attention`, q (b, a, s, d) and k (b, kv, t, d)): its two products, 4·b·a·s·t·d, as the
  eager path's two batched matmuls count them (both compute the causal mask's zeros too), so that choosing flash
  changes what is kept and recomputed, not the forward's count;
- an op that declares `flops(arrays, out)` on its Function class: what it says;
- a checkpoint op: 0 of its own (the ops of its segment run through `apply` and count themselves, in the forward
  and again in the recompute);
- any other op: one FLOP per output element (element-wise arithmetic, norms, softmax: small beside the matrix
  products, and counted so that no recomputed op counts as free).
Backward is not counted op by op (its ops run inside `backward`, not through `apply`); the cost model takes it
as twice the forward, the usual 6·N·tokens = 3 × forward rule.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

PRODUCTS = frozenset({"matmul", "linear", "batched_matmul"})  # ops whose FLOPs are 2·out·k
CONTAINERS = frozenset({"checkpoint"})  # ops whose work is other ops, each counted as it runs


def forward_flops(fn: type, arrays: Sequence[Any], out: Any) -> int:
    """FLOPs of `fn`'s forward on `arrays` (ndarrays or shape-only arrays) giving `out` (see the module docstring)."""
    declared = getattr(fn, "flops", None)
    if declared is not None:
        return int(declared(arrays, out))
    if fn.name in CONTAINERS:
        return 0
    elements = math.prod(out.shape)
    if fn.name == "flash_attention":
        q, k = arrays[0], arrays[1]
        return 4 * math.prod(q.shape) * k.shape[-2]
    if fn.name in PRODUCTS and arrays and getattr(arrays[0], "ndim", 0) >= 1:
        return 2 * elements * arrays[0].shape[-1]
    return elements


__all__ = ["CONTAINERS", "PRODUCTS", "forward_flops"]

"""Gradient checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost").

`Checkpoint` is one op standing for a whole segment of layers. Its forward runs the segment under
`no_grad` (like inference: each intermediate is freed once the next layer has used it) and saves only the
segment's input. Its backward runs the segment again, this time recording the graph, in the phase
`recompute`, backpropagates the incoming gradient through that fresh graph (the parameters' gradients
accumulate into their leaves as usual) and returns the gradient of the segment's input.

The segment is a callable `run(x, *args) -> Tensor` kept on the node as an attribute: a bound method of
the model (which owns its parameters), never a closure over arrays. The op's positional inputs are the
segment's input and its parameters, so a graph is recorded whenever a parameter requires grad.

Shape-only prediction: the same code; the recompute runs the segment again on MetaArrays, so the recomputed
buffers and `recomputed_ops` are the ledger's own.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .engine import (STATE, Function, Node, backward_to_inputs, enable_grad, no_grad, phase_scope,
                     saved_tensors_policy)
from .tensor import Tensor


class Checkpoint(Function):
    name = "checkpoint"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *params: np.ndarray, run: Callable[..., Tensor],
                args: tuple = ()) -> np.ndarray:
        ctx.run, ctx.args, ctx.policy = run, args, STATE.policy  # the recompute uses the same policy
        ctx.save(x=x)
        with no_grad():
            out = run(Tensor(x), *args)
        return out.data

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        with phase_scope("recompute"), enable_grad(), saved_tensors_policy(ctx.policy):
            inp = Tensor(x, requires_grad=ctx.needs_input_grad[0])
            out = ctx.run(inp, *ctx.args)
            node = out._node
            out = None  # the recomputed output's array is held by its node only (if it saved it)
        del x
        (grad_x,) = backward_to_inputs(node, grad, (inp,))
        return (grad_x,) + (None,) * (len(ctx.needs_input_grad) - 1)


def checkpoint(run: Callable[..., Tensor], x: Any, params: list[Tensor], *args: Any) -> Tensor:
    """`run(x, *args)` with only `x` held for backward, the segment recomputed when backward reaches it."""
    from .tensor import apply

    return apply(Checkpoint, x, *params, run=run, args=args)

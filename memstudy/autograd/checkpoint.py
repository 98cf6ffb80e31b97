"""Gradient checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost").

`Checkpoint` is one op standing for a whole segment of layers. Its forward runs the segment under
`no_grad` (like inference: each intermediate is freed once the next layer has used it) and saves only the
segment's input. Its backward runs the segment again, this time recording the graph, in the phase
`recompute`, backpropagates the incoming gradient through that fresh graph (the parameters' gradients
accumulate into their leaves as usual) and returns the gradient of the segment's input.

The segment is a callable `run(x, *args) -> Tensor` kept on the node as an attribute: a bound method of
the model (which owns its parameters), never a closure over arrays. The op's positional inputs are the
segment's input and its parameters, so a graph is recorded whenever a parameter requires grad. A segment may
take several inputs (`run(q, k, v, *args)`: the GPT's selective checkpoint of the attention core); each is
saved, and backward returns each one's gradient.

Shape-only prediction: the same code; the recompute runs the segment again on MetaArrays, so the recomputed
buffers and `recomputed_ops` are the ledger's own.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .autocast import autocast
from .engine import (STATE, Function, Node, backward_to_inputs, enable_grad, no_grad, phase_scope,
                     saved_tensors_policy)
from .tensor import Tensor


class Checkpoint(Function):
    name = "checkpoint"

    @staticmethod
    def forward(ctx: Node, *arrays: np.ndarray, run: Callable[..., Tensor], args: tuple = (),
                names: tuple[str, ...] = ("x",)) -> np.ndarray:
        """`arrays` are the segment's inputs (one per name in `names`), then its parameters."""
        # the recompute runs under the same saved-tensor policy and autocast (PyTorch's checkpoint restores autocast)
        ctx.run, ctx.args, ctx.policy, ctx.autocast = run, args, STATE.policy, STATE.autocast
        inputs = arrays[: len(names)]
        ctx.save(**dict(zip(names, inputs)))
        with no_grad():
            out = run(*(Tensor(x) for x in inputs), *args)
        return out.data

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        with phase_scope("recompute"), enable_grad(), saved_tensors_policy(ctx.policy), autocast(ctx.autocast):
            inputs = tuple(Tensor(x, requires_grad=need) for x, need in zip(saved, needs))
            out = ctx.run(*inputs, *ctx.args)
            node = out._node
            out = None  # the recomputed output's array is held by its node only (if it saved it)
        del saved
        grads = backward_to_inputs(node, grad, inputs)
        return grads + (None,) * (len(needs) - len(inputs))


def checkpoint(run: Callable[..., Tensor], x: Any, params: list[Tensor], *args: Any,
               names: tuple[str, ...] | None = None) -> Tensor:
    """`run(x, *args)` with only `x` held for backward, the segment recomputed when backward reaches it.

    `x` may be a tuple of tensors (e.g. q, k, v for an attention core): then `run(*x, *args)`, and each of them
    is held, under the roles `names` (default x0, x1, ...)."""
    from .tensor import apply

    if isinstance(x, tuple):
        names = names or tuple(f"x{i}" for i in range(len(x)))
        return apply(Checkpoint, *x, *params, run=run, args=args, names=names)
    return apply(Checkpoint, x, *params, run=run, args=args)

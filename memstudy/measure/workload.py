"""One configured step: a family's model, its batch and optimiser, and the step itself as a callable.

The same object runs a measured cell (real arrays) and a prediction (built inside `autograd.meta.meta_mode()`,
where every parameter and input is a shape-only array): one code path for both.
"""
from __future__ import annotations

import gc
from typing import Any, Callable

import numpy as np

from .. import optim
from ..autograd import STATE, Tensor, no_grad, saved_tensors_policy
from ..nn import repeat
from ..nn.generation import generate
from ..nn.models.registry import get_family
from . import heap
from .ledger import Ledger, StepAccount

GRAD_ERROR_CHUNK_ELEMENTS = 1 << 18  # float64 scratch of the gradient check: 2 MiB per array


class Workload:
    """The model, optimiser and batch of one (normalized) configuration, and its step."""

    def __init__(self, config: dict[str, Any]):
        family = get_family(config.get("model"))
        inputs, labels = family.batch(config)
        self._setup(config, family.build(config), inputs, labels, family.loss)

    @classmethod
    def from_model(cls, model: Any, inputs: Any, labels: Any, loss: Callable[[Any, Any, Any], Tensor],
                   config: dict[str, Any]) -> "Workload":
        """A workload around a model that was built elsewhere (a notebook): `loss(model, inputs, labels)`;
        `config` needs mode, policy and optimizer (and, for mode generate, the generation fields)."""
        work = cls.__new__(cls)
        work._setup(config, model, inputs, labels, loss)
        return work

    def _setup(self, config: dict[str, Any], model: Any, inputs: Any, labels: Any,
               loss: Callable[[Any, Any, Any], Tensor]) -> None:
        self.config = config
        self.train = config["mode"] == "train"
        self.generating = config["mode"] == "generate"
        self.policy = config["policy"]
        self.model = model
        self.inputs = inputs if isinstance(inputs, Tensor) else Tensor(inputs)
        if type(self.inputs.data) is np.ndarray:  # real arrays (not a prediction's shapes): see heap.py
            heap.settle()
        self.labels = labels
        self._loss = loss
        # the trainable parameters: a frozen one (requires_grad False) is model state, but nothing to update
        self.optimizer = optim.make(config["optimizer"], [p for p in self.model.parameters() if p.requires_grad])

    def step(self) -> Any:
        """One training step (forward, loss, backward, optimiser step), one inference forward, or one generation
        (prefill and decode steps; returns the sequences and the KV cache, which the step's output keeps alive)."""
        if not self.train:
            with no_grad():
                if self.generating:  # a model whose forward takes a KV cache (nn.generation)
                    c = self.config
                    return generate(self.model, self.inputs, c["new_tokens"], c["kv_cache"], c["prefill_logits"])
                return self.model(self.inputs)
        loss = self.loss(self.policy)
        loss.backward()
        self.optimizer.step()
        return loss

    def loss(self, policy: str) -> Tensor:
        """Forward and loss, the graph's saved tensors under `policy` (the loss's too)."""
        if policy == "minimal" and STATE.policy == "minimal":  # the engine's default already: no scope to enter
            return self._loss(self.model, self.inputs, self.labels)
        with saved_tensors_policy(policy):
            return self._loss(self.model, self.inputs, self.labels)

    def gradient_error(self, reference: str = "minimal") -> float:
        """‖g − g_ref‖ / ‖g_ref‖ over all parameters' gradients: this cell's policy against `reference`, at the
        current parameters (no optimiser step). Leaves the gradients None.

        It holds the reference gradients (one parameter's worth of bytes) and float64 chunks of at most
        GRAD_ERROR_CHUNK_ELEMENTS, so it needs little memory beyond a step's: the cell's budget allows for it."""
        params = self.optimizer.params
        self.optimizer.zero_grad()
        self.loss(reference).backward()
        ref = [p.grad for p in params]
        self.optimizer.zero_grad()
        self.loss(self.policy).backward()
        diff_sq = ref_sq = 0.0
        for p, g_ref in zip(params, ref):
            g, g_ref = p.grad.reshape(-1), g_ref.reshape(-1)
            for start in range(0, g.size, GRAD_ERROR_CHUNK_ELEMENTS):
                stop = start + GRAD_ERROR_CHUNK_ELEMENTS
                r = g_ref[start:stop].astype(np.float64)
                d = g[start:stop].astype(np.float64)
                d -= r
                diff_sq += float(np.dot(d, d))
                ref_sq += float(np.dot(r, r))
        del ref
        self.optimizer.zero_grad()
        return float(np.sqrt(diff_sq) / np.sqrt(ref_sq))

    def reset(self) -> None:
        """Back to the baseline: gradients None, garbage collected."""
        self.optimizer.zero_grad()
        gc.collect()

    def register(self, ledger: Ledger) -> None:
        """The baseline: parameters (frozen ones too) and model state (with their layers), optimiser state, the inputs
        and labels. A block standing for several alike (a compressed prediction, nn.repeat) registers its arrays
        as that many."""
        copies = repeat.copies(self.model)
        ledger.register_model(self.model.parameters(), self.model.parameter_layers(), copies)
        # model state that is not a parameter (batch norm's running statistics) lives beside the parameters
        for (name, array), layer in zip(self.model.named_buffers(), self.model.buffer_layers()):
            ledger.register(array, "parameter", layer=layer, role=name, copies=copies.get(id(array), 1))
        if self.train:
            params = self.optimizer.params
            for index, array in self.optimizer.param_states():
                ledger.register(array, "optimizer_state", copies=copies.get(id(params[index]), 1))
        ledger.register(self.inputs.data, "input", role="x")
        if self.train and self.labels is not None:
            labels = self.labels.data if isinstance(self.labels, Tensor) else self.labels
            ledger.register(labels, "input", role="labels")

    def ledger_step(self) -> StepAccount:
        ledger = Ledger()
        self.register(ledger)
        ledger.start()
        try:
            output = self.step()
            account = ledger.finish()  # while `output` is alive: it counts as the step's output
        finally:
            ledger.stop()
        del output
        return account

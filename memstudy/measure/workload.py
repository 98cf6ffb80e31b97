"""One configured step: a family's model, its batch and optimiser, and the step itself as a callable.

The same object runs a measured cell (real arrays) and a prediction (built inside `autograd.meta.meta_mode()`,
where every parameter and input is a shape-only array): one code path for both.
"""
from __future__ import annotations

import gc
from typing import Any, Callable

import numpy as np

from .. import optim
from ..autograd import STATE, Tensor, autocast, no_grad, saved_tensors_policy
from ..nn import repeat
from ..nn.generation import generate
from ..nn.models.registry import get_family
from ..parallel import collectives, pipeline, tensor, zero
from . import heap
from .ledger import Ledger, StepAccount

GRAD_ERROR_CHUNK_ELEMENTS = 1 << 18  # float64 scratch of the gradient check: 2 MiB per array
MAX_WARM_UP_STEPS = 40  # a loss scale of 2¹⁶ halves to 2⁻²³ in 40 skipped steps


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
        `config` needs mode, policy and optimizer (autocast, master_weights and loss_scale are optional; for mode
        generate, the generation fields)."""
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
        cast = config.get("autocast", "none")
        self.autocast = None if cast == "none" else cast  # the forward's (and the loss's) autocast dtype
        # a data-parallel rank's step (memstudy/parallel/zero.py): the model's parameters handed in through ZeRO's
        # collectives, the optimiser updating the rank's parts of them
        self.zero = zero.Zero(config, model) if zero.applies(config) else None
        # a pipeline stage's step (memstudy/parallel/pipeline.py): its microbatches in the schedule's order
        self.pipeline = (pipeline.Pipeline(config, model, pipeline.loss_on_outputs(loss))
                         if self.train and pipeline.applies(config) else None)
        # the trainable parameters: a frozen one (requires_grad False) is model state, but nothing to update
        params = (self.zero.optimizer_params if self.zero is not None
                  else [p for p in self.model.parameters() if p.requires_grad])
        self.optimizer = optim.make(config["optimizer"], params,
                                    master_weights=bool(config.get("master_weights", False)))
        if self.zero is not None:  # gradients None: the parameters' (stage 1's full ones) and the parts'
            self.optimizer.zero_grad = self.zero.zero_grad
        # dynamic loss scaling (training only): its scale and growth counter are optimiser-side state
        self.scaler = optim.LossScaler() if self.train and config.get("loss_scale", "none") == "dynamic" else None
        self.skipped = False  # whether the last step's update was skipped (loss scaling: an inf or NaN gradient)

    def step(self) -> Any:
        """One training step (forward, loss, backward, optimiser step), one inference forward, or one generation
        (prefill and decode steps; returns the sequences and the KV cache, which the step's output keeps alive)."""
        if not self.train:
            with no_grad(), autocast(self.autocast):
                if self.generating:  # a model whose forward takes a KV cache (nn.generation)
                    c = self.config
                    return generate(self.model, self.inputs, c["new_tokens"], c["kv_cache"], c["prefill_logits"])
                return self.model(self.inputs)
        if self.zero is not None:
            with collectives.use_backend(self.zero.backend):
                return self._train_step()
        return self._train_step()

    def _train_step(self) -> Any:
        if self.pipeline is not None:
            loss = self.pipeline.forward_backward(self, None if self.scaler is None else float(self.scaler.scale))
        elif self.scaler is None:
            loss = self.loss(self.policy)
            loss.backward()
        else:
            loss = self.loss(self.policy)
            (loss * float(self.scaler.scale)).backward()  # the scaled loss (a Scale op): small gradients stay > 0
        tp = getattr(self.model, "tp", None)
        if tp is not None and tp.sequence:  # the norms' gradients cover this rank's tokens: summed over the group
            tensor.reduce_sequence_parallel_grads(self.model, tp.size)
        if self.zero is not None:
            self.zero.after_backward()
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.skipped = not self.optimizer.step(self.scaler)  # unscales, skips on inf/NaN, updates the scale
        if self.zero is not None and not self.skipped:
            self.zero.after_step()
        return loss

    def warm_up(self) -> int:
        """Steps until one updates the parameters, so the optimiser state exists (the steady state a measured step
        starts from): one step, or with loss scaling as many as the scaler needs to back off below an overflow
        (GradScaler's first steps skip while 2¹⁶ is too large), at most MAX_WARM_UP_STEPS. Returns the steps."""
        self.skipped = False
        self.step()
        steps = 1
        while self.skipped and steps < MAX_WARM_UP_STEPS:
            self.optimizer.zero_grad()
            self.step()
            steps += 1
        return steps

    def loss(self, policy: str) -> Tensor:
        """Forward and loss under the configuration's autocast, the graph's saved tensors under `policy` (the loss's
        too)."""
        if policy == "minimal" and STATE.policy == "minimal" and self.autocast is None:  # no scope to enter
            return self._loss(self.model, self.inputs, self.labels)
        with saved_tensors_policy(policy), autocast(self.autocast):
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

    def gradient_error_vs_float64(self) -> float:
        """‖g − g₆₄‖ / ‖g₆₄‖ over all trainable parameters' gradients: this configuration's gradients (unscaled, with
        loss scaling) against a float64 twin's (the same family and fields in float64, no autocast, master weights
        or loss scaling) at the same parameter values, batch and dropout masks (the values upcast exactly), before
        any optimiser step. Leaves the gradients None.

        Holds the twin (parameters and a float64 step) beside this configuration's gradients: the cell's budget
        allows for it (study/budget.py)."""
        config = self.config
        twin = Workload({**config, "dtype": "float64", "autocast": "none", "master_weights": False,
                         "loss_scale": "none"})
        _copy_values(self.model, twin.model)
        for mine, theirs in ((self.inputs, twin.inputs), (self.labels, twin.labels)):  # the batch, the same values
            mine = mine.data if isinstance(mine, Tensor) else mine
            theirs = theirs.data if isinstance(theirs, Tensor) else theirs
            if isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray):
                theirs[...] = mine.astype(theirs.dtype)
        calls = getattr(self.model, "calls", None)  # dropout masks are drawn per forward call: the same call twice
        self.optimizer.zero_grad()
        loss = self.loss(self.policy)
        scale = 1.0 if self.scaler is None else float(self.scaler.scale)
        (loss if self.scaler is None else loss * scale).backward()
        del loss
        if calls is not None:
            twin.model.calls = calls
        twin.optimizer.zero_grad()
        twin.loss(self.policy).backward()
        named = dict(twin.model.named_parameters())
        diff_sq = ref_sq = 0.0
        for (name, p) in self.model.named_parameters():
            if not p.requires_grad:
                continue
            g, g_ref = p.grad.reshape(-1), named[name].grad.reshape(-1)
            for start in range(0, g.size, GRAD_ERROR_CHUNK_ELEMENTS):
                stop = start + GRAD_ERROR_CHUNK_ELEMENTS
                r = g_ref[start:stop]
                d = g[start:stop].astype(np.float64)
                d /= scale
                d -= r
                diff_sq += float(np.dot(d, d))
                ref_sq += float(np.dot(r, r))
        del twin, named
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
        if self.zero is not None:  # the rank's parts the optimiser updates stand for as many as their parameters
            copies.update(self.zero.copies(copies))
        ledger.register_model(self.model.parameters(), self.model.parameter_layers(), copies)
        # model state that is not a parameter (batch norm's running statistics) lives beside the parameters
        for (name, array), layer in zip(self.model.named_buffers(), self.model.buffer_layers()):
            ledger.register(array, "parameter", layer=layer, role=name, copies=copies.get(id(array), 1))
        if self.train:
            params = self.optimizer.params
            for index, array in self.optimizer.param_states():
                ledger.register(array, "optimizer_state", copies=copies.get(id(params[index]), 1))
            if self.scaler is not None:
                for role, array in zip(("loss_scale", "growth_tracker"), self.scaler.state_arrays()):
                    ledger.register(array, "optimizer_state", role=role)
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


def _copy_values(source: Any, target: Any) -> None:
    """Every parameter and buffer of `source` into `target`'s of the same name (a model of the same family and fields
    in another dtype), cast."""
    theirs = dict(target.named_parameters())
    for name, p in source.named_parameters():
        theirs[name].data[...] = p.data.astype(theirs[name].data.dtype)
    buffers = dict(target.named_buffers())
    for name, array in source.named_buffers():
        buffers[name][...] = array.astype(buffers[name].dtype)

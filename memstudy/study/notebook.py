"""Measure a model you built yourself (in a notebook, say), in this process, in one call.

    import memstudy
    result = memstudy.measure_model(model, x, y)             # cross-entropy loss, SGD, one training step
    result.rows[0]["activation_bytes"], result.breakdown, result.timeline[:5]

The step is measured as a cell measures it (one warm-up step, then per repeat the ledger, tracemalloc, RSS,
memory_profiler and the clock) and predicted as `memstudy predict` predicts it (the same step run on a
shape-only copy of the model and batch). Unlike a sweep's cell it shares this process with everything else
the notebook holds, so the sampled probes (RSS, memory_profiler) see a noisier baseline; the ledger, the
prediction and tracemalloc's step peak do not depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..autograd import Tensor, meta
from ..memory.ledger import StepAccount
from ..memory.predict import prediction_fields
from ..memory.workload import Workload
from ..nn.functional import cross_entropy
from ..nn.models.registry import MODES, OPTIMIZERS, POLICIES, ConfigError
from .cell import measure_workload


@dataclass
class ModelMeasurement:
    rows: list[dict[str, Any]]  # one per repeat: the same fields as runs.csv (config fields only where known)
    account: StepAccount  # the ledger's account of the first measured step
    predicted: StepAccount  # the same step on a shape-only copy

    @property
    def breakdown(self) -> dict[str, int]:
        """Bytes per category at the peak of the first measured step (the ledger's)."""
        return dict(self.account.peak_by_category)

    @property
    def timeline(self) -> list[dict[str, Any]]:
        """The first measured step, event by event (timeline.csv's rows)."""
        return self.account.timeline_rows()


def _default_loss(model: Any, inputs: Any, labels: Any) -> Tensor:
    return cross_entropy(model(inputs), labels)


def measure_model(model: Any, inputs: Any, labels: Any = None, *,
                  loss: Callable[[Any, Any, Any], Tensor] | None = None, optimizer: str = "sgd",
                  mode: str = "train", policy: str = "minimal", repeats: int = 1, new_tokens: int = 8,
                  kv_cache: str = "dynamic", prefill_logits: str = "last") -> ModelMeasurement:
    """Measure and predict one step of `model` on (inputs, labels). `loss(model, inputs, labels)` defaults to
    mean cross-entropy of `model(inputs)`. The optimiser updates the model's parameters (warm-up and measured
    steps), as training would. Mode generate: `inputs` is the prompt, and `new_tokens`, `kv_cache` and
    `prefill_logits` are generation's (nn/generation.py; the model's forward must take a KV cache)."""
    for name, value, allowed in (("optimizer", optimizer, OPTIMIZERS), ("mode", mode, MODES),
                                 ("policy", policy, POLICIES)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a positive integer, got {repeats!r}")
    loss = loss or _default_loss
    data = inputs.data if isinstance(inputs, Tensor) else inputs
    config = {"model": type(model).__name__, "mode": mode, "policy": policy, "optimizer": optimizer,
              "dtype": str(data.dtype), "batch_size": int(data.shape[0]) if data.ndim else 1}
    if mode == "generate":
        config.update(prompt_len=int(data.shape[1]), new_tokens=new_tokens, kv_cache=kv_cache,
                      prefill_logits=prefill_logits)

    # the prediction first, on a shape-only copy: the real model's parameters are untouched
    shadow_model, shadow_inputs, shadow_labels = meta.shape_only_copy((model, data, labels))
    with meta.meta_mode():
        shadow = Workload.from_model(shadow_model, shadow_inputs, shadow_labels, loss, config)
        if shadow.train:
            shadow.step()  # warm-up: the optimiser state exists
        shadow.optimizer.zero_grad()
        predicted = shadow.ledger_step()

    work = Workload.from_model(model, inputs, labels, loss, config)
    accounts: list[StepAccount] = []
    rows = measure_workload(work, config, prediction_fields(predicted), repeats, on_account=accounts.append)
    work.optimizer.zero_grad()
    return ModelMeasurement(rows=rows, account=accounts[0], predicted=predicted)

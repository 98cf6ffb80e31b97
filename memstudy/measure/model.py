"""Measure a model you built yourself (in a notebook, say), in this process, in one call.

    import memstudy
    result = memstudy.measure_model(model, x, y)             # cross-entropy loss, SGD, one training step
    result.rows[0]["activation_bytes"], result.breakdown, result.timeline[:5]

The step is measured as a cell measures it (one warm-up step, then per repeat the ledger, tracemalloc, RSS,
memory_profiler and the clock) and predicted as `memstudy predict` predicts it (the same step run on a
shape-only copy of the model and batch). Unlike a sweep's cell it shares this process with everything else
the notebook holds, so the sampled probes (RSS, memory_profiler) see a noisier baseline; the ledger, the
prediction and tracemalloc's step peak do not depend on it.

What is checked before anything runs (ConfigError, one line): `loss` takes `(model, inputs, labels)` and returns
the loss Tensor; a floating-point batch has the model's parameters' dtype (a float64 batch for a float32 model is
refused, not cast: numpy would silently promote every activation to float64). A step the shape-only arrays
cannot follow (a numpy function without a shape rule) is measured anyway, with a warning: `prediction_unavailable`
says why; a prediction that differs from the ledger is warned about too (`prediction_matches` False).
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from ..autograd import Tensor, meta
from ..autograd.precision import is_float
from .agreement import row_warning, unavailable_prediction
from .ledger import StepAccount
from .predict import prediction_fields
from .workload import Workload
from ..nn.functional import cross_entropy
from ..nn.models.registry import MODES, OPTIMIZERS, POLICIES, ConfigError
from .cell import measure_workload


@dataclass
class ModelMeasurement:
    rows: list[dict[str, Any]]  # one per repeat: the same fields as runs.csv (config fields only where known)
    account: StepAccount  # the ledger's account of the first measured step
    predicted: StepAccount | None  # the same step on a shape-only copy; None when it could not be predicted
    prediction_unavailable: str = ""  # why not (meta.Unsupported's message: the numpy function, file and op)

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


LOSS_SIGNATURE = "loss(model, inputs, labels) -> Tensor"


def _checked_loss(loss: Callable) -> Callable[[Any, Any, Any], Tensor]:
    """`loss` if it can be called as loss(model, inputs, labels), wrapped to check that it returns a Tensor."""
    try:
        signature = inspect.signature(loss)
    except (TypeError, ValueError):  # a builtin or C callable: no signature to check
        signature = None
    if signature is not None:
        try:
            signature.bind(None, None, None)
        except TypeError:
            name = getattr(loss, "__name__", type(loss).__name__)
            raise ConfigError(f"loss must be called as {LOSS_SIGNATURE}; {name}{signature} cannot take those three "
                              "arguments") from None

    def checked(model: Any, inputs: Any, labels: Any) -> Tensor:
        out = loss(model, inputs, labels)
        if not isinstance(out, Tensor):
            raise ConfigError(f"{LOSS_SIGNATURE} must return a memstudy Tensor (the scalar loss), got "
                              f"{type(out).__name__}")
        return out
    return checked


def _model_dtype(model: Any, data: Any) -> str:
    """The dtype a row reports: the parameters' floating dtype. ConfigError when a floating batch has another one
    (numpy would promote the whole step to the wider of the two)."""
    floating = sorted({str(p.data.dtype) for p in model.parameters()
                       if is_float(p.data.dtype)})
    batch_floating = is_float(data.dtype)
    if len(floating) == 1:
        if batch_floating and str(data.dtype) != floating[0]:
            raise ConfigError(f"inputs are {data.dtype} but the model's parameters are {floating[0]}: numpy would "
                              f"promote the step to the wider dtype; pass inputs.astype(np.{floating[0]}) "
                              "(measure_model refuses rather than casts)")
        return floating[0]
    return str(data.dtype)


def measure_model(model: Any, inputs: Any, labels: Any = None, *,
                  loss: Callable[[Any, Any, Any], Tensor] | None = None, optimizer: str = "sgd",
                  mode: str = "train", policy: str = "minimal", repeats: int = 1, new_tokens: int = 8,
                  kv_cache: str = "dynamic", prefill_logits: str = "last") -> ModelMeasurement:
    """Measure and predict one step of `model` on (inputs, labels), in this process.

    `loss` is called as `loss(model, inputs, labels)` and returns the scalar loss Tensor (default: mean
    cross-entropy of `model(inputs)`); a two-argument function is refused with one line naming that signature.
    A floating-point batch must have the dtype of the model's parameters: a float64 batch for a float32 model is
    refused (ConfigError), not cast; the rows' `dtype` is the parameters'. The optimiser updates the model's
    parameters (warm-up and measured steps), as training would. A step that cannot be predicted is measured
    anyway (`predicted` None, `prediction_unavailable` and the rows saying why, and a warning). Mode generate:
    `inputs` is the prompt, and `new_tokens`, `kv_cache` and `prefill_logits` are generation's (nn/generation.py;
    the model's forward must take a KV cache)."""
    for name, value, allowed in (("optimizer", optimizer, OPTIMIZERS), ("mode", mode, MODES),
                                 ("policy", policy, POLICIES)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a positive integer, got {repeats!r}")
    loss = _checked_loss(loss or _default_loss)
    data = inputs.data if isinstance(inputs, Tensor) else inputs
    config = {"model": type(model).__name__, "mode": mode, "policy": policy, "optimizer": optimizer,
              "dtype": _model_dtype(model, data), "batch_size": int(data.shape[0]) if data.ndim else 1}
    if mode == "generate":
        config.update(prompt_len=int(data.shape[1]), new_tokens=new_tokens, kv_cache=kv_cache,
                      prefill_logits=prefill_logits)

    # the prediction first, on a shape-only copy: the real model's parameters are untouched
    shadow_model, shadow_inputs, shadow_labels = meta.shape_only_copy((model, data, labels))
    predicted: StepAccount | None = None
    try:
        with meta.meta_mode():
            shadow = Workload.from_model(shadow_model, shadow_inputs, shadow_labels, loss, config)
            if shadow.train:
                shadow.step()  # warm-up: the optimiser state exists
            shadow.optimizer.zero_grad()
            predicted = shadow.ledger_step()
        prediction = prediction_fields(predicted)
    except meta.Unsupported as exc:  # measured anyway: the rows and a warning say why there is no prediction
        prediction = unavailable_prediction(str(exc))

    work = Workload.from_model(model, inputs, labels, loss, config)
    accounts: list[StepAccount] = []
    rows = measure_workload(work, config, prediction, repeats, on_account=accounts.append)
    work.optimizer.zero_grad()
    warning = row_warning(rows[0])
    if warning:
        warnings.warn(warning, stacklevel=2)
    return ModelMeasurement(rows=rows, account=accounts[0], predicted=predicted,
                            prediction_unavailable=prediction.get("prediction_unavailable", ""))

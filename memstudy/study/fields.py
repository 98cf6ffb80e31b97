"""The row: the fields every measured step reports, in CSV column order (integers are bytes).

`memstudy run --json`, the cell processes and `runs.csv` all use these names; the report reads them.
"""
from __future__ import annotations

# The model and step a row describes. Every one of these (but `repeat`) may be a list in a spec's [grid].
CONFIG_FIELDS: tuple[str, ...] = (
    "depth", "width", "in_features", "out_features", "batch_size", "activation", "bias", "dtype", "mode",
    "optimizer", "checkpoint", "policy", "seed", "repeat",
)

# Defaults for config fields a user may leave out (in_features None means "same as width").
CONFIG_DEFAULTS: dict[str, object] = {
    "depth": 2, "width": 256, "in_features": None, "out_features": 10, "batch_size": 64,
    "activation": "relu", "bias": True, "dtype": "float32", "mode": "train", "optimizer": "sgd",
    "checkpoint": "none", "policy": "minimal", "seed": 0,
}

# Allowed values of the categorical fields.
CHOICES: dict[str, tuple] = {
    "activation": ("relu", "sigmoid", "tanh"),
    "dtype": ("float32", "float64"),
    "mode": ("train", "inference"),
    "optimizer": ("sgd", "momentum", "adam"),
    "checkpoint": ("none", "sqrt", "every:K"),  # every:K: segments of K layers, K a positive integer
    "policy": ("minimal", "all", "half"),
}

BASELINE_FIELDS = ("parameter_bytes", "optimizer_state_bytes", "input_bytes")
# recomputed_ops: ops applied while checkpoints recomputed their segments (0 without checkpointing)
LEDGER_FIELDS = (
    "peak_bytes", "step_peak_bytes", "activation_bytes", "saved_tensors", "recomputed_ops",
    "peak_parameter_bytes", "peak_gradient_bytes", "peak_optimizer_state_bytes", "peak_input_bytes",
    "peak_activation_bytes", "peak_temporary_bytes", "peak_output_bytes",
)
PREDICTED_FIELDS = ("predicted_peak_bytes", "predicted_step_peak_bytes", "predicted_activation_bytes")
# rss_method says how the RSS figure was taken: "vmhwm" (exact reset), "sampled" (psutil thread) or
# "unavailable"; hwm_bytes is the cell process's absolute VmHWM before the RSS probe resets it.
PROBE_FIELDS = ("tracemalloc_step_peak_bytes", "rss_step_peak_bytes", "rss_method", "mprof_step_peak_bytes",
                "hwm_bytes")
# grad_rel_error: ‖g − g_minimal‖ / ‖g_minimal‖ over all parameter gradients; only under the `half` policy
# (empty otherwise: `minimal` and `all` give identical gradients, and so does checkpointing)
ACCURACY_FIELDS = ("grad_rel_error",)
OUTCOME_FIELDS = ("step_seconds", "status", "error")

ROW_FIELDS: tuple[str, ...] = (
    CONFIG_FIELDS + BASELINE_FIELDS + LEDGER_FIELDS + PREDICTED_FIELDS + PROBE_FIELDS + ACCURACY_FIELDS
    + OUTCOME_FIELDS
)

# Ledger categories, in the order reports stack them.
CATEGORIES = ("parameter", "optimizer_state", "input", "gradient", "activation", "temporary", "output")

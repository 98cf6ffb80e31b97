"""The row: the fields every measured step reports, in CSV column order (integers are bytes).

`memstudy run --json`, the cell processes and `runs.csv` all use these names; the report reads them.
Columns are only ever appended, so a `runs.csv` written by an earlier memstudy still loads: the first
files had the MLP's config columns (`LEGACY_CONFIG_FIELDS`) up front; every other model field (the
registry's `model` column and each family's own fields) comes after the outcome columns, and the columns
added since (`LATER_FIELDS`) after those. Readers go by column name and fill a column an older file lacks
(empty); a sweep that appends to an older file first rewrites it in the current column order.
"""
from __future__ import annotations

from ...measure.generation import GENERATION_COLUMNS, PREDICTED_GENERATION_COLUMNS
from ...measure.ledger import CATEGORIES
from ...nn.models.registry import PARALLEL_NAMES, all_field_names

# The config columns of the first runs.csv files, in their place.
LEGACY_CONFIG_FIELDS: tuple[str, ...] = (
    "depth", "width", "in_features", "out_features", "batch_size", "activation", "bias", "dtype", "mode",
    "optimizer", "checkpoint", "policy", "seed", "repeat",
)
# Every other config field of the built-in families (the registry's declaration), appended at the end.
MODEL_FIELDS: tuple[str, ...] = tuple(f for f in all_field_names() if f not in LEGACY_CONFIG_FIELDS)
# The model and step a row describes (`repeat` is the measured step's index, not a grid field).
CONFIG_FIELDS: tuple[str, ...] = LEGACY_CONFIG_FIELDS + MODEL_FIELDS

BASELINE_FIELDS = ("parameter_bytes", "optimizer_state_bytes", "input_bytes")
# recomputed_ops: ops applied while checkpoints recomputed their segments (0 without checkpointing)
LEDGER_FIELDS = (
    "peak_bytes", "step_peak_bytes", "activation_bytes", "saved_tensors", "recomputed_ops",
    # kv_cache came later (GENERATION_FIELDS), communication later still (PARALLEL_ROW_FIELDS)
    *(f"peak_{c}_bytes" for c in CATEGORIES if c not in ("kv_cache", "communication")),
)
PREDICTED_FIELDS = ("predicted_peak_bytes", "predicted_step_peak_bytes", "predicted_activation_bytes")
# rss_method says how the RSS figure was taken: "vmhwm" (exact reset), "sampled" (psutil thread) or
# "unavailable"; hwm_bytes is the cell process's absolute VmHWM before the RSS probe resets it.
PROBE_FIELDS = ("tracemalloc_step_peak_bytes", "rss_step_peak_bytes", "rss_method", "mprof_step_peak_bytes",
                "hwm_bytes")
# grad_rel_error: ‖g − g_minimal‖ / ‖g_minimal‖ over all parameter gradients, for every policy but `minimal`
# (the reference, empty) in training cells
ACCURACY_FIELDS = ("grad_rel_error",)
OUTCOME_FIELDS = ("step_seconds", "status", "error")

# foreign_cores: the average number of cores other processes kept busy while step_seconds was timed
# (their CPU seconds over the timed steps ÷ wall seconds; measure/load.py); empty where it cannot be read
LOAD_FIELDS = ("foreign_cores",)
# vm_peak_bytes: the cell process's address-space peak (VmPeak) after the repeat, what its memory limit
# (RLIMIT_AS, budget.py) holds; mem_limit_bytes: that limit (empty: none was set)
LIMIT_FIELDS = ("vm_peak_bytes", "mem_limit_bytes")
# host: the machine that measured the row; worker: the Dask worker that ran the cell (empty for a local sweep)
PLACE_FIELDS = ("host", "worker")
# blas_threads: the BLAS threads the cell process got (the user's count if set, else the cores free as it started,
# launcher.py); free_cores: the usable cores no process kept busy over 0.1 s just before it started
THREAD_FIELDS = ("blas_threads", "free_cores")
# model_source_hash: sha256 (first 16 hex digits) of the model's source file when the row was made: a user's
# file, or the built-in family's module (provenance.model_source); a sweep refuses to mix two in one folder
SOURCE_FIELDS = ("model_source_hash",)
# prediction_matches: the ledger's step peak, total peak and activation bytes each equal the prediction's (memory/
# agreement.py); False is shown wherever the row is; empty when the row has no prediction to compare
# prediction_unavailable: why the step has no prediction (a numpy call the shape-only arrays cannot follow, named
# with the file and op that made it); the step was measured anyway; empty when it has one
AGREEMENT_FIELDS = ("prediction_matches", "prediction_unavailable")
# mode generate (measure/generation.py): the KV cache at the step's peak, after the prefill, its growth per decode
# step and after the last; the prefill's and the largest decode step's peaks (total, as peak_bytes); predicted too.
# Empty in every other mode.
GENERATION_FIELDS = ("peak_kv_cache_bytes",) + GENERATION_COLUMNS + PREDICTED_GENERATION_COLUMNS
LATER_FIELDS: tuple[str, ...] = (LOAD_FIELDS + LIMIT_FIELDS + PLACE_FIELDS + THREAD_FIELDS + SOURCE_FIELDS
                                 + AGREEMENT_FIELDS + GENERATION_FIELDS)
# 16-bit training: grad_error_vs_float64 is ‖g − g₆₄‖ / ‖g₆₄‖ against a float64 twin at the same weights (training
# cells with float64_reference, else empty); weight_copy_bytes the bytes of autocast's 16-bit weight copies (each
# parameter cast once per forward); peak_emulation_bytes the float32 scratch of the 16-bit emulation (ops/emulate.py:
# its tiles, workspaces named fp32_*) live at the ledger's peak, which counts among the temporaries
PRECISION_ROW_FIELDS = ("grad_error_vs_float64", "weight_copy_bytes", "peak_emulation_bytes")

# max_gradient_bytes: the largest bytes of gradients live at once over the step (the ledger's maximum of the category,
# wherever the total peak is): what a step needs for its gradients, Ψ_trainable × itemsize when none is freed early
# (peak_gradient_bytes is only what is live at the total peak, often 0 when that is the end of forward)
STATE_ROW_FIELDS = ("max_gradient_bytes",)

# Parallelism (issue 26, memstudy/parallel/): the parallel config fields, then what the row's figures are. A row's
# figures are one rank's: accounted_rank is it, rank_choice says why ("given": the config's `rank`; "largest peak":
# the rank with the largest peak); shape_only is True when the figures come from the rank's graph run on shape-only
# arrays (no measured step); peak_communication_bytes the collectives' buffers at the peak (ledger category
# `communication`) and communication_bytes every collective buffer the step made (the ledger's
# StepAccount.collective_bytes, summed); predicted too.
PARALLEL_ROW_FIELDS = PARALLEL_NAMES + ("accounted_rank", "rank_choice", "shape_only", "peak_communication_bytes",
                                         "communication_bytes", "predicted_communication_bytes")

# The prediction's bytes at its peak by category and its largest live gradients (measure/predict.py: predicted_row):
# a shape-only row's only per-category figures (a spec's `[run] measure = false`, run/sweep.py: nothing is measured,
# so the ledger's and the probes' columns stay empty and shape_only is True); a measured row has them beside its
# ledger's.
PREDICTED_CATEGORY_FIELDS = tuple(f"predicted_peak_{c}_bytes" for c in CATEGORIES) + ("predicted_max_gradient_bytes",)

# Convolutions (ops/conv.py, conv_algo): conv_algo_ran is what each convolution ran, in the order they ran (one name
# when all ran the same: per_example, batched, or batched:B for B examples per GEMM), as the ledger heard it (Node.choice);
# conv_workspace_bytes the most bytes of the convolutions' workspaces (ledger buffers conv2d.<role>) alive at once
# over the step. Empty when the step has no convolution.
CONV_ROW_FIELDS = ("conv_algo_ran", "conv_workspace_bytes")

ROW_FIELDS: tuple[str, ...] = (
    LEGACY_CONFIG_FIELDS + BASELINE_FIELDS + LEDGER_FIELDS + PREDICTED_FIELDS + PROBE_FIELDS + ACCURACY_FIELDS
    + OUTCOME_FIELDS + MODEL_FIELDS + LATER_FIELDS + PRECISION_ROW_FIELDS + STATE_ROW_FIELDS + PARALLEL_ROW_FIELDS
    + PREDICTED_CATEGORY_FIELDS + CONV_ROW_FIELDS
)

# Config columns a report groups by (every config field but the repeat index).
GRID_FIELDS: tuple[str, ...] = tuple(f for f in CONFIG_FIELDS if f != "repeat")  # not yet the parallel fields

"""The model registry: each family declares its config fields, builds its model and makes its batch.

A family is one module under `memstudy/nn/models/` (or a user's own file, `path/to/file.py:Name`) holding a
`Family` subclass. Everything outside that module (CLI flags, the spec's grid, the row's columns, the cell,
the predictor, `memstudy graph`, the report) reads the family's declaration and never names its fields.

Fields shared by every family keep one name everywhere (`SHARED_FIELDS`); a family may change their
defaults (`Family.defaults`) and add checkpoint strategies of its own (`Family.checkpoints`).

Two declarations keep a family's cost constant at any size (both optional; every built-in family makes the first,
the MLP and the GPT, whose blocks are alike, the second; the CNN's blocks differ and its depth is bounded anyway):
- `state_bytes(config)`: its parameter, trainable and batch bytes in closed form (a `StateBytes`), so that a size
  over the budget is refused at once, without building anything (`memory.predict.state_bytes`; without the
  declaration the model is built shape-only, which costs one pass over its layers);
- repeated blocks through `nn.repeat.Plan`: build the stack of alike blocks with `plan.build(make_block)` and loop
  over it with `plan.blocks(start, stop)` (and `plan.segments()` for checkpoint segments, sized by
  `checkpoint_segment_size`), so that the predictor runs one block for each run of alike ones and `predict` costs
  the same at any depth. A family that loops plainly is predicted by running every block.
`tests/test_state_bytes.py` and `tests/test_repeat.py` check both against the full build and step, for every
built-in family and for `tests/families/declared.py` (a user's file doing the same).

Adopting both in a family module (as mlp.py and gpt.py do; `tests/families/declared.py` is the shortest example):

    def __init__(self, ..., depth, checkpoint):                       # the model
        self.plan = Plan(depth, checkpoint_segment_size(checkpoint, depth))
        self.blocks = self.plan.build(lambda i: Block(...))            # block i; every block, or those that run
    def forward(self, x):
        ...
        for i in self.plan.blocks(0, self.depth):                     # or: for start, stop in self.plan.segments():
            with layer_scope(i):                                      #        x = checkpoint(self.run, x, params,
                x = self.blocks[i](x)                                 #                       start, stop)
    def parameter_layers(self):                                       # (index, block) pairs, in either mode
        return [i for i, block in self.blocks.items() for _ in block.parameters()]

    def state_bytes(self, config) -> StateBytes:                      # the family
        return StateBytes(parameter_bytes, trainable_bytes, input_bytes)   # input: labels too when training

What `Plan` assumes: the blocks it compresses are alike (same code, same shapes; the first may differ, as the MLP's
first takes in_features) and each block's input looks like its output; every block's state is its own (a weight
tied between blocks, or a cache one block fills for the next, breaks this). The ledger checks what it can
(`RepeatMismatch`, then every block runs); the tests check the rest: a new built-in family adds configurations to
`FAMILY_CONFIGS` in tests/test_predict.py (test_state_bytes.py reads them too) and to `FAMILY_GRID` (and, if it
builds through `Plan`, `REPEATING`) in tests/test_repeat.py, at depths where runs of more than three blocks and
of more than three checkpoint segments occur.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ...autograd.engine import POLICIES  # the saved-tensor policies the engine implements
from ...autograd.autocast import AUTOCAST_DTYPES
from ...autograd.precision import FLOAT_DTYPES, LOW_PRECISION
from ...optim import LOSS_SCALER_BYTES, OPTIMIZERS, STATE_COPIES  # what optim.make builds, their state per parameter
from ..functional import cross_entropy

DTYPES = FLOAT_DTYPES  # float32, float64, bfloat16, float16 (autograd/precision.py)
# generate: a prefill and greedy decode steps with a KV cache, for the families whose `modes` include it
MODES = ("train", "inference", "generate")
CHECKPOINTS = ("none", "sqrt", "every:K")  # every:K: segments of K layers, K a positive integer


class ConfigError(ValueError):
    """A configuration field is missing, of the wrong type, or out of range (the message names the field)."""


def did_you_mean(word: Any, choices: Iterable[Any]) -> str:
    """'; did you mean depth?' when `word` is a likely typo of one of `choices` (difflib), else ''."""
    import difflib

    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


@dataclass(frozen=True)
class Field:
    """One config field: its name (the row's column and the spec's grid key), type, default and rules.

    `flag` is the CLI flag (default `--name` with dashes); `choices` the allowed values of a categorical
    field; `minimum` / `maximum` bound a number (`maximum` exclusive when `exclusive_maximum`). An `optional`
    field changes nothing at its default (LoRA's): descriptions and cell ids name it only when it is set, so
    cells measured before the field existed keep their ids. `aliases` are other keys a spec or config may give it
    by (the MLP's `out_features` is `classes`, as its flag and the CNN say). `modes`: the modes the field applies to
    (None: all); in any other mode its value is None (generation's fields outside mode generate). `parse` turns a
    value given in another form into the field's type first (a size such as 64MiB into bytes); its ValueError
    becomes the field's one-line error.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: bool = False
    flag: str | None = None
    optional: bool = False
    aliases: tuple[str, ...] = ()
    modes: tuple[str, ...] | None = None
    parse: Callable[[Any], Any] | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """The value in canonical form, or ConfigError naming the field."""
        if self.parse is not None:
            try:
                value = self.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{self.name} {exc}") from None
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name} must be true or false, got {value!r}")
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{self.name} must be an integer, got {value!r}")
            value = int(value)
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ConfigError(f"{self.name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{self.name} must be a finite number, got {value!r}")
        elif self.type is str:
            if not isinstance(value, str):
                raise ConfigError(f"{self.name} must be a string, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name} must be at least {self.minimum:g}, got {value}")
        if self.maximum is not None and (value >= self.maximum if self.exclusive_maximum else value > self.maximum):
            word = "below" if self.exclusive_maximum else "at most"
            raise ConfigError(f"{self.name} must be {word} {self.maximum:g}, got {value}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}"
                              + did_you_mean(value, self.choices))
        return value


def rename_aliases(raw: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """`raw` with each key in `aliases` renamed to the field it stands for, in its place; ConfigError (naming the
    field) when a field is given by two of its names."""
    if not any(k in aliases for k in raw):
        return raw
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # field name -> the key it was given by
    for key, value in raw.items():
        name = aliases.get(key, key)
        if name in given:
            raise ConfigError(f"{name} is given twice, as {given[name]} and as {key} (two names of one field)")
        given[name] = key
        out[name] = value
    return out


def parse_checkpoint(value: Any, extra: tuple[str, ...] = ()) -> str:
    """The canonical form of a checkpoint strategy (none, sqrt, every:K, or a family's own); ConfigError else."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "sqrt") or text in extra:
            return text
        match = re.fullmatch(r"every:\s*(\d+)", text)
        if match and int(match.group(1)) >= 1:
            return f"every:{int(match.group(1))}"
    allowed = ", ".join(("none", "sqrt") + tuple(extra))
    raise ConfigError(f"checkpoint must be {allowed} or every:K with K a positive integer, got {value!r}")


def checkpoint_segment_size(checkpoint: str, depth: int) -> int | None:
    """Layers per checkpoint segment under a strategy, or None when nothing is checkpointed by segment.

    `sqrt` uses segments of ⌈√depth⌉ layers (Chen et al. 2016); `every:K` segments of K layers (the last one
    shorter when K does not divide the depth). Any other strategy (none, a family's own) has no segments.
    """
    if checkpoint == "sqrt":
        return math.isqrt(depth - 1) + 1  # ⌈√depth⌉
    if checkpoint.startswith("every:"):
        return int(checkpoint.split(":")[1])
    return None


def checkpoint_segments(checkpoint: str, depth: int) -> list[tuple[int, int]] | None:
    """The layers' segments [start, stop) under a strategy (see `checkpoint_segment_size`), or None."""
    size = checkpoint_segment_size(checkpoint, depth)
    if size is None:
        return None
    return [(start, min(start + size, depth)) for start in range(0, depth, size)]


def check_tensor_parallel(config: dict[str, Any], **counts: int) -> None:
    """A family's tensor-parallel rules (memstudy/parallel/tensor.py), one ConfigError line: t must divide each of
    `counts` (heads, kv_heads, the MLP's hidden size: each rank holds 1/t of them); sequence parallelism needs t > 1
    and t dividing seq_len; LoRA and generation are one device's."""
    t = config.get("tensor_parallel") or 1
    if config.get("sequence_parallel") and t == 1:
        raise ConfigError("sequence_parallel needs tensor_parallel > 1 (it splits the tokens over the tensor-parallel "
                          "ranks)")
    if t == 1:
        return
    for name, count in counts.items():
        if count % t:
            raise ConfigError(f"tensor_parallel {t} must divide {name} ({count})")
    if config.get("sequence_parallel") and config["seq_len"] % t:
        raise ConfigError(f"sequence_parallel: tensor_parallel {t} must divide seq_len ({config['seq_len']})")
    if config.get("lora_rank"):
        raise ConfigError(f"tensor_parallel {t} with lora_rank {config['lora_rank']}: LoRA adapters are not split "
                          "over tensor-parallel ranks here")
    if config.get("mode") == "generate":
        raise ConfigError(f"tensor_parallel {t} with mode generate: the KV cache is not split over tensor-parallel "
                          "ranks here")


@dataclass(frozen=True)
class StateBytes:
    """What a configuration holds before its step starts, in closed form (a family's `state_bytes`): the ledger's
    registered `parameter` bytes (parameters and model state such as running statistics), the part of them an
    optimiser updates (its state is 0×, 1× or 2× these: `optim.STATE_COPIES`), of which `low_trainable_bytes` are
    16-bit (with master weights their float32 copies and state take twice their bytes each), and the batch as
    registered in the configuration's mode (training registers the labels too; a view of the inputs counts once)."""

    parameter_bytes: int
    trainable_bytes: int
    input_bytes: int
    low_trainable_bytes: int = 0

    def optimizer_state_bytes(self, config: dict[str, Any]) -> int:
        if config["mode"] != "train":
            return 0
        copies = STATE_COPIES[config["optimizer"]]
        state = copies * self.trainable_bytes
        if config.get("master_weights"):  # a float32 master copy and float32 state per 16-bit parameter
            state += (1 + copies) * 2 * self.low_trainable_bytes - copies * self.low_trainable_bytes
        return state + (LOSS_SCALER_BYTES if config.get("loss_scale", "none") != "none" else 0)

    def total_bytes(self, config: dict[str, Any]) -> int:
        """Bytes alive throughout the step: none of it can be freed, so no step of this configuration needs less."""
        return self.parameter_bytes + self.optimizer_state_bytes(config) + self.input_bytes


LOSS_SCALES = ("none", "dynamic")
# `precision`: a shorthand that sets the four precision fields (PyTorch Lightning's `Trainer(precision=...)` names,
# then two of memstudy's own for 16-bit parameters with float32 master weights, as Megatron-LM and DeepSpeed train)
PRECISION_FIELDS = ("dtype", "autocast", "master_weights", "loss_scale")
PRECISIONS: dict[str, tuple[str, str, bool, str]] = {
    "64-true": ("float64", "none", False, "none"),
    "32-true": ("float32", "none", False, "none"),
    "bf16-true": ("bfloat16", "none", False, "none"),
    "16-true": ("float16", "none", False, "none"),
    "bf16-mixed": ("float32", "bfloat16", False, "none"),
    "16-mixed": ("float32", "float16", False, "dynamic"),  # Lightning's 16-mixed runs GradScaler
    "bf16-master": ("bfloat16", "none", True, "none"),  # memstudy's: bf16 parameters, fp32 master weights
    "16-master": ("float16", "none", True, "dynamic"),  # memstudy's: ZeRO's mixed precision (fp16, master, scaling)
}
LIGHTNING_PRECISIONS = ("64-true", "32-true", "bf16-true", "16-true", "bf16-mixed", "16-mixed")

# The fields every family has, in the row's column order (`model` comes first of all).
SHARED_FIELDS: tuple[Field, ...] = (
    Field("depth", int, 2, "layers (MLP) or blocks (GPT, CNN)", minimum=1),
    Field("width", int, 256, "hidden size (MLP, GPT) or the first block's channels (CNN)", minimum=1),
    Field("batch_size", int, 64, "examples per step", minimum=1, flag="--batch"),
    Field("dtype", str, "float32", "floating-point type of parameters, activations and gradients", choices=DTYPES),
    Field("mode", str, "train", "train: forward, loss, backward, optimiser step; inference: forward under no_grad; "
          "generate: prefill and greedy decode steps with a KV cache (the families that declare it)", choices=MODES),
    Field("optimizer", str, "sgd", "optimiser (its state is 0x, 1x, 2x the parameters)", choices=OPTIMIZERS),
    Field("checkpoint", str, "none", "gradient checkpointing: hold only each segment's input and recompute the "
          "segment in backward; sqrt = segments of ceil(sqrt(depth)) layers, every:K = of K layers"),
    Field("policy", str, "minimal", "saved tensors: minimal = what backward needs; all = every intermediate, as "
          "the textbook stores them; half = what backward needs, stored as float16", choices=POLICIES),
    Field("seed", int, 0, "random seed of weights and batch", minimum=0),
    Field("autocast", str, "none", "PyTorch-style autocast: matrix products and convolutions in this 16-bit type, "
          "losses in float32, everything else in its inputs' dtype; parameters stay in dtype (float32)",
          choices=("none",) + AUTOCAST_DTYPES, optional=True),
    Field("master_weights", bool, False, "16-bit parameters and gradients, float32 master copies and optimiser "
          "state (Megatron-LM's and DeepSpeed's mixed precision); dtype bfloat16 or float16", optional=True),
    Field("loss_scale", str, "none", "dynamic: PyTorch GradScaler's loss scaling (2^16, x2 after 2000 clean steps, "
          "x0.5 and the step skipped on inf/NaN); for float16 arithmetic", choices=LOSS_SCALES, optional=True),
    Field("float64_reference", bool, False, "training cells also measure their gradients' relative error against a "
          "float64 twin at the same weights and batch (row: grad_error_vs_float64); costs a float64 step",
          optional=True),
)
LATE_SHARED_FIELDS = PRECISION_FIELDS[1:] + ("float64_reference",)  # row columns after the families' own
# Parallelism (issue 26): the row's figures are one rank's (memstudy/parallel/). All optional: at their defaults
# (one device) they change nothing, and descriptions and cell ids leave them out. Their row columns come last of all
# (run/results/fields.py), after every column that existed before them. DeepSpeed's ZeRO bucket sizes, in elements,
# with its defaults (deepspeed/runtime/zero/config.py: reduce_bucket_size 5e8, allgather_bucket_size 5e8,
# stage3_prefetch_bucket_size 5e7, stage3_param_persistence_threshold 1e5).
SCHEDULES = ("1f1b", "gpipe")
PARALLEL_FIELDS: tuple[Field, ...] = (
    Field("data_parallel", int, 1, "data-parallel ranks N: the row's figures are one rank's", minimum=1,
          optional=True),
    Field("zero", int, 0, "ZeRO stage: 1 shards the optimiser state (and fp32 master weights) 1/N, 2 the gradients "
          "too, 3 the parameters too (gathered per layer before use, freed after)", minimum=0, maximum=3,
          optional=True),
    Field("tensor_parallel", int, 1, "tensor-parallel ranks t (Megatron-LM's column- and row-parallel Linears)",
          minimum=1, optional=True),
    Field("sequence_parallel", bool, False, "sequence parallelism: layer norms and dropouts on s/t tokens (with "
          "tensor_parallel)", optional=True),
    Field("pipeline_parallel", int, 1, "pipeline stages p (depth/p layers per rank)", minimum=1, optional=True),
    Field("microbatches", int, 1, "microbatches per step of a pipeline (the batch is split m ways)", minimum=1,
          optional=True),
    Field("schedule", str, "1f1b", "pipeline schedule: 1f1b (PipeDream-Flush) or gpipe (all forwards, then all "
          "backwards)", choices=SCHEDULES, optional=True),
    Field("rank", int, None, "the rank whose memory the row accounts for (default: the rank with the largest "
          "peak, reported as such)", minimum=0, optional=True),
    Field("reduce_bucket_size", int, 500_000_000, "ZeRO: gradient elements per reduce(-scatter) bucket "
          "(DeepSpeed's reduce_bucket_size)", minimum=1, optional=True),
    Field("allgather_bucket_size", int, 500_000_000, "ZeRO 1-2: parameter elements per all-gather bucket after the "
          "step (DeepSpeed's allgather_bucket_size)", minimum=1, optional=True),
    Field("prefetch_bucket_size", int, 50_000_000, "ZeRO 3: parameter elements gathered ahead of use "
          "(DeepSpeed's stage3_prefetch_bucket_size)", minimum=0, optional=True),
    Field("param_persistence_threshold", int, 100_000, "ZeRO 3: parameters with fewer elements stay gathered "
          "(DeepSpeed's stage3_param_persistence_threshold)", minimum=0, optional=True),
)
PARALLEL_NAMES = tuple(f.name for f in PARALLEL_FIELDS)
SHARED_FIELDS = SHARED_FIELDS + PARALLEL_FIELDS
SHARED_NAMES = tuple(f.name for f in SHARED_FIELDS)


class Family:
    """A model family: subclass it in one module, set the class attributes, implement `build` and `batch`.

    - `fields`: the family's own config fields (besides `SHARED_FIELDS`);
    - `defaults`: the family's defaults for shared fields (e.g. a smaller width);
    - `checkpoints`: strategies beyond none / sqrt / every:K that the family implements (e.g. "selective"), and
      `checkpoint_help`: what each of them does, in a phrase (the `--checkpoint` help says it);
    - `check(config)`: cross-field rules (raise ConfigError with one line naming the field);
    - `build(config)`: the model (an `nn.Module`); parameters drawn through `nn.init` so that the same code
      builds shape-only parameters for the predictor;
    - `batch(config)`: (inputs, labels) for one step, drawn through `nn.init` too; labels may be None;
    - `loss(model, inputs, labels)`: the training objective (default: mean cross-entropy of model(inputs));
    - `layer_names(config)`: a name per layer index (the `layer_scope` indices the model uses), for reports;
    - `findings`: the report's findings that describe this family (modules of `memstudy.findings`, or dotted
      module paths of your own); a family that lists none gets the generic report only.
    - `hf_model_types` and `from_hf_config(hf)`: the Hugging Face `model_type`s whose config.json the family reads,
      and its fields from such a config (`nn/models/hf_config.py` reads the file and picks the family).
    - `state_bytes(config)`: parameter, trainable and batch bytes in closed form (`StateBytes`), or None (the default:
      not declared, the model is built shape-only to count them); see the module docstring.
    - `modes`: the modes it runs; a family that lists `generate` declares generation's fields
      (`nn.generation.generation_fields`) and builds a model whose forward takes a KV cache
      (`model(idx, cache=, logits=)`, which `nn.generation.generate` runs).
    """

    name: str = ""
    description: str = ""
    fields: tuple[Field, ...] = ()
    defaults: dict[str, Any] = {}
    checkpoints: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    hf_model_types: tuple[str, ...] = ()
    checkpoint_help: dict[str, str] = {}
    modes: tuple[str, ...] = ("train", "inference")
    # whether its blocks split over tensor-parallel ranks (memstudy/parallel/tensor.py); its `check` then calls
    # `check_tensor_parallel` with the counts t must divide
    tensor_parallel: bool = False
    # whether it builds one pipeline stage's blocks (memstudy/parallel/pipeline.py: `stage_fields`)
    pipeline_parallel: bool = False

    def check(self, config: dict[str, Any]) -> None:
        """Rules between fields; the default has none."""

    def build(self, config: dict[str, Any]) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def batch(self, config: dict[str, Any]) -> tuple[Any, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, model: Any, inputs: Any, labels: Any) -> Any:
        return cross_entropy(model(inputs), labels)

    def layer_names(self, config: dict[str, Any]) -> list[str]:
        return [str(i) for i in range(config["depth"] + 1)]

    def state_bytes(self, config: dict[str, Any]) -> StateBytes | None:
        return None

    def graph_names(self, model: Any, config: dict[str, Any]) -> "GraphNames | None":
        """How `memstudy graph` names this family's variables, or None: parameters by their own names, op
        outputs numbered (the MLPs use the seed's W1, b1, z1, h1, o)."""
        return None

    def from_hf_config(self, hf: dict[str, Any]) -> dict[str, Any]:
        """This family's fields from a Hugging Face config.json's keys; ConfigError naming a key it cannot honour."""
        raise ConfigError(f"model {self.name!r} reads no Hugging Face config")

    # --- derived from the declaration -------------------------------------------------------------------
    def describe(self, config: dict[str, Any]) -> str:
        """One line naming the family and every field's value (for tables, captions and graph titles)."""
        parts = []
        for f in self.all_fields():
            value = config.get(f.name)
            if f.name == "mode" or (f.name, value) in (("checkpoint", "none"), ("policy", "minimal")) \
                    or (f.optional and value in (None, f.default)):  # None: a row from before the field
                continue  # the mode is said elsewhere; the defaults that change nothing are left out
            if f.type is bool:
                parts.append(f.name if value else f"no {f.name}")
            elif f.name in ("checkpoint", "policy", "autocast", "loss_scale", "attention"):
                parts.append(f"{f.name} {value}")
            elif f.choices is not None and f.modes is None:  # a value that says what it is (float32, relu)
                parts.append(str(value))
            else:
                parts.append(f"{f.cli_flag[2:].replace('-', ' ')} {value}")
        return f"{self.name}: " + ", ".join(parts)

    def aliases(self) -> dict[str, str]:
        """Each alias a field may be given by -> the field's name."""
        return {alias: f.name for f in self.all_fields() for alias in f.aliases}

    def canonical_keys(self, raw: dict[str, Any]) -> dict[str, Any]:
        """`raw` with aliases renamed to their fields' names; ConfigError when a field is given twice."""
        return rename_aliases(raw, self.aliases())

    def all_fields(self) -> tuple[Field, ...]:
        """Shared fields (with this family's defaults), then the family's own."""
        own_strategies = "".join(f"; {name} = {self.checkpoint_help.get(name, 'a strategy of this family')}"
                                 for name in self.checkpoints)
        shared = tuple(
            Field(**{**f.__dict__, **({"default": self.defaults[f.name]} if f.name in self.defaults else {}),
                     **({"help": f.help + own_strategies} if f.name == "checkpoint" and own_strategies else {})})
            for f in SHARED_FIELDS
        )
        return shared + tuple(self.fields)

    def check_field(self, f: Field, value: Any) -> Any:
        """One field's value in canonical form, or ConfigError naming it (the rules between fields are `check`'s)."""
        if value is None and f.default is not None and f.name != "checkpoint":
            raise ConfigError(f"{f.name} must be given a value, got None")
        if f.name == "checkpoint":
            return parse_checkpoint(value, self.checkpoints)
        return None if value is None else f.check(value)  # a default of None: `check` resolves it (in_features)

    def normalize(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every field checked; ConfigError (one line naming the field) otherwise."""
        fields = self.all_fields()
        raw = expand_precision(self.canonical_keys(raw), {f.name: f.default for f in fields})
        known = {f.name for f in fields}
        unknown = [k for k in raw if k not in known and k not in ("model", "repeat")]
        if unknown:
            raise ConfigError(f"unknown field {unknown[0]!r} for model {self.name!r}"
                              + did_you_mean(unknown[0], [*known, *self.aliases()]))
        config: dict[str, Any] = {"model": self.name}
        for f in fields:
            config[f.name] = self.check_field(f, raw.get(f.name, f.default))
        check_precision(config)
        check_parallel(config)
        if (config.get("tensor_parallel") or 1) > 1 and not self.tensor_parallel:
            able = [n for n in builtin_names() if get_family(n).tensor_parallel]
            raise ConfigError(f"tensor_parallel {config['tensor_parallel']}: model {self.name!r} has no tensor-parallel "
                              f"layers ({', '.join(able)} have)")
        if ((config.get("pipeline_parallel") or 1) > 1 or (config.get("microbatches") or 1) > 1) \
                and not self.pipeline_parallel:
            able = [n for n in builtin_names() if get_family(n).pipeline_parallel]
            raise ConfigError(f"pipeline_parallel {config.get('pipeline_parallel') or 1} with microbatches "
                              f"{config.get('microbatches') or 1}: model {self.name!r} builds no pipeline stages "
                              f"({', '.join(able)} do)")
        from ...parallel import pipeline  # the stage rules (the parallel package imports this module)
        problem = pipeline.check(config)
        if problem:
            raise ConfigError(problem)
        if config["mode"] not in self.modes:
            able = [n for n in builtin_names() if config["mode"] in get_family(n).modes]
            raise ConfigError(f"mode {config['mode']}: model {self.name!r} cannot {config['mode']} (it runs "
                              f"{', '.join(self.modes)}; {', '.join(able)} can)")
        for f in fields:
            if f.modes is not None and config["mode"] not in f.modes:
                config[f.name] = None  # the field does not apply to this mode
        try:
            self.check(config)
        except ConfigError:
            raise
        except ValueError as exc:  # a user family's rule, written with a plain ValueError
            raise ConfigError(str(exc)) from None
        return config


def expand_precision(raw: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`raw` with its `precision` (a name of PRECISIONS) replaced by the four fields it sets; ConfigError for an unknown
    name, or a field given beside it with another value than the name's (and than the field's default)."""
    if "precision" not in raw:
        return raw
    name = raw["precision"]
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    out = {k: v for k, v in raw.items() if k != "precision"}
    for field, value in zip(PRECISION_FIELDS, PRECISIONS[name]):
        given = raw.get(field, value)
        if given != value and given != defaults.get(field):
            raise ConfigError(f"precision {name} sets {field} = {value!r}, but {field} = {given!r} was given too")
        out[field] = value
    return out


def check_precision(config: dict[str, Any]) -> None:
    """The rules between the precision fields (ConfigError, one line naming the field)."""
    dtype, cast = config.get("dtype"), config.get("autocast", "none")
    if cast != "none" and dtype != "float32":
        raise ConfigError(f"autocast casts float32 parameters and activations to {cast} (PyTorch leaves float64 alone, "
                          f"and 16-bit ones are 16-bit already): dtype must be float32 with autocast, got {dtype}")
    if config.get("master_weights") and dtype not in LOW_PRECISION:
        raise ConfigError(f"master_weights keeps float32 copies of 16-bit parameters: dtype must be "
                          f"{' or '.join(LOW_PRECISION)} with master_weights, got {dtype}")
    if config.get("loss_scale", "none") != "none":
        float16 = cast == "float16" or (dtype == "float16" and config.get("master_weights"))
        if not float16:
            raise ConfigError("loss_scale dynamic scales float16 gradients that are unscaled in float32: it needs "
                              "autocast float16, or dtype float16 with master_weights (PyTorch's GradScaler refuses "
                              "to unscale float16 gradients in place)")


def world_size(config: dict[str, Any]) -> int:
    """The ranks a parallel configuration spans (1 on one device)."""
    return (config.get("data_parallel") or 1) * (config.get("tensor_parallel") or 1) \
        * (config.get("pipeline_parallel") or 1)


def check_parallel(config: dict[str, Any]) -> None:
    """The rules between the parallel fields (ConfigError, one line naming the field)."""
    rank = config.get("rank")
    if rank is not None and rank >= world_size(config):
        raise ConfigError(f"rank must be below the {world_size(config)} ranks (data_parallel x tensor_parallel x "
                          f"pipeline_parallel), got {rank}")
    if config.get("zero", 0) and config.get("mode", "train") != "train":
        raise ConfigError(f"zero {config['zero']} shards training state: it needs mode train, got {config['mode']}")


DEFAULT_FAMILY = "mlp"  # the family a config without `model` (the CLI without --model, a spec's grid) means
# name -> module in this package
_BUILTIN = {"mlp": "mlp", "seed": "seed", "gpt": "gpt", "cnn": "cnn", "llama": "llama"}
_LOADED: dict[str, Family] = {}


def builtin_names() -> tuple[str, ...]:
    """Built-in families whose module exists in this installation."""
    here = Path(__file__).parent
    return tuple(name for name, module in _BUILTIN.items() if (here / f"{module}.py").exists())


def _from_file(spec: str) -> Family:
    path_text, _, class_name = spec.rpartition(":")
    path = Path(path_text)
    if not class_name or not path_text:
        raise ConfigError(f"model {spec!r}: a model file is given as path/to/file.py:ClassName")
    if not path.is_file():
        raise ConfigError(f"model {spec!r}: no file {path}")
    module_name = "memstudy_user_model_" + re.sub(r"\W", "_", str(path.resolve()))
    module = sys.modules.get(module_name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"model {spec!r}: {path} is not a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: report its error in one line
            del sys.modules[module_name]
            raise ConfigError(f"model {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    target = getattr(module, class_name, None)
    if target is None:
        raise ConfigError(f"model {spec!r}: {path} has no {class_name}")
    if isinstance(target, type) and issubclass(target, Family):
        family = target()
    else:
        family = target
    if not isinstance(family, Family):
        raise ConfigError(f"model {spec!r}: {class_name} is not a memstudy.nn.models.Family")
    family.name = spec  # the row's `model` column names the file, so the cell process can load it again
    return family


def get_family(name: Any) -> Family:
    """The family called `name` (a built-in name, or path/to/file.py:ClassName); ConfigError otherwise."""
    if name is None:
        name = DEFAULT_FAMILY
    if not isinstance(name, str):
        raise ConfigError(f"model must be a name or path/to/file.py:ClassName, got {name!r}")
    family = _LOADED.get(name)
    if family is not None:
        return family
    if name in _BUILTIN and name in builtin_names():
        module = importlib.import_module(f"{__package__}.{_BUILTIN[name]}")
        family = module.FAMILY
    elif ":" in name and name.split(":")[0].endswith(".py"):
        family = _from_file(name)
    else:
        allowed = ", ".join(builtin_names())
        raise ConfigError(f"model must be one of {allowed} or path/to/file.py:ClassName, got {name!r}"
                          + did_you_mean(name, builtin_names()))
    _LOADED[name] = family
    return family


def normalize(raw: dict[str, Any]) -> dict[str, Any]:
    """A checked config for the family `raw['model']` names (default DEFAULT_FAMILY)."""
    return get_family(raw.get("model")).normalize(raw)


def all_field_names() -> tuple[str, ...]:
    """`model`, the shared fields, then every built-in family's own fields in registry order, then the precision
    fields (the row's model columns)."""
    names = ["model", *(n for n in SHARED_NAMES if n not in LATE_SHARED_FIELDS)]
    for family_name in builtin_names():
        for f in get_family(family_name).fields:
            if f.name not in names:
                names.append(f.name)
    # the precision fields came after the families' own: columns are only ever appended (study/fields.py); the
    # parallel fields came later still (run/results/fields.py appends them at the row's end)
    return tuple(n for n in names if n not in PARALLEL_NAMES) + LATE_SHARED_FIELDS


Builder = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class GraphNames:
    """A family's notation for `memstudy graph`: names of parameters (by `id` of the tensor) and of op outputs
    (`output(op name, layer)`, None to number it)."""

    parameters: dict[int, str]
    output: Callable[[str, int | None], str | None]

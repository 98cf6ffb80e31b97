"""The search space: which ways of training a model on given machines are admissible, read from the registry.

An axis is a field the family declares (`Family.all_fields()`), or the registry's `precision` shorthand; a field this
installation does not have is simply not an axis (a plan made before tensor parallelism existed has no
`tensor_parallel` column). The axes, and what each may take (`Choices`):

    precision          PyTorch Lightning's names (and memstudy's bf16-master / 16-master): dtype, autocast, master
                       weights and loss scaling together (registry.PRECISIONS)
    optimizer          sgd, momentum, adam
    checkpoint         none, selective (a family's own), sqrt, every:K
    attention          flash by default, eager on request (when the family declares the field)
    lora_rank          0 (full fine-tuning) or a rank
    tensor_parallel    t: divisors of the devices; pipeline_parallel p: 1 unless asked (--pipeline-parallel);
                       data_parallel N = devices / (t·p)
    sequence_parallel  off, and on where t > 1
    zero               0-3, where N > 1
    micro-batch        b; microbatches m = global batch / (b·N) when the family has the field (the rank's step
                       then runs batch_size = b·m examples as m microbatches of b: gradient accumulation, or a
                       pipeline's microbatches), else the rank's batch is global batch / N

A combination is admissible when the devices multiply out (N·t·p = devices, or one device without data
parallelism), the global batch divides out, and the family's own `normalize` accepts it (t dividing the heads, p
the depth, ...: its one-line ConfigError says why not, and the plan counts it as such).

Combinations that give the same rank graph are one `rank_key`: the plan predicts each key once. The rules are
the parallel issue's own (issue 26): ZeRO with one data-parallel rank changes nothing, nor does sequence
parallelism without tensor parallelism, nor the schedule without pipeline stages. Each rule applies only where
both of its fields exist, and `tests/test_plan.py` checks that the merged combinations predict the same bytes.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..config import ConfigError
from ..nn.models.registry import PRECISIONS, Family

# the defaults keep a plan of an 8B model on 8 devices within a minute here; each axis takes more on request
DEFAULT_PRECISIONS = ("bf16-mixed", "bf16-master")
DEFAULT_ATTENTION = "flash"  # when the family declares the field: the fused kernel (eager on request)
DEFAULT_CHECKPOINTS = ("none", "selective", "every:1")  # every:1: each layer recomputed (Megatron's "full")
DEFAULT_MICRO_BATCHES = (1, 2, 4, 8)
PARALLEL_FIELDS = ("data_parallel", "tensor_parallel", "sequence_parallel", "pipeline_parallel", "zero",
                   "microbatches")
# (field, value it is equivalent to, condition fields: the rule holds when each of these has this value)
EQUIVALENT: tuple[tuple[str, Any, dict[str, Any]], ...] = (
    ("zero", 0, {"data_parallel": 1}),
    ("sequence_parallel", False, {"tensor_parallel": 1}),
    ("schedule", "1f1b", {"pipeline_parallel": 1}),
)


class PlanError(ConfigError):
    """Bad input to the planner, or nothing fits: one line, exit status 2."""


@dataclass(frozen=True)
class Machines:
    """The devices a plan may use: how many, the memory of each, and how much of it is kept back (`reserve_bytes`,
    for what the ledger does not count: see plan/search.py's footer)."""

    devices: int
    device_memory_bytes: int
    reserve_bytes: int
    devices_per_node: int | None = None

    @property
    def usable_bytes(self) -> int:
        return self.device_memory_bytes - self.reserve_bytes


@dataclass
class Choices:
    """What each axis may take; None: the axis's default (module docstring). Values for an axis the family does not
    declare are refused (`check`)."""

    precision: tuple[str, ...] | None = None
    optimizer: tuple[str, ...] | None = None
    checkpoint: tuple[str, ...] | None = None
    attention: tuple[str, ...] | None = None
    lora_rank: tuple[int, ...] | None = None
    tensor_parallel: tuple[int, ...] | None = None
    pipeline_parallel: tuple[int, ...] | None = None
    sequence_parallel: tuple[bool, ...] | None = None
    zero: tuple[int, ...] | None = None
    micro_batch: tuple[int, ...] | None = None

    FLAGS = {"precision": "--precision", "optimizer": "--optimizer", "checkpoint": "--checkpoint",
             "attention": "--attention", "lora_rank": "--lora-rank", "tensor_parallel": "--tensor-parallel",
             "pipeline_parallel": "--pipeline-parallel", "sequence_parallel": "--sequence-parallel", "zero": "--zero",
             "micro_batch": "--micro-batch"}


@dataclass
class Space:
    """The admissible combinations of one plan, as raw configurations (each normalized once, here)."""

    family: Family
    axes: tuple[str, ...]  # the axes that exist for this family, in the table's order
    configs: list[dict[str, Any]] = field(default_factory=list)  # normalized, admissible
    refused: dict[str, int] = field(default_factory=dict)  # the family's reason -> how many combinations
    considered: int = 0  # every combination formed, admissible or not


def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def field_names(family: Family) -> set[str]:
    return {f.name for f in family.all_fields()}


def axes_of(family: Family) -> tuple[str, ...]:
    """The axes this family's fields make (module docstring), in the table's order."""
    names = field_names(family)
    axes = ["precision", "optimizer", "checkpoint"]
    axes += [name for name in ("attention", "lora_rank", "data_parallel", "tensor_parallel", "sequence_parallel",
                               "pipeline_parallel", "zero") if name in names]
    axes.append("batch_size")
    if "microbatches" in names:
        axes.append("microbatches")
    return tuple(axes)


def _check_choices(family: Family, choices: Choices) -> None:
    names = field_names(family)
    for axis in ("attention", "lora_rank", "tensor_parallel", "pipeline_parallel", "sequence_parallel", "zero"):
        if getattr(choices, axis) is not None and axis not in names:
            raise PlanError(f"{Choices.FLAGS[axis]}: model {family.name!r} has no {axis} field in this memstudy, so "
                            f"the plan cannot vary it")
    if choices.precision is not None:
        for name in choices.precision:
            if name not in PRECISIONS:
                raise PlanError(f"--precision must name some of {', '.join(PRECISIONS)}, got {name!r}")


def rank_key(config: dict[str, Any]) -> tuple:
    """What identifies the rank graph a normalized configuration runs (module docstring): the configuration with each
    field an `EQUIVALENT` rule makes irrelevant set to its equivalent value."""
    canonical = dict(config)
    for name, value, when in EQUIVALENT:
        if name in canonical and all(canonical.get(k, v) == v for k, v in when.items()):
            canonical[name] = value
    return tuple(sorted((k, repr(v)) for k, v in canonical.items()))


def enumerate_space(family: Family, base: dict[str, Any], machines: Machines, global_batch: int,
                    choices: Choices) -> Space:
    """Every combination of the choices on these machines, checked (module docstring)."""
    _check_choices(family, choices)
    names = field_names(family)
    space = Space(family, axes_of(family))
    precisions = choices.precision or DEFAULT_PRECISIONS
    optimizers = choices.optimizer or ("adam",)
    checkpoints = choices.checkpoint or tuple(c for c in DEFAULT_CHECKPOINTS
                                              if c != "selective" or "selective" in family.checkpoints)
    attentions = choices.attention or ((None,) if "attention" not in names else (DEFAULT_ATTENTION,))
    loras = choices.lora_rank or ((None,) if "lora_rank" not in names else (0,))
    devices = machines.devices
    tps = choices.tensor_parallel or ((None,) if "tensor_parallel" not in names else _divisors(devices))
    pps = choices.pipeline_parallel or ((None,) if "pipeline_parallel" not in names else (1,))
    sps = choices.sequence_parallel or ((None,) if "sequence_parallel" not in names else (False, True))
    zeros = choices.zero or ((None,) if "zero" not in names else (0, 1, 2, 3))
    micro = choices.micro_batch or DEFAULT_MICRO_BATCHES
    has_dp, has_m = "data_parallel" in names, "microbatches" in names
    if choices.micro_batch is not None and not has_m:
        raise PlanError(f"--micro-batch: model {family.name!r} has no microbatches field in this memstudy, so the "
                        f"micro-batch is the global batch over the data-parallel ranks")
    for precision, optimizer, checkpoint, attention, lora, tp, pp, sp, zero, b in itertools.product(
            precisions, optimizers, checkpoints, attentions, loras, tps, pps, sps, zeros, micro if has_m else (0,)):
        t, p = tp or 1, pp or 1
        if has_dp:
            if devices % (t * p):
                continue  # not a way to use these devices: not a combination at all
            n = devices // (t * p)
        else:
            if t * p != devices and t * p != 1:
                continue
            n = 1
        if not has_m:  # no gradient accumulation to model: each rank's batch is its share of the global batch
            b = max(1, global_batch // n)
        # combinations a rule makes identical are formed once (the rank_key would merge them anyway)
        if sp and t == 1 or (zero and n == 1):
            continue
        space.considered += 1
        if global_batch % (b * n):
            _refuse(space, f"the global batch {global_batch} is not a multiple of micro-batch × data parallel")
            continue
        m = global_batch // (b * n)
        # the rank's batch per step is b·m, split into m microbatches of b (the microbatches field's meaning)
        raw = {**base, "precision": precision, "optimizer": optimizer, "checkpoint": checkpoint,
               "batch_size": b * m if has_m else b, "mode": "train"}
        for name, value in (("attention", attention), ("lora_rank", lora), ("tensor_parallel", tp),
                            ("pipeline_parallel", pp), ("sequence_parallel", sp), ("zero", zero)):
            if value is not None:
                raw[name] = value
        if has_dp:
            raw["data_parallel"] = n
        if has_m:
            raw["microbatches"] = m
        try:
            config = family.normalize({**raw, "model": family.name})
        except ConfigError as exc:
            _refuse(space, str(exc))
            continue
        space.configs.append(config)
    return space


def _refuse(space: Space, reason: str) -> None:
    space.refused[reason] = space.refused.get(reason, 0) + 1


def micro_batch(config: dict[str, Any]) -> int:
    """Examples per microbatch: the rank's batch over its microbatches."""
    return config["batch_size"] // (config.get("microbatches") or 1)


def describe_axes(config: dict[str, Any], axes: tuple[str, ...]) -> dict[str, Any]:
    """The values of a normalized configuration on the plan's axes (precision by its name, batch_size as the
    micro-batch)."""
    out: dict[str, Any] = {}
    for axis in axes:
        out[axis] = (precision_name(config) if axis == "precision" else micro_batch(config) if axis == "batch_size"
                     else config.get(axis))
    return out


def precision_name(config: dict[str, Any]) -> str:
    """The `precision` name whose four fields the configuration has."""
    values = tuple(config.get(k) for k in ("dtype", "autocast", "master_weights", "loss_scale"))
    for name, fields in PRECISIONS.items():
        if fields == values:
            return name
    return f"{config['dtype']}"


def iter_groups(configs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The configurations grouped by everything but the micro-batch, each group by ascending micro-batch (the order
    in which the search may stop early: see plan/search.py)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for config in configs:
        key = tuple(sorted((k, repr(v)) for k, v in config.items() if k not in ("batch_size", "microbatches")))
        groups.setdefault(key, []).append(config)
    for members in groups.values():
        yield sorted(members, key=micro_batch)


__all__ = ["Choices", "DEFAULT_CHECKPOINTS", "DEFAULT_MICRO_BATCHES", "DEFAULT_PRECISIONS", "EQUIVALENT", "Machines",
           "PlanError", "Space", "axes_of", "describe_axes", "enumerate_space", "iter_groups", "micro_batch",
           "precision_name", "rank_key"]

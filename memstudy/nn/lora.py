"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as peft applies it.

`add_lora(model, rank=, alpha=, targets=)` is peft's `get_peft_model(model, LoraConfig(r=, lora_alpha=,
target_modules=))` on a memstudy model: every parameter is frozen (`requires_grad = False`: model state, which the
ledger still registers, but no gradient and no optimiser state), and each target `Linear` becomes a `LoraLinear`
that keeps the frozen weight (and bias) under its own name (`...q_proj.weight`) and adds two trainable Linears,
`lora_A` (r × in, Kaiming-uniform as peft initialises it: U(−1/√in, 1/√in)) and `lora_B` (out × r, zeros), named as
peft names them without the adapter name (`...q_proj.lora_A.weight`, `...q_proj.lora_B.weight`). Output:
base(x) + (alpha / r) · lora_B(lora_A(x)), in peft's order of operations (lora_dropout 0: no dropout op).

What it saves, by the engine's own rules (nothing here special-cases memory): gradients and optimiser state
exist for the adapters only (Ψ_trainable instead of Ψ); a frozen Linear keeps no input for its weight's gradient,
only its weight (a parameter) to pass the gradient on; and a frozen weight whose input needs no gradient either
(the first layers, below the first adapter) records no graph at all.

Targets match as peft's `target_modules` list does: a Linear whose dotted name equals a target or ends with
"." + target; `all-linear` is every Linear but the model's output head (its `output_layer_name`, as peft leaves out
the output embedding). A target that matches no Linear, or a rank above a target's smaller dimension, is a
ValueError naming it. Families declare the three config fields with `lora_fields`, build through
`apply_lora_config` and check through `check_lora_config`.

16-bit models: peft keeps float16/bfloat16 adapters in float32 (`autocast_adapter_dtype`, on by default), casts the
input to the adapters' dtype (`_cast_input_dtype`: a float32 copy of x, which lora_A keeps for its gradient) and the
sum back to the base's (`result.to(torch_result_dtype)`); `LoraLinear.forward` does the same, with autocast's
`Cast` op.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np

from ..autograd import Tensor, apply, meta
from ..autograd.autocast import Cast
from ..autograd.precision import is_low
from ..autograd import ops
from . import init, repeat
from .layers import Linear, Module
from .models.registry import ConfigError, Field

ALL_LINEAR = "all-linear"
DEFAULT_ALPHA = 8.0  # peft's LoraConfig default lora_alpha (and r = 8)


def lora_fields(default_targets: str) -> tuple[Field, ...]:
    """The three LoRA config fields, with a family's default targets (peft's default for that model type)."""
    return (
        Field("lora_rank", int, 0, "LoRA rank r: adapters lora_A (r x in) and lora_B (out x r) beside each target "
              "Linear, every other parameter frozen; 0: off (full fine-tuning)", minimum=0, optional=True),
        Field("lora_alpha", float, DEFAULT_ALPHA, "LoRA alpha: the adapters' output is scaled by alpha / r",
              minimum=0.0, optional=True),
        Field("lora_targets", str, default_targets, "the Linears that get adapters, comma-separated: a Linear matches "
              "when its name is a target or ends with .target (peft's rule), or all-linear (every Linear but the "
              "output head)", optional=True),
    )


def adapter_dtype(base: np.dtype) -> np.dtype:
    """The adapters' dtype beside a base weight of dtype `base`: the same, but float32 for a 16-bit base (peft's
    `autocast_adapter_dtype`, on by default)."""
    base = np.dtype(base)
    return np.dtype(np.float32) if is_low(base) else base


class LoraLinear(Linear):
    """A frozen Linear with a low-rank adapter beside it: base(x) + (alpha / r) · lora_B(lora_A(x))."""

    def __init__(self, base: Linear, rank: int, alpha: float, rng: np.random.Generator):
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the frozen base keeps its parameters and their names
        dtype = adapter_dtype(self.weight.dtype)
        bound = 1.0 / np.sqrt(self.in_features)  # kaiming_uniform_(a=√5) on (r, in): U(−1/√in, 1/√in)
        self.lora_A = Linear.from_weight(Tensor(init.uniform(rng, -bound, bound, (rank, self.in_features), dtype),
                                                requires_grad=True, name="weight"))
        self.lora_B = Linear.from_weight(Tensor(init.constant(0.0, (self.out_features, rank), dtype),
                                                requires_grad=True, name="weight"))
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank

    def forward(self, x: Any) -> Tensor:
        result = apply(ops.Linear, x, self.weight) if self.bias is None else apply(ops.Linear, x, self.weight,
                                                                                  self.bias)
        dtype = self.lora_A.weight.dtype
        if x.dtype != dtype:  # a 16-bit base: the adapters read a float32 copy of x (peft's _cast_input_dtype)
            x = apply(Cast, x, dtype=dtype)
        adapted = apply(ops.Linear, apply(ops.Linear, x, self.lora_A.weight), self.lora_B.weight)
        out = result + adapted * self.scaling
        return out if out.dtype == result.dtype else apply(Cast, out, dtype=result.dtype)


def parse_targets(targets: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Target names from "q_proj, v_proj" or a list; ValueError when there is none."""
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    names = tuple(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
    if not names:
        raise ValueError(f"lora_targets names no Linear, got {targets!r}")
    return names


def lora_targets(model: Module, rank: int, targets: str | list[str] | tuple[str, ...]) -> list[tuple[str, Linear]]:
    """(name, Linear) of every Linear the targets choose, in the model's order; ValueError naming a target that
    matches nothing or a Linear too small for `rank`."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"lora_rank must be a positive integer, got {rank!r}")
    names = parse_targets(targets)
    if repeat.is_compressing() and any(part.isdigit() for name in names for part in name.split(".")):
        # one block of a stack chosen by its index: the built blocks cannot stand for the others
        raise repeat.NotRepeatable(f"lora_targets {', '.join(names)} name a block by its index")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, Linear) and name]
    if ALL_LINEAR in names:
        if len(names) > 1:
            raise ValueError(f"lora_targets: {ALL_LINEAR} stands alone, got {', '.join(names)}")
        head = getattr(model, "output_layer_name", None)
        chosen = [(n, m) for n, m in linears if n != head]
    else:
        for target in names:
            if not any(n == target or n.endswith("." + target) for n, _ in linears):
                raise ValueError(f"lora_targets: {target!r} matches no Linear of the model (its Linears: "
                                 f"{_names_shown(n for n, _ in linears)})")
        chosen = [(n, m) for n, m in linears if any(n == t or n.endswith("." + t) for t in names)]
    if any(isinstance(m, LoraLinear) for _, m in chosen):
        raise ValueError("the model has LoRA adapters already")
    for name, m in chosen:
        if rank > min(m.in_features, m.out_features):
            raise ValueError(f"lora_rank {rank} is above the dimensions of {name} ({m.in_features} -> "
                             f"{m.out_features}): at most {min(m.in_features, m.out_features)}")
    if not chosen:
        raise ValueError(f"lora_targets {', '.join(names)} chose no Linear")
    return chosen


def _names_shown(names: Any, most: int = 12) -> str:
    """The Linears' names as targets name them: the last part (its parent too when that part is a list index)."""
    shown = []
    for name in names:
        parts = name.split(".")
        short = ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]
        if short not in shown:
            shown.append(short)
    return ", ".join(shown[:most]) + (f", ... ({len(shown)} in all)" if len(shown) > most else "")


def _replace(model: Module, name: str, new: Module) -> None:
    *path, last = name.split(".")
    parent: Any = model
    for part in path:
        parent = parent[int(part)] if isinstance(parent, (list, tuple)) else getattr(parent, part)
    if isinstance(parent, list):
        parent[int(last)] = new
    else:
        setattr(parent, last, new)


def add_lora(model: Module, rank: int, alpha: float = DEFAULT_ALPHA,
             targets: str | list[str] | tuple[str, ...] = ("q_proj", "v_proj"), seed: int = 0) -> Module:
    """LoRA adapters beside the target Linears, in place, every other parameter frozen (peft's `get_peft_model`);
    returns the model. The adapters' lora_A are drawn from `seed` (lora_B are zeros)."""
    chosen = lora_targets(model, rank, targets)
    for p in model.parameters():
        p.requires_grad = False
    rng = np.random.default_rng(seed)
    for name, linear in chosen:
        _replace(model, name, LoraLinear(linear, int(rank), float(alpha), rng))
    return model


def apply_lora_config(model: Module, config: dict[str, Any]) -> Module:
    """`add_lora` with a (normalized) config's lora_rank, lora_alpha and lora_targets; the model itself at rank 0."""
    if not config.get("lora_rank"):
        return model
    return add_lora(model, config["lora_rank"], config["lora_alpha"], config["lora_targets"],
                    seed=config["seed"] + 2)  # + 2: the weights draw from seed, the batch from seed + 1


def check_lora_config(build: Callable[[dict[str, Any]], Module], config: dict[str, Any]) -> None:
    """ConfigError (one line) when the LoRA fields cannot apply to the model `build(config)` makes: a target that
    matches nothing, a rank above a target's dimensions. The model is built shape-only (nothing is allocated).
    Also puts lora_targets in canonical form ("q_proj,v_proj")."""
    try:
        config["lora_targets"] = ",".join(parse_targets(config["lora_targets"]))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not config.get("lora_rank"):
        return
    for compressed in (True, False):  # repeated blocks built once (nn.repeat), unless a target names one of them
        with meta.meta_mode(), repeat.compressing() if compressed else contextlib.nullcontext():
            model = build(config)
            try:
                lora_targets(model, config["lora_rank"], config["lora_targets"])
            except repeat.NotRepeatable:
                continue
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return


__all__ = ["ALL_LINEAR", "LoraLinear", "add_lora", "adapter_dtype", "apply_lora_config", "check_lora_config",
           "lora_fields", "lora_targets", "parse_targets"]

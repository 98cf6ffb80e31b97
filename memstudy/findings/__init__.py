"""The report's findings: one module per study's findings, each a plug-in with one signature.

A findings module defines

    FIGURES: tuple[str, ...]                 the PNG files it may write (a report removes those it no longer does)
    def applies(study: Study) -> bool        from the rows: which fields vary, what the rows' families declare
    def blocks(study: Study) -> list[Block]  its sections, as `memstudy.report.document` blocks

where `Study` is `memstudy.report.context.Study`. A family lists the findings that describe it
(`Family.findings`): a plain name is a module of this package, a dotted name a module of your own. No finding
is chosen by a model's name; a family that lists none gets the generic report only.

Built in: `mlp` (the MLP's laws: width × itemsize per layer per example, the inputs' share), `remedies`
(checkpointing, saved-tensor policies, optimisers), `precision` (dtypes, autocast, master weights, loss scaling:
what 16 bits buy, category by category), `attention` (a GPT against sequence length and the Megatron-LM formula,
`megatron`), `cnn` (where a CNN keeps its memory), `generation` (a prefill and decode steps with a KV cache beside
training and inference of the same model), `llama` (what grouped-query attention and LoRA save, category by
category, with the ledger's buffers as evidence; training ÷ inference per setting), `parallel` (one rank's bytes by
category under tensor, sequence and pipeline parallelism and ZeRO, which strategy cuts which category, Korthikanti
et al.'s activations and ZeRO's Table 1 beside the ledger's).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

BUILTIN = ("mlp", "remedies", "precision", "attention", "cnn", "generation", "llama", "parallel")  # in report order
SIGNATURE = ("FIGURES", "applies", "blocks")


class FindingsError(ValueError):
    """A family names findings that cannot be loaded or lack the signature; one-line message."""


def load(name: str) -> ModuleType:
    """The findings module `name` (a built-in name or a dotted module path), checked for the signature."""
    path = f"{__name__}.{name}" if "." not in name else name
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise FindingsError(f"findings {name!r}: cannot import {path} ({exc})") from None
    missing = [attr for attr in SIGNATURE if not hasattr(module, attr)]
    if missing:
        raise FindingsError(f"findings {name!r}: {path} has no {missing[0]}")
    return module


def declared(study: Any) -> list[str]:
    """The findings the rows' families list: the built-in ones in report order, then any others as listed."""
    names: list[str] = []
    for model in study.models:
        for name in study.findings_of(model):
            if name not in names:
                names.append(name)
    return [n for n in BUILTIN if n in names] + [n for n in names if n not in BUILTIN]


def applicable(study: Any) -> list[ModuleType]:
    """The declared findings whose `applies` says the rows support them, in report order."""
    return [module for module in map(load, declared(study)) if module.applies(study)]


def all_figures() -> tuple[str, ...]:
    """Every PNG a built-in finding may write."""
    return tuple(name for finding in BUILTIN for name in load(finding).FIGURES)

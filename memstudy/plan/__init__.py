"""`memstudy plan`: which ways of training a model fit the machines, ranked by a stated cost model.

The data flow, one module each: space.py (the admissible combinations, axes read from the registry's fields) →
evaluate.py (each distinct rank graph predicted once, by the predictor `memstudy predict` uses) → cost.py (step
seconds from the graph's FLOPs, recomputed FLOPs, communication bytes and the pipeline bubble) → search.py (fits or
not, ranked; the reserve and what it stands for) → output.py (table, JSON Lines, the chosen breakdown).
`plan(...)` below ties them together for the CLI and for tools/published.
"""
from __future__ import annotations

from typing import Any

from .space import Choices, Machines, PlanError


def model_fields(model: str | None, hf_config: str | None, seq_len: int | None) -> tuple[Any, dict[str, Any]]:
    """(family, the model's fields): from a Hugging Face config.json, or a family's defaults; `seq_len` set."""
    from ..nn.models.hf_config import hf_config_fields
    from ..nn.models.registry import get_family

    if hf_config is not None:
        family, fields = hf_config_fields(hf_config, model)
    else:
        family, fields = get_family(model), {}
    fields = dict(fields)
    if seq_len is not None:
        if "seq_len" not in {f.name for f in family.all_fields()}:
            raise PlanError(f"--seq-len: model {family.name!r} has no seq_len field")
        fields["seq_len"] = seq_len
    return family, fields


def plan(model: str | None, hf_config: str | None, seq_len: int | None, global_batch: int, machines: Machines,
         choices: Choices | None = None, progress: bool = False, fields: dict[str, Any] | None = None,
         jobs: int | None = None):
    """The plan's result (search.PlanResult): every admissible combination predicted, the fitting ones ranked."""
    from .search import search

    family, base = model_fields(model, hf_config, seq_len)
    base.update(fields or {})
    return search(family, base, machines, global_batch, choices or Choices(), progress=progress, jobs=jobs)


__all__ = ["Choices", "Machines", "PlanError", "model_fields", "plan"]

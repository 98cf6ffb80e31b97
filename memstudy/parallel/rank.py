"""Which rank a row accounts for, and what the row says about it (the row's figures are that rank's)."""
from __future__ import annotations

from typing import Any

from ..nn.models.registry import world_size


def is_parallel(config: dict[str, Any]) -> bool:
    """Whether the configuration spans more than one rank, or asks for ZeRO (which on one rank changes nothing)."""
    return world_size(config) > 1 or bool(config.get("zero"))


def accounted_rank(config: dict[str, Any]) -> tuple[int, str]:
    """(rank, why): the config's `rank` ("given"), else the rank with the largest peak ("largest peak"). Under data
    parallelism and ZeRO every rank holds alike shards (each parameter split into equal, padded parts), so rank 0
    has the largest peak (tied with every other)."""
    rank = config.get("rank")
    if rank is not None:
        return rank, "given"
    if (config.get("pipeline_parallel") or 1) > 1:  # stages differ: the first is the one the papers account
        return 0, "first stage"
    return 0, "largest peak"


def data_parallel_rank(config: dict[str, Any]) -> int:
    """The accounted rank's place in its data-parallel group, in Megatron-LM's rank order (tensor-parallel fastest,
    then data-parallel, then pipeline; `pipeline.stage_of` reads the same order for the stage)."""
    t, n = config.get("tensor_parallel") or 1, config.get("data_parallel") or 1
    return ((config.get("rank") or 0) // t) % n


def notes(config: dict[str, Any]) -> list[str]:
    """Lines the output prints about the ranks: which one the figures are, and a ZeRO stage that changes nothing."""
    if not is_parallel(config):
        return []
    n = config.get("data_parallel") or 1
    rank, why = accounted_rank(config)
    lines = []
    if world_size(config) > 1:
        which = {"given": "given by rank", "largest peak": "the rank with the largest peak",
                 "first stage": "the first pipeline stage (under 1f1b it holds p microbatches; rank picks another "
                                "stage)"}[why]
        alike = f" (all {n} data-parallel ranks hold alike shards)" if world_size(config) == n else ""
        lines.append(f"figures of rank {rank} of {world_size(config)}: {which}{alike}")
    if config.get("zero") == 3 and n > 1:
        lines.append("parameters: this rank's parts (each parameter of fewer than param_persistence_threshold "
                     "elements whole); gradients and optimizer state: its parts")
    elif config.get("zero") and n > 1:
        lines.append(f"zero {config['zero']}: optimizer state{' and gradients' if config['zero'] == 2 else ''}: "
                     "this rank's parts")
    if config.get("zero") and n == 1:
        lines.append(f"zero {config['zero']} with data_parallel 1: one rank holds every shard, so ZeRO changes "
                     "nothing (the figures are one device's)")
    return lines


def row_fields(config: dict[str, Any], shape_only: bool) -> dict[str, Any]:
    """The row's columns about its rank (run/results/fields.py: PARALLEL_ROW_FIELDS); empty on one device."""
    if not is_parallel(config):
        return {"accounted_rank": None, "rank_choice": None, "shape_only": shape_only}
    rank, why = accounted_rank(config)
    return {"accounted_rank": rank, "rank_choice": why, "shape_only": shape_only}

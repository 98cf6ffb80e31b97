"""Which parallel strategy cuts which category of a rank's memory: one rank's predicted step (its graph run on
shape-only arrays: bytes exact for that graph, no timings) under tensor, sequence and pipeline parallelism, selective
recomputation and ZeRO, category by category, with Korthikanti et al.'s activation expression beside the ledger's
activations where it applies.

`strategy_rows(base)` predicts the rank of each strategy in `STRATEGIES` for one base configuration (a GPT or a
Llama); the paper's expression is computed for the GPT only (its terms are a GPT block's: megatron.py), as
L·(per-layer bytes of Table 2's row) for the layers and microbatches the rank holds when its forward ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import korthikanti

CATEGORIES = ("parameter", "gradient", "optimizer_state", "activation", "communication")

# (label, the fields it sets on the base configuration)
STRATEGIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("one device", {}),
    ("t 8", {"tensor_parallel": 8}),
    ("t 8 + sequence parallel", {"tensor_parallel": 8, "sequence_parallel": True}),
    ("t 8 + sequence parallel + selective", {"tensor_parallel": 8, "sequence_parallel": True,
                                             "checkpoint": "selective"}),
    ("p 4, 1f1b, m 8 (first stage)", {"pipeline_parallel": 4, "microbatches": 8, "schedule": "1f1b"}),
    ("p 4, gpipe, m 8 (first stage)", {"pipeline_parallel": 4, "microbatches": 8, "schedule": "gpipe"}),
    ("t 8 + sp + selective, p 4, 1f1b, m 8", {"tensor_parallel": 8, "sequence_parallel": True,
                                              "checkpoint": "selective", "pipeline_parallel": 4, "microbatches": 8,
                                              "schedule": "1f1b"}),
    ("ZeRO 1, N 8", {"data_parallel": 8, "zero": 1}),
    ("ZeRO 3, N 8", {"data_parallel": 8, "zero": 3}),
)


@dataclass(frozen=True)
class StrategyRow:
    label: str
    config: dict[str, Any]
    bytes_by_category: dict[str, int]  # parameter, optimizer state: registered; the others: their largest live
    peak_bytes: int
    formula_activation_bytes: int | None  # the paper's layers' activations for the GPT (None: not applicable)


def formula_activations(config: dict[str, Any]) -> int | None:
    """Korthikanti et al.'s bytes for what the rank's blocks hold when its forward ends: per layer Table 2's row for
    (t, sequence parallel, selective), times the layers and microbatches in flight (1F1B: the first stage holds p
    microbatches of L/p layers; GPipe: m). None for a Llama (not the paper's block), ZeRO (not an activation
    strategy) or a dtype that is not 2 bytes."""
    if config["model"] != "gpt" or config.get("zero") or config["dtype"] not in ("bfloat16", "float16") \
            or not config.get("dropout"):
        return None
    t, sp = config.get("tensor_parallel") or 1, bool(config.get("sequence_parallel"))
    selective = config["checkpoint"] == "selective"
    if config["checkpoint"] not in ("none", "selective"):
        return None
    setting = next(s for s in korthikanti.settings(t) if s.tensor_parallel == t and s.sequence_parallel == sp
                   and s.checkpoint == ("selective" if selective else "none"))
    p, m = config.get("pipeline_parallel") or 1, config.get("microbatches") or 1
    micro = config["batch_size"] // m
    layers = config["depth"] // p
    in_flight = m if (config.get("schedule") == "gpipe" or p == 1) else min(p, m)
    per_layer = korthikanti.formula_bytes(setting, config["seq_len"], micro, config["width"], config["heads"])
    return per_layer * layers * in_flight


def strategy_rows(base: dict[str, Any], strategies: tuple = STRATEGIES) -> list[StrategyRow]:
    """Each strategy's rank predicted from `base` (a raw configuration)."""
    from ..config import normalize
    from ..measure.predict import memoised_account

    rows = []
    for label, fields in strategies:
        config = normalize({**base, **fields})
        account = memoised_account(config)
        registered = account.registered_bytes
        by_category = {"parameter": registered["parameter"], "optimizer_state": registered["optimizer_state"],
                       "gradient": account.max_by_category["gradient"], "activation": account.activation_bytes,
                       "communication": account.max_by_category.get("communication", 0)}
        rows.append(StrategyRow(label, config, by_category, account.peak_bytes, formula_activations(config)))
    return rows


def cuts(rows: list[StrategyRow]) -> dict[str, list[str]]:
    """label -> the categories it holds at most half of one device's (the first row's), computed from the rows."""
    one = rows[0].bytes_by_category
    return {r.label: [c for c in CATEGORIES if one[c] and r.bytes_by_category[c] * 2 <= one[c]] for r in rows[1:]}


__all__ = ["CATEGORIES", "STRATEGIES", "StrategyRow", "cuts", "formula_activations", "strategy_rows"]

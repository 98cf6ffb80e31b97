"""Korthikanti et al. 2022's Table 2, row by row and term by term, from one rank's graph run on shape-only arrays.

"Reducing Activation Recomputation in Large Transformer Models" (Table 2) counts the bytes one transformer layer
holds for backward on one rank, with 16-bit activations and 1-byte dropout masks, under tensor parallelism t,
sequence parallelism, selective and full recomputation. Each row here is the predictor's account of one GPT block
of the paper's 22B configuration (h 6144, a 64, s 2048, t 8; micro-batch b = 1: every row is linear in b) in
bfloat16 with dropout, the block built as the rank builds it (memstudy/parallel/tensor.py) and its saved buffers
sorted into the paper's terms by `megatron.block_rows`. What the engine holds beyond the paper's count (the layer
norms' float32 statistics) and the largest buffer a collective of the layer makes (transient, never held for
backward) are lines of their own.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import megatron

# the paper's 22B configuration (Table 3) and its sequence length; the vocabulary is theirs (51,200) though the
# head is outside the layer; b = 1
CONFIG_22B = dict(width=6144, heads=64, seq_len=2048, vocab=51200)
TENSOR_PARALLEL_22B = 8
BATCH = 1
DROPOUT = 0.1  # any p > 0: the masks exist (their size does not depend on p)


@dataclass(frozen=True)
class Setting:
    label: str
    formula: str  # the paper's expression
    tensor_parallel: int
    sequence_parallel: bool
    checkpoint: str  # none | selective | every:1 (full recomputation: each layer's input only)

    def coefficients(self, s: int, h: int, a: int, t: int) -> tuple[float, float]:
        """(linear, quadratic) of the paper's expression: bytes = s·b·h·(linear + quadratic·a·s/h)."""
        t = self.tensor_parallel
        if self.checkpoint == "every:1":
            return 2.0, 0.0
        sharded = 1 / t
        quadratic = 0.0 if self.checkpoint == "selective" else 5 * sharded
        linear = 34 * sharded if self.sequence_parallel else 10 + 24 * sharded
        return linear, quadratic


def settings(t: int = TENSOR_PARALLEL_22B) -> tuple[Setting, ...]:
    """Table 2's six rows at tensor-parallel size t."""
    return (
        Setting("no parallelism", "sbh(34 + 5as/h)", 1, False, "none"),
        Setting("tensor parallel (baseline)", "sbh(10 + 24/t + 5as/(ht))", t, False, "none"),
        Setting("tensor + sequence parallel", "sbh(34/t + 5as/(ht))", t, True, "none"),
        Setting("tensor parallel + selective recompute", "sbh(10 + 24/t)", t, False, "selective"),
        Setting("tensor + sequence parallel + selective recompute", "34sbh/t", t, True, "selective"),
        Setting("full recompute", "2sbh", t, False, "every:1"),
    )


def formula_bytes(setting: Setting, s: int, b: int, h: int, a: int) -> int:
    """The paper's expression in bytes, in integers (every term divides exactly at the paper's shapes)."""
    t = setting.tensor_parallel
    if setting.checkpoint == "every:1":
        return 2 * s * b * h
    linear = 34 * s * b * h // t if setting.sequence_parallel else 10 * s * b * h + 24 * s * b * h // t
    quadratic = 0 if setting.checkpoint == "selective" else 5 * a * s * s * b // t
    return linear + quadratic


def layer_config(setting: Setting, base: dict[str, Any] | None = None, batch: int = BATCH) -> dict[str, Any]:
    """The one-block GPT whose layer 0 is the row's layer, as the rank builds it, in bfloat16 with dropout."""
    base = base or CONFIG_22B
    return {"model": "gpt", "depth": 1, **base, "batch_size": batch, "dtype": "bfloat16", "dropout": DROPOUT,
            "optimizer": "sgd", "checkpoint": setting.checkpoint, "tensor_parallel": setting.tensor_parallel,
            "sequence_parallel": setting.sequence_parallel}


FULL_RECOMPUTE_TERM = "layer input (the checkpoint segment's input: what full recomputation keeps)"
COMMUNICATION_ROW = "largest buffer a collective of the layer makes (transient: not held for backward)"


@dataclass(frozen=True)
class Table2Row:
    setting: Setting
    rows: list[megatron.Row]  # the paper's terms (ledger beside formula), then the engine's extra lines
    formula_bytes: int  # the paper's expression for the whole layer
    ledger_bytes: int  # the ledger's bytes of the rows the paper counts
    communication_bytes: int  # COMMUNICATION_ROW's ledger bytes


def table2_row(setting: Setting, base: dict[str, Any] | None = None, batch: int = BATCH) -> Table2Row:
    """One row of Table 2: the layer's predicted account sorted into the paper's terms."""
    from ..config import normalize
    from ..measure.predict import predicted_account

    config = normalize(layer_config(setting, base, batch))
    account = predicted_account(config)
    s, h, a = config["seq_len"], config["width"], config["heads"]
    t, sp = setting.tensor_parallel, setting.sequence_parallel
    formula = formula_bytes(setting, s, batch, h, a)
    if setting.checkpoint == "every:1":
        held = megatron.held_after_forward(account, 0)
        segment = [buf for buf in held if buf.saved_by == "checkpoint"]
        rest = [buf for buf in held if buf.saved_by != "checkpoint"]
        rows = [megatron.Row(FULL_RECOMPUTE_TERM, ("layer_input",), sum(buf.nbytes for buf in segment), formula,
                             len(segment))]
        rows += [megatron.Row(f"other: {buf.op} {buf.role} saved by {buf.saved_by}", (), buf.nbytes, None, 1)
                 for buf in rest]
    else:
        rows = megatron.block_rows(account, 0, s, batch, h, a, 2, DROPOUT, t, sp)
        if setting.checkpoint == "selective":  # the a·s²·b terms are recomputed: the paper counts none of them
            rows = [dataclasses.replace(row, formula_bytes=0)
                    if row.terms and all(megatron.TERM[k].quadratic for k in row.terms) else row for row in rows]
    communication = [buf.nbytes for buf in account.buffers if buf.category == "communication" and buf.layer == 0]
    comm = max(communication, default=0)
    rows.append(megatron.Row(COMMUNICATION_ROW, (), comm, None, len(communication)))
    return Table2Row(setting, rows, formula, megatron.total(rows), comm)


def table2(t: int = TENSOR_PARALLEL_22B, base: dict[str, Any] | None = None, batch: int = BATCH) -> list[Table2Row]:
    return [table2_row(setting, base, batch) for setting in settings(t)]


# --- Table 3: the first pipeline stage -------------------------------------------------------------------------
# name -> (heads, hidden, layers, tensor-parallel, pipeline-parallel), micro-batch 1, s 2048, vocabulary 51,200
TABLE3_CONFIGS: dict[str, tuple[int, int, int, int, int]] = {
    "175B": (96, 12288, 96, 8, 8), "530B": (128, 20480, 105, 8, 35), "1T": (160, 25600, 128, 8, 64)}


@dataclass(frozen=True)
class StageTotal:
    name: str
    config: dict[str, Any]
    formula_bytes: int  # the paper's first stage under 1F1B, sequence parallel + selective: 34·s·b·h·L/t
    blocks_bytes: int  # the ledger: what the stage's blocks hold for backward when its p-th forward ends
    statistics_bytes: int  # of which the layer norms' float32 statistics (not in the paper)
    embedding_bytes: int  # what the embedding layer holds then (not in the paper's per-layer count)
    other_bytes: int  # anything else held for backward then (the received inputs: none on the first stage)


def stage_config(name: str) -> dict[str, Any]:
    """The first pipeline stage of Table 3's configuration `name`: bfloat16, dropout, tensor + sequence parallel,
    selective recomputation, 1F1B with m = p microbatches of b = 1 (the first stage holds p whatever m ≥ p)."""
    heads, width, layers, t, p = TABLE3_CONFIGS[name]
    return {"model": "gpt", "depth": layers, "width": width, "heads": heads, "seq_len": 2048, "vocab": 51200,
            "batch_size": p, "dtype": "bfloat16", "dropout": DROPOUT, "optimizer": "sgd", "checkpoint": "selective",
            "tensor_parallel": t, "sequence_parallel": True, "pipeline_parallel": p, "microbatches": p,
            "schedule": "1f1b", "rank": 0}


def first_stage(name: str, raw: dict[str, Any] | None = None) -> StageTotal:
    """Table 3's first-stage activation total for `name` (or the stage configuration `raw`, in `stage_config`'s
    form): the ledger's buffers held for backward when the stage's first backward starts (p microbatches in
    flight), by layer, beside 34·s·b·h·L/t."""
    from ..config import normalize
    from ..measure.predict import predicted_account

    config = normalize(raw or stage_config(name))
    account = predicted_account(config)  # every block runs: the buffers below are all of them
    first_backward = min(b.born for b in account.buffers if b.phase == "backward")
    held = [b for b in account.buffers if b.category == "activation" and b.born < first_backward
            and (b.died is None or b.died > first_backward)]
    stage_depth = config["depth"] // config["pipeline_parallel"]
    blocks = [b for b in held if b.saved_layer is not None and b.saved_layer < stage_depth]
    statistics = [b for b in blocks if b.op == "layer_norm" and b.role in ("mean", "rstd")]
    embedding = [b for b in held if b.saved_layer == stage_depth + 1]
    s, h, t, layers = config["seq_len"], config["width"], config["tensor_parallel"], config["depth"]
    formula = 34 * s * BATCH * h * layers // t
    total = sum(b.nbytes for b in held)
    blocks_bytes = sum(b.nbytes for b in blocks)
    return StageTotal(name, config, formula, blocks_bytes, sum(b.nbytes for b in statistics),
                      sum(b.nbytes for b in embedding), total - blocks_bytes - sum(b.nbytes for b in embedding))


__all__ = ["CONFIG_22B", "Setting", "StageTotal", "TABLE3_CONFIGS", "Table2Row", "first_stage", "formula_bytes",
           "settings", "stage_config", "table2", "table2_row"]

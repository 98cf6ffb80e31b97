"""The Megatron-LM activation formula, term by term, against the ledger's buffers of one GPT block.

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", section 4.1) count
what one transformer layer holds for backward as s·b·h·(34 + 5·a·s/h) bytes: s sequence length, b batch,
h hidden size, a heads, with 2-byte (16-bit) activations and 1-byte dropout masks. Each of its terms is one
array: `TERMS` lists them with the number of elements (per s·b·h, or per a·s²·b) and whether it is an
activation (the dtype's bytes) or a mask (1 byte). In bfloat16 or float16 (2 bytes, 1-byte masks) the ledger's
terms are the paper's 34 and 5 exactly; for float32 (4 bytes) the same terms give s·b·h·(66 + 9·a·s/h). What
stays float32 in a 16-bit model is outside the formula either way: the layer norms' statistics (`statistics_bytes`,
4 bytes each) and the loss's softmax (`outside_rows`).

At dropout 0 there are no masks, and attention-over-values saves the softmax's output itself (no separate
dropout output): 16·itemsize per s·b·h and itemsize per a·s²·b remain (64 and 4 in float32).

`block_rows` sorts one block's buffers that the ledger saw saved during the forward pass (what is held for
backward when forward ends) into those terms, by the op that made each buffer and the op that saved it; what
the formula does not count (layer-norm statistics, a checkpoint's segment inputs) are rows of their own, and
anything unrecognised is reported as `other`, never folded in. `outside_rows` lists what the step holds
outside the blocks (embeddings, head, the loss's probabilities). Written for the `minimal` saved-tensor
policy (under `half` the saved arrays are float16 copies and fall under `other`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

PAPER_ACTIVATION_BYTES = 2  # the paper's 16-bit activations
MASK_BYTES = 1  # a boolean dropout mask, in the paper and in memstudy


@dataclass(frozen=True)
class Term:
    key: str
    label: str
    part: str  # attention | mlp | layer norm
    elements: int  # elements per s·b·h (linear) or per a·s²·b (quadratic)
    quadratic: bool  # counted per a·s²·b (the attention scores' shape) rather than per s·b·h
    mask: bool  # a dropout mask (1 byte per element) rather than an activation (the dtype's bytes)
    with_dropout_only: bool  # exists only when dropout > 0
    # split t ways by tensor parallelism (heads, the MLP's hidden units); the others are the layer norms' and
    # dropouts' side of the block, split t ways only by sequence parallelism (Korthikanti et al. 2022, Table 2)
    by_heads: bool = False


TERMS: tuple[Term, ...] = (
    Term("qkv_input", "QKV input (ln_1 output)", "attention", 1, False, False, False),
    Term("q_and_k", "Q and K (for q @ kᵀ)", "attention", 2, False, False, False, True),
    Term("softmax_output", "softmax output", "attention", 1, True, False, False, True),
    Term("softmax_dropout_mask", "softmax dropout mask", "attention", 1, True, True, True, True),
    Term("dropout_output", "dropout output (attention over values)", "attention", 1, True, False, True, True),
    Term("v", "V", "attention", 1, False, False, False, True),
    Term("projection_input", "projection input (heads merged)", "attention", 1, False, False, False, True),
    Term("projection_dropout_mask", "projection dropout mask", "attention", 1, False, True, True),
    Term("mlp_input", "MLP input (ln_2 output)", "mlp", 1, False, False, False),
    Term("gelu_input", "GELU input (c_fc output)", "mlp", 4, False, False, False, True),
    Term("second_linear_input", "second-linear input (GELU output)", "mlp", 4, False, False, False, True),
    Term("mlp_dropout_mask", "MLP dropout mask", "mlp", 1, False, True, True),
    Term("ln_1_input", "ln_1 input", "layer norm", 1, False, False, False),
    Term("ln_2_input", "ln_2 input", "layer norm", 1, False, False, False),
)
TERM = {t.key: t for t in TERMS}

# The ledger's rows: each is one kind of buffer, covering one formula term or (q, k and v: views of one
# c_attn output buffer, counted once) two of them.
ROWS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    [(TERM["qkv_input"].label, ("qkv_input",)),
     ("Q and K, V (one buffer: c_attn's output, of which q, k, v are views)", ("q_and_k", "v"))]
    + [(TERM[k].label, (k,)) for k in ("softmax_output", "softmax_dropout_mask", "dropout_output",
                                       "projection_input", "projection_dropout_mask", "mlp_input", "gelu_input",
                                       "second_linear_input", "mlp_dropout_mask", "ln_1_input", "ln_2_input")])
LN_STATISTICS = "layer-norm statistics (mean and 1/std of ln_1 and ln_2; not in the formula)"
SEGMENT_INPUT = "checkpoint segment input (not in the formula)"


def term_bytes(term: Term, seq_len: int, batch: int, width: int, heads: int, itemsize: int, dropout: float,
               tensor_parallel: int = 1, sequence_parallel: bool = False) -> int:
    """The formula's bytes for one term of one layer on one rank, for activations of `itemsize` bytes and 1-byte
    masks: split t ways when tensor parallelism splits it (`Term.by_heads`) or sequence parallelism does (the
    rest), as Korthikanti et al.'s Table 2 counts them."""
    if term.with_dropout_only and dropout == 0:
        return 0
    unit = heads * seq_len * seq_len * batch if term.quadratic else seq_len * batch * width
    split = tensor_parallel if (term.by_heads or sequence_parallel) else 1
    return term.elements * unit * (MASK_BYTES if term.mask else itemsize) // split


def coefficients(itemsize: int, dropout: float = 0.1) -> tuple[int, int]:
    """(linear, quadratic): bytes per layer = s·b·h·(linear + quadratic·a·s/h). (34, 5) for the paper's 2-byte
    activations with dropout, (66, 9) for float32, (64, 4) for float32 at dropout 0."""
    linear = sum(t.elements * (MASK_BYTES if t.mask else itemsize) for t in TERMS
                 if not t.quadratic and not (t.with_dropout_only and dropout == 0))
    quadratic = sum(t.elements * (MASK_BYTES if t.mask else itemsize) for t in TERMS
                    if t.quadratic and not (t.with_dropout_only and dropout == 0))
    return linear, quadratic


def layer_bytes(seq_len: int, batch: int, width: int, heads: int, itemsize: int, dropout: float) -> int:
    """The formula's total for one layer: s·b·h·(linear + quadratic·a·s/h), in integers."""
    linear, quadratic = coefficients(itemsize, dropout)
    return seq_len * batch * width * linear + quadratic * heads * seq_len * seq_len * batch


STATISTICS_PER_POSITION = 4  # mean and 1/std of ln_1 and ln_2: values per position per layer, not in the formula


def statistics_itemsize(itemsize: int) -> int:
    """The bytes of one layer-norm statistic beside activations of `itemsize` bytes: float32 for 16-bit activations
    (a 16-bit layer norm keeps its statistics in float32, as PyTorch's CPU kernel does), else the activations'."""
    return max(itemsize, 4)


def statistics_bytes(seq_len: int, batch: int, itemsize: int) -> int:
    """What a block's two layer norms keep beyond the formula: their mean and 1/std, one value per position."""
    return STATISTICS_PER_POSITION * seq_len * batch * statistics_itemsize(itemsize)


def fraction_removed(seq_len: int, heads: int, width: int) -> float:
    """Selective recomputation's share of the paper's per-layer activations: 5as/h ÷ (34 + 5as/h)."""
    quadratic = 5 * heads * seq_len / width
    return quadratic / (34 + quadratic)


# the ops whose output is a Linear's: the plain one, and sequence parallelism's (memstudy/parallel/tensor.py)
LINEARS = ("linear", "sequence_parallel_linear")


def _classify(buffers: list[Any]) -> list[tuple[str, Any]]:
    """(term key or extra's label, buffer) for one block's saved buffers in the order the ledger saw them."""
    out = []
    seen = {"ln_input": 0, "ln_output": 0, "mask3": 0}
    for b in buffers:
        if b.op == "layer_norm" and b.role in ("mean", "rstd"):
            key = LN_STATISTICS
        elif b.saved_by == "layer_norm":
            key = ("ln_1_input", "ln_2_input")[min(seen["ln_input"], 1)]
            seen["ln_input"] += 1
        elif b.saved_by == "checkpoint" and b.op not in LINEARS:
            key = SEGMENT_INPUT
        elif b.op == "layer_norm" and b.saved_by in LINEARS:
            key = ("qkv_input", "mlp_input")[min(seen["ln_output"], 1)]
            seen["ln_output"] += 1
        elif b.op in LINEARS and b.saved_by in ("batched_matmul", "checkpoint"):
            key = "q_and_k+v"
        elif b.op == "softmax" and b.saved_by == "softmax":
            key = "softmax_output"
        elif b.op == "dropout" and b.role == "mask" and len(b.shape) == 4:
            key = "softmax_dropout_mask"
        elif b.op == "dropout" and b.role == "mask":
            key = ("projection_dropout_mask", "mlp_dropout_mask")[min(seen["mask3"], 1)]
            seen["mask3"] += 1
        elif b.op == "dropout" and b.saved_by == "batched_matmul":
            key = "dropout_output"
        elif b.op == "reshape" and b.saved_by == "linear":
            key = "projection_input"
        elif b.op in LINEARS and b.saved_by == "gelu":
            key = "gelu_input"
        elif b.op == "gelu" and b.saved_by == "linear":
            key = "second_linear_input"
        else:
            key = f"other: {b.op} {b.role} saved by {b.saved_by}"
        out.append((key, b))
    return out


def held_after_forward(account: Any, layer: int | None) -> list[Any]:
    """The activation buffers first saved by an op of `layer` during the forward pass, in the order seen."""
    return [b for b in account.buffers
            if b.category == "activation" and b.phase == "forward" and b.saved_layer == layer]


@dataclass(frozen=True)
class Row:
    label: str
    terms: tuple[str, ...]  # the formula's terms this row covers (empty: not in the formula)
    ledger_bytes: int
    formula_bytes: int | None  # None: the formula does not count it
    buffers: int


def block_rows(account: Any, layer: int, seq_len: int, batch: int, width: int, heads: int, itemsize: int,
               dropout: float, tensor_parallel: int = 1, sequence_parallel: bool = False) -> list[Row]:
    """One block's rows: each formula term (ledger bytes beside the formula's, on one rank of `tensor_parallel`),
    then what memstudy keeps beyond the formula (layer-norm statistics, segment inputs, anything unrecognised)."""
    sums: dict[str, list[int]] = {}
    for key, b in _classify(held_after_forward(account, layer)):
        entry = sums.setdefault(key, [0, 0])
        entry[0] += b.nbytes
        entry[1] += 1
    rows = []
    for label, keys in ROWS:
        ledger_key = "q_and_k+v" if keys == ("q_and_k", "v") else keys[0]
        got = sums.pop(ledger_key, [0, 0])
        formula = sum(term_bytes(TERM[k], seq_len, batch, width, heads, itemsize, dropout, tensor_parallel,
                                 sequence_parallel) for k in keys)
        rows.append(Row(label, keys, got[0], formula, got[1]))
    for label in [LN_STATISTICS, SEGMENT_INPUT] + sorted(k for k in sums if k.startswith("other")):
        if label in sums:
            rows.append(Row(label, (), sums[label][0], None, sums[label][1]))
    return rows


OUTSIDE = (  # (label, layer: "head" | "embedding" | "loss", how to recognise the buffer)
    ("embedding: position ids (saved by wpe's lookup)", "embedding", lambda b: b.op == "embedding"),
    ("embedding: dropout mask", "embedding", lambda b: b.op == "dropout" and b.role == "mask"),
    ("head: ln_f input (the last block's output)", "head", lambda b: b.saved_by == "layer_norm"
     and b.role not in ("mean", "rstd")),
    ("head: ln_f statistics", "head", lambda b: b.op == "layer_norm" and b.role in ("mean", "rstd")),
    ("head: lm_head input (ln_f output)", "head", lambda b: b.op == "layer_norm" and b.saved_by == "linear"),
    ("loss: softmax of the logits (b·s·vocab)", "loss", lambda b: b.saved_by == "softmax_cross_entropy"),
)


def outside_rows(account: Any, depth: int) -> list[Row]:
    """What the step holds for backward outside the blocks (embeddings, head, loss), none of it in the formula,
    and the token ids (the step's registered input)."""
    layers = {"embedding": depth + 1, "head": depth, "loss": None}
    rows = []
    for where in ("embedding", "head", "loss"):
        buffers = held_after_forward(account, layers[where])
        for label, place, match in OUTSIDE:
            if place != where:
                continue
            mine = [b for b in buffers if match(b)]
            buffers = [b for b in buffers if not match(b)]
            rows.append(Row(label, (), sum(b.nbytes for b in mine), None, len(mine)))
        for b in buffers:
            rows.append(Row(f"{where}: other: {b.op} {b.role} saved by {b.saved_by}", (), b.nbytes, None, 1))
    inputs = [b for b in account.buffers if b.category == "input"]
    rows.append(Row("token ids and targets (the step's input)", (), sum(b.nbytes for b in inputs), None,
                    len(inputs)))
    return rows


def total(rows: Iterable[Row], in_formula: bool = True) -> int:
    """Ledger bytes of the rows the formula counts (or, with in_formula False, of those it does not)."""
    return sum(r.ledger_bytes for r in rows if bool(r.terms) == in_formula)

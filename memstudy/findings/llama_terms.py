"""What one Llama decoder layer holds for backward, term by term, against the ledger's buffers (docs/llama.md).

The GPT's per-layer formula is Korthikanti et al.'s (`megatron.py`); the Llama's is derived here the same way, one
term per array an op keeps, from the ops' save rules (each op's docstring) and transformers' layer: s sequence, b
batch, h width, a heads, kv key/value heads, d = h / a, f the MLP's intermediate size, r the LoRA rank, p the
activations' bytes per element (the model's dtype). Per position (s·b), full fine-tuning, no checkpointing:

    attention  x (input_layernorm input) h, its rstd 1, q/k/v input h, q h, k kv·d, v kv·d, o_proj input h;
               the softmax output a·s per position (a·s²·b in all)
    MLP        x (post_attention_layernorm input) h, its rstd 1, gate/up input h, SiLU input f, SiLU output f,
               up_proj output f, down_proj input f

so p·s·b·(6h + 2·kv·d + 4f + 2) + p·a·s²·b per layer. What exists depends on what trains (a Linear keeps its input
only when its weight, or its LoRA adapter, trains; an op keeps an operand only for another operand's gradient):
`present` derives each term's presence from those rules for full fine-tuning, for LoRA on any targets (the base
frozen, the first layer's input needing no gradient), and for `selective` checkpointing (the attention core's
q, k, v held by the checkpoint instead of the softmax output). With LoRA each target adds its lora_A output,
r per position, kept by lora_B.

Outside the layers: the rotary tables (2·s·d, once per step, shared by every layer), the final norm's input and
rstd, lm_head's input (when lm_head trains), the loss's softmax (b·s·vocab), and the token ids (the step's input).

`layer_rows` sorts one layer's buffers held after forward (the ledger's account) into these terms; anything it does
not recognise is a row of its own, never folded in. Written for the `minimal` saved-tensor policy and checkpoint
none or selective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..autograd.precision import dtype as as_dtype
from .megatron import Row, held_after_forward

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Term:
    key: str
    label: str
    part: str  # attention | mlp | lora


TERMS: tuple[Term, ...] = (
    Term("x1", "input_layernorm input (the residual stream)", "attention"),
    Term("rstd1", "input_layernorm rstd (one per position)", "attention"),
    Term("y1", "q/k/v input (input_layernorm output)", "attention"),
    Term("q", "q after the rotary embedding", "attention"),
    Term("k", "k after the rotary embedding (kv heads)", "attention"),
    Term("v", "v (v_proj output, kv heads)", "attention"),
    Term("softmax", "softmax output (a·s per position)", "attention"),
    Term("softmax_cast", "softmax output cast to the activations' dtype (a·s per position; 16-bit only)",
         "attention"),
    Term("o_in", "o_proj input (heads merged)", "attention"),
    Term("x2", "post_attention_layernorm input (the residual stream)", "mlp"),
    Term("rstd2", "post_attention_layernorm rstd (one per position)", "mlp"),
    Term("y2", "gate/up input (post_attention_layernorm output)", "mlp"),
    Term("gate", "SiLU input (gate_proj output)", "mlp"),
    Term("silu", "SiLU output", "mlp"),
    Term("up", "up_proj output", "mlp"),
    Term("down_in", "down_proj input (SiLU output · up)", "mlp"),
    Term("lora", "LoRA: lora_A outputs (r per target)", "lora"),
    Term("lora_in", "LoRA: the adapters' float32 copies of their inputs (16-bit base only)", "lora"),
    Term("weights", "autocast: the Linears' 16-bit weight copies (each weight cast once per forward)", "autocast"),
)
TERM = {t.key: t for t in TERMS}


def elements_per_position(key: str, config: dict[str, Any]) -> int:
    """Elements per position (s·b) of one term; the softmax's grows with s (a·s per position)."""
    h, a, f = config["width"], config["heads"], config["ffn"]
    kv = config["kv_heads"] or a
    d = h // a
    return {"x1": h, "rstd1": 1, "y1": h, "q": a * d, "k": kv * d, "v": kv * d, "softmax": a * config["seq_len"],
            "softmax_cast": a * config["seq_len"], "o_in": a * d, "x2": h, "rstd2": 1, "y2": h, "gate": f, "silu": f, "up": f, "down_in": f}[key]


def targets_of(config: dict[str, Any]) -> tuple[str, ...] | None:
    """The LoRA targets among a layer's Linears (None: full fine-tuning, every parameter trains)."""
    if not config.get("lora_rank"):
        return None
    names = tuple(t.strip() for t in config["lora_targets"].split(","))
    if "all-linear" in names:
        return ATTENTION_TARGETS + MLP_TARGETS
    return tuple(n for n in ATTENTION_TARGETS + MLP_TARGETS if any(n == t or n.endswith("." + t) or
                                                                     t.endswith("." + n) for t in names))


def present(config: dict[str, Any], layer: int) -> dict[str, bool]:
    """Which terms one decoder layer keeps, from the ops' save rules (see the module docstring)."""
    targets = targets_of(config)
    full = targets is None
    # a 16-bit base: each adapter reads its own float32 copy of the input (peft's autocast_adapter_dtype), so no
    # 16-bit input is kept for a LoRA target; in float32/float64 lora_A keeps the very input the base reads
    adapter_reads_input = as_dtype(config["dtype"]).itemsize >= 4

    def keeps_input(name: str) -> bool:
        return full or (adapter_reads_input and name in targets)

    def trains(name: str) -> bool:
        return full or name in targets

    x_req = full or layer > 0  # the residual stream entering the layer needs a gradient
    y1_req = x_req  # RMSNorm's output needs one when its input or its weight does (the weight trains in full)
    q_req, k_req, v_req = (y1_req or trains(n) for n in ("q_proj", "k_proj", "v_proj"))
    probs_req = q_req or k_req
    core_req = probs_req or v_req
    selective = config.get("checkpoint") == "selective"
    attn_req = core_req or trains("o_proj")
    x2_req = x_req or attn_req
    g_req, u_req = (x2_req or trains(n) for n in ("gate_proj", "up_proj"))
    return {
        "weights_qkv": y1_req, "weights_o": core_req, "weights_gu": x2_req, "weights_down": g_req or u_req,
        "x1": x_req, "rstd1": x_req,
        "y1": any(keeps_input(n) for n in ("q_proj", "k_proj", "v_proj")),
        "q": core_req if selective else k_req,  # selective: the checkpoint holds q, k and v
        "k": core_req if selective else q_req,
        "v": core_req if selective else probs_req,
        "softmax": False if selective else core_req,
        "softmax_cast": False if selective else core_req,  # `term_bytes` counts it only below the compute dtype
        "o_in": keeps_input("o_proj"),
        "x2": x2_req, "rstd2": x2_req,
        "y2": keeps_input("gate_proj") or keeps_input("up_proj"),
        "gate": g_req, "silu": u_req, "up": g_req,  # Mul keeps each factor for the other's gradient
        "down_in": keeps_input("down_proj"),
    }


def compute_itemsize(itemsize: int) -> int:
    """What RMSNorm's rstd, the attention softmax and the loss's softmax are computed and kept in: float32 for a
    16-bit model (transformers' RMSNorm upcasts; eager attention's softmax(dtype=torch.float32)), else the model's."""
    return max(itemsize, 4)


def term_bytes(config: dict[str, Any], layer: int, itemsize: int) -> dict[str, int]:
    """The formula's bytes of each term of one layer: elements per position × s·b × its itemsize when present. Every
    term is in the model's dtype (`itemsize`) but the rstds and the softmax output (`compute_itemsize`), the softmax's
    cast back to the model's dtype (kept by softmax · v; only when that is narrower), and a 16-bit base's float32
    adapters (their outputs and their input copies)."""
    positions = config["seq_len"] * config["batch_size"]
    compute = compute_itemsize(itemsize)
    sizes = {"rstd1": compute, "rstd2": compute, "softmax": compute,
             "softmax_cast": itemsize if itemsize < compute else 0}
    held_terms = present(config, layer)
    kept = {k: held_terms.pop(k) for k in list(held_terms) if k.startswith("weights_")}
    if autocast_itemsize(config):
        return _autocast_term_bytes(config, held_terms, kept, positions, itemsize)
    out = {key: (elements_per_position(key, config) * positions * sizes.get(key, itemsize) if held else 0)
           for key, held in held_terms.items()}
    out["weights"] = 0
    targets = targets_of(config)
    adapter = compute  # peft's adapters: float32 beside a 16-bit base, else the base's dtype
    out["lora"] = 0 if targets is None else len(targets) * config["lora_rank"] * positions * adapter
    inputs = {"q_proj": "y1", "k_proj": "y1", "v_proj": "y1", "o_proj": "o_in", "gate_proj": "y2", "up_proj": "y2",
              "down_proj": "down_in"}
    out["lora_in"] = 0 if targets is None or itemsize >= 4 else sum(
        elements_per_position(inputs[t], config) * positions * adapter for t in targets)
    return out


def autocast_itemsize(config: dict[str, Any]) -> int | None:
    """The itemsize autocast computes in (2 for bfloat16 or float16), or None without autocast."""
    name = config.get("autocast")
    return None if name in (None, "none") else as_dtype(name).itemsize


def _autocast_term_bytes(config: dict[str, Any], held: dict[str, bool], kept: dict[str, bool], positions: int,
                         itemsize: int) -> dict[str, int]:
    """Under autocast (float32 parameters, 16-bit compute): the residual stream, the rstds and the softmax stay in
    the model's dtype; every Linear reads its own 16-bit copy of its input (autocast casts per op: y1 once per q, k,
    v; y2 once per gate, up), q and k are cast to 16 bits by the scores' matmul (under selective checkpointing the
    checkpoint holds them as the rotary op made them), and the Linears' outputs (v, o_proj's input, the MLP's terms)
    are 16-bit; each Linear whose input needs a gradient keeps its weight's 16-bit copy. LoRA under autocast: not
    derived (ValueError)."""
    if targets_of(config) is not None:
        raise ValueError("llama_terms: LoRA under autocast is not derived")
    low = autocast_itemsize(config)
    h, a, f = config["width"], config["heads"], config["ffn"]
    kv, d = config["kv_heads"] or a, h // a
    sizes = {"x1": itemsize, "x2": itemsize, "rstd1": compute_itemsize(itemsize), "rstd2": compute_itemsize(itemsize),
             "softmax": compute_itemsize(itemsize), "y1": 3 * low, "y2": 2 * low}  # y1, y2: one copy per Linear
    if config.get("checkpoint") == "selective":  # the checkpoint holds q and k as the rotary op made them
        sizes.update(q=itemsize, k=itemsize)
    out = {key: (elements_per_position(key, config) * positions * sizes.get(key, low) if on else 0)
           for key, on in held.items()}
    out["lora"] = out["lora_in"] = 0
    weights = {"weights_qkv": h * a * d + 2 * h * kv * d, "weights_o": a * d * h, "weights_gu": 2 * h * f,
               "weights_down": f * h}
    out["weights"] = sum(n * low for k, n in weights.items() if kept[k])
    return out


def layer_bytes(config: dict[str, Any], layer: int, itemsize: int) -> int:
    return sum(term_bytes(config, layer, itemsize).values())


def _classify(account: Any, layer: int, buffers: list[Any]) -> list[tuple[str, Any]]:
    """(term key, or `other: ...`, buffer) for one layer's saved buffers. Which norm or which rotary op made a
    buffer is read from the order of the layer's outputs (every op output is in the account, saved or not): the
    first RMSNorm output is input_layernorm's, the first rotary output is q's."""
    made = [b for b in account.buffers if b.layer == layer and b.phase == "forward" and b.role == "out"]
    norm_outputs = [b.key for b in made if b.op == "rms_norm"]
    rotary_outputs = [b.key for b in made if b.op == "rotary"]
    norm_born = [b.born for b in made if b.op == "rms_norm"]
    softmax_born = [b.born for b in made if b.op == "softmax"]
    rotary_born = [b.born for b in made if b.op == "rotary"]

    def norm_index(b: Any) -> int:  # the norm whose output was born last before b (rstd is born right after it)
        return max(sum(born <= b.born for born in norm_born) - 1, 0)

    out = []
    casts = iter(("q", "k"))
    for b in sorted(buffers, key=lambda b: b.born):
        if b.op == "rms_norm" and b.role == "rstd":
            key = ("rstd1", "rstd2")[min(norm_index(b), 1)]
        elif b.saved_by == "rms_norm":
            key = "x2" if b.layer == layer else "x1"  # x2 is this layer's residual add; x1 came from below
        elif b.op == "rms_norm" and b.saved_by == "linear":
            key = ("y1", "y2")[min(norm_outputs.index(b.key), 1)]
        elif b.op == "rotary" and b.saved_by in ("batched_matmul", "checkpoint"):
            key = ("q", "k")[min(rotary_outputs.index(b.key), 1)]
        elif b.op == "autocast" and b.saved_by in ("batched_matmul", "checkpoint") and any(
                s < b.born for s in softmax_born):
            key = "softmax_cast"  # the softmax output's 16-bit copy (born after the softmax)
        elif b.op == "autocast" and b.saved_by in ("batched_matmul", "checkpoint") and rotary_born \
                and b.born > max(rotary_born):
            key = "qk_cast"  # autocast: the scores' matmul's 16-bit copies of q and k (q first)
        elif b.op == "autocast_weight" and b.saved_by == "linear":
            key = "weights"
        elif b.op == "autocast" and b.saved_by == "linear" and as_dtype(b.dtype).itemsize < 4:
            key = ("y1", "y2")[min(norm_index(b), 1)]  # autocast: a Linear's 16-bit copy of its input
        elif b.op in ("linear", "add", "autocast") and b.saved_by in ("batched_matmul", "checkpoint"):
            key = "v"  # v_proj's output (a LoRA target's: its sum, cast back to the base's dtype)
        elif b.op == "softmax":
            key = "softmax"
        elif b.op == "reshape" and b.saved_by == "linear":
            key = "o_in"
        elif b.op in ("linear", "add", "autocast") and b.saved_by == "silu":
            key = "gate"
        elif b.op == "silu" and b.saved_by == "mul":
            key = "silu"
        elif b.op in ("linear", "add", "autocast") and b.saved_by == "mul":
            key = "up"
        elif b.op == "mul" and b.saved_by == "linear":
            key = "down_in"
        elif b.op == "linear" and b.saved_by == "linear":
            key = "lora"
        elif b.op == "autocast" and b.saved_by == "linear":
            key = "lora_in"  # a 16-bit base: an adapter's float32 copy of its input
        else:
            key = f"other: {b.op} {b.role} saved by {b.saved_by}"
        if key == "qk_cast":
            key = next(casts, "k")
        out.append((key, b))
    return out


def layer_rows(account: Any, layer: int, config: dict[str, Any], itemsize: int) -> list[Row]:
    """One decoder layer's rows: each term (the ledger's bytes beside the formula's), then anything unrecognised.
    The rotary tables, which layer 0's rotary ops save first, are left out here (`outside_rows` lists them)."""
    buffers = [b for b in held_after_forward(account, layer) if b.op != "rotary_tables"]
    sums: dict[str, list[int]] = {}
    for key, b in _classify(account, layer, buffers):
        entry = sums.setdefault(key, [0, 0])
        entry[0] += b.nbytes
        entry[1] += 1
    formula = term_bytes(config, layer, itemsize)
    rows = []
    for t in TERMS:
        got = sums.pop(t.key, [0, 0])
        rows.append(Row(t.label, (t.key,), got[0], formula[t.key], got[1]))
    rows += [Row(key, (), total, None, count) for key, (total, count) in sorted(sums.items())]
    return rows


OUTSIDE = (  # (label, layer: "tables" | "head" | "loss", how to recognise the buffer)
    ("rotary tables (cos and sin, 2·s·d: once per step, every layer's rotary op keeps them)", "tables",
     lambda b: b.op == "rotary_tables"),
    ("head: norm rstd", "head", lambda b: b.op == "rms_norm" and b.role == "rstd"),
    ("head: norm input (the last layer's output)", "head", lambda b: b.saved_by == "rms_norm"),
    ("head: lm_head input (norm output)", "head", lambda b: b.op in ("rms_norm", "autocast") and b.saved_by == "linear"),
    ("head: lm_head weight's 16-bit copy (autocast)", "head", lambda b: b.op == "autocast_weight"),
    ("loss: softmax of the logits (b·s·vocab)", "loss", lambda b: b.saved_by == "softmax_cross_entropy"),
)


def outside_rows(account: Any, depth: int) -> list[Row]:
    """What the step holds for backward outside the decoder layers, and the token ids (the step's input)."""
    rows = []
    for where in ("tables", "head", "loss"):
        if where == "tables":  # saved first by the first layer whose rotary op records a graph
            buffers = [b for b in account.buffers if b.category == "activation" and b.op == "rotary_tables"]
        else:
            buffers = held_after_forward(account, depth if where == "head" else None)
        for label, place, match in OUTSIDE:
            if place != where:
                continue
            mine = [b for b in buffers if match(b)]
            buffers = [b for b in buffers if not match(b)]
            rows.append(Row(label, (), sum(b.nbytes for b in mine), None, len(mine)))
        rows += [Row(f"{where}: other: {b.op} {b.role} saved by {b.saved_by}", (), b.nbytes, None, 1)
                 for b in buffers]
    embedding = [b for b in held_after_forward(account, depth + 1)]
    rows += [Row(f"embedding: {b.op} {b.role} saved by {b.saved_by}", (), b.nbytes, None, 1) for b in embedding]
    inputs = [b for b in account.buffers if b.category == "input"]
    rows.append(Row("token ids and targets (the step's input)", (), sum(b.nbytes for b in inputs), None,
                    len(inputs)))
    return rows


def outside_formula(config: dict[str, Any], itemsize: int) -> dict[str, int]:
    """The formula's bytes outside the layers (the same labels as `outside_rows`), for a training step."""
    s, b, h, v = config["seq_len"], config["batch_size"], config["width"], config["vocab"]
    d = h // config["heads"]
    lm_head_trains = targets_of(config) is None or "lm_head" in config["lora_targets"].split(",")
    compute = compute_itemsize(itemsize)  # the norm's rstd and the loss's softmax: float32 for a 16-bit model
    low = autocast_itemsize(config)  # autocast: lm_head reads a 16-bit copy of its input and of its weight
    return {
        OUTSIDE[0][0]: 2 * s * d * itemsize,
        OUTSIDE[1][0]: s * b * compute,
        OUTSIDE[2][0]: s * b * h * itemsize,
        OUTSIDE[3][0]: s * b * h * (low or itemsize) if lm_head_trains else 0,
        OUTSIDE[4][0]: v * h * low if low else 0,
        OUTSIDE[5][0]: s * b * v * compute,
    }


@dataclass(frozen=True)
class TableRow:
    label: str
    ledger_bytes: int  # from the account (measured, or predicted: the engine on shape-only arrays)
    formula_bytes: int | None  # from this module's terms (None: the formula does not count it)


def step_table(account: Any, config: dict[str, Any]) -> list[TableRow]:
    """One training step of a (normalized) llama config, from its ledger account (`memory.predict.predicted_account`
    for a prediction): parameters, gradients (largest live), optimiser state, the activations term by term (summed
    over the layers) beside the formula, what is held outside the layers, the activations held for backward, and
    the total peak. The pieces a worked example's table is made of."""
    itemsize = as_dtype(config["dtype"]).itemsize
    depth = config["depth"]
    registered = account.registered_bytes
    rows = [TableRow("parameters", registered["parameter"], None),
            TableRow("gradients (largest live)", account.max_by_category["gradient"], None),
            TableRow(f"{config['optimizer']} state", registered["optimizer_state"], None)]
    layers = [layer_rows(account, layer, config, itemsize) for layer in range(depth)]
    labels = list(dict.fromkeys(r.label for rows_ in layers for r in rows_))
    for label in labels:
        mine = [r for rows_ in layers for r in rows_ if r.label == label]
        formula = None if any(r.formula_bytes is None for r in mine) else sum(r.formula_bytes for r in mine)
        rows.append(TableRow(f"activations: {label}", sum(r.ledger_bytes for r in mine), formula))
    outside = outside_formula(config, itemsize)
    for r in outside_rows(account, depth):
        rows.append(TableRow(r.label, r.ledger_bytes, outside.get(r.label)))
    rows += [TableRow("activations held for backward (the ledger's largest live)", account.activation_bytes, None),
             TableRow("total peak", account.peak_bytes, None)]
    return rows

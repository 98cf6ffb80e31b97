"""The Llama's per-layer formula (memstudy.findings.llama_terms, docs/llama.md) against the ledger, term by term."""
from __future__ import annotations

import numpy as np
import pytest

from memstudy.autograd.precision import dtype as as_dtype
from memstudy.config import normalize
from memstudy.measure.predict import predicted_account
from memstudy.measure.workload import Workload
from memstudy.findings import llama_terms

SHAPE = dict(model="llama", depth=3, width=16, heads=4, ffn=24, seq_len=8, vocab=23, batch_size=3)


def account_and_config(**fields):
    config = normalize({**SHAPE, **fields})
    return Workload(config).ledger_step(), config


CASES = [
    dict(), dict(kv_heads=2), dict(kv_heads=1, dtype="float64"), dict(tie=True),
    dict(checkpoint="selective"), dict(checkpoint="selective", kv_heads=2),
    dict(lora_rank=3), dict(lora_rank=3, kv_heads=2, dtype="float64"), dict(lora_rank=2, lora_targets="all-linear"),
    dict(lora_rank=2, lora_targets="gate_proj"), dict(lora_rank=2, lora_targets="k_proj,o_proj"),
    dict(lora_rank=2, lora_targets="down_proj", checkpoint="selective"),
    # 16 bits: the rstds, the softmax and the loss's softmax in float32, the softmax's 16-bit copy kept by softmax·v,
    # a 16-bit base's float32 adapters reading their own float32 copies of their inputs
    dict(dtype="bfloat16"), dict(dtype="float16", kv_heads=2, checkpoint="selective"),
    dict(dtype="bfloat16", master_weights=True, optimizer="adam"),
    dict(dtype="bfloat16", lora_rank=3, kv_heads=2), dict(dtype="float16", lora_rank=2, lora_targets="all-linear"),
    # autocast: every Linear's own 16-bit copy of its input and of its weight, q and k cast by the scores' matmul
    dict(autocast="bfloat16"), dict(autocast="bfloat16", kv_heads=2, checkpoint="selective"),
    dict(autocast="float16", tie=True),
]


@pytest.mark.parametrize("fields", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "full" for c in CASES])
def test_every_term_of_every_layer_equals_the_formula(fields):
    account, config = account_and_config(**fields)
    itemsize = as_dtype(config["dtype"]).itemsize
    covered = 0
    for layer in range(config["depth"]):
        rows = llama_terms.layer_rows(account, layer, config, itemsize)
        unrecognised = [r.label for r in rows if not r.terms]
        assert not unrecognised, unrecognised
        for r in rows:
            assert r.ledger_bytes == r.formula_bytes, (layer, r.label, r.ledger_bytes, r.formula_bytes)
        covered += sum(r.ledger_bytes for r in rows)
    outside = llama_terms.outside_formula(config, itemsize)
    for r in llama_terms.outside_rows(account, config["depth"]):
        if r.label.startswith("token ids"):
            continue
        assert r.label in outside, r.label  # nothing unrecognised outside the layers either
        assert r.ledger_bytes == outside[r.label], r.label
        covered += r.ledger_bytes
    assert covered == account.activation_bytes  # every byte held for backward is one term or another


def test_full_fine_tuning_closed_form():
    """p·s·b·(6h + 2·kv·d + 4f + 2) + p·a·s²·b per layer: the formula's terms add up to the closed form."""
    for fields in (dict(), dict(kv_heads=2), dict(kv_heads=1, dtype="float64")):
        config = normalize({**SHAPE, **fields})
        p, s, b, h, a, f = (np.dtype(config["dtype"]).itemsize, config["seq_len"], config["batch_size"],
                            config["width"], config["heads"], config["ffn"])
        kv, d = config["kv_heads"], h // a
        for layer in range(config["depth"]):
            assert llama_terms.layer_bytes(config, layer, p) == p * s * b * (6 * h + 2 * kv * d + 4 * f + 2) \
                + p * a * s * s * b


def test_what_lora_on_q_and_v_removes_and_adds_per_layer():
    """LoRA (q, v) keeps no o_proj input, no MLP input and no down_proj input (their Linears are frozen: they keep
    their weight to pass the gradient on, not their input), adds the two lora_A outputs; the first layer, whose
    input needs no gradient, keeps neither its norm's input and rstd nor q (k needs no gradient there)."""
    full, config = account_and_config()
    lora, lora_config = account_and_config(lora_rank=3)
    p, s, b, h, f, r = 4, config["seq_len"], config["batch_size"], config["width"], config["ffn"], 3
    for layer in range(config["depth"]):
        diff = llama_terms.layer_bytes(config, layer, p) - llama_terms.layer_bytes(lora_config, layer, p)
        first = (2 * h + 1) * p * s * b if layer == 0 else 0  # x, rstd and q of layer 0
        assert diff == (2 * h + f) * p * s * b - 2 * r * p * s * b + first
        rows = {row.terms[0]: row.ledger_bytes for row in llama_terms.layer_rows(lora, layer, lora_config, p)}
        full_rows = {row.terms[0]: row.ledger_bytes for row in llama_terms.layer_rows(full, layer, config, p)}
        for term in ("o_in", "y2", "down_in"):  # the ledger's own buffers: there in full, gone under LoRA
            assert full_rows[term] > 0 and rows[term] == 0, term
        assert rows["lora"] == 2 * r * p * s * b


def test_step_table_is_the_accounts_figures():
    """`step_table` (what a worked example renders) reads the account: categories, terms, outside, totals."""
    config = normalize({**SHAPE, "optimizer": "adam", "lora_rank": 2})
    account = predicted_account(config)
    rows = {r.label: r for r in llama_terms.step_table(account, config)}
    assert rows["parameters"].ledger_bytes == account.registered_bytes["parameter"]
    assert rows["adam state"].ledger_bytes == account.registered_bytes["optimizer_state"]
    assert rows["total peak"].ledger_bytes == account.peak_bytes
    terms = [r for label, r in rows.items() if label.startswith("activations: ")]
    assert all(r.ledger_bytes == r.formula_bytes for r in terms)
    outside = [r for label, r in rows.items() if r.formula_bytes is not None and not label.startswith("activations")]
    assert sum(r.ledger_bytes for r in terms + outside) == account.activation_bytes

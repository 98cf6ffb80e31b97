"""The Megatron-LM formula s·b·h·(34 + 5·a·s/h), term by term, against the ledger's buffers of each GPT block."""
from __future__ import annotations

import pytest

from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import normalize
from memstudy.findings import megatron

S, B, H, A, DEPTH, VOCAB = 16, 3, 32, 4, 2, 29


def account(dtype="float32", dropout=0.1, checkpoint="none"):
    config = normalize(dict(model="gpt", vocab=VOCAB, seq_len=S, depth=DEPTH, width=H, heads=A, batch_size=B,
                            dtype=dtype, dropout=dropout, checkpoint=checkpoint))
    return Workload(config).ledger_step()


def rows(acc, layer, itemsize=4, dropout=0.1):
    return megatron.block_rows(acc, layer, S, B, H, A, itemsize, dropout)


def test_the_papers_coefficients_and_this_dtypes():
    assert megatron.coefficients(2) == (34, 5)  # the paper: 16-bit activations, 1-byte masks
    assert megatron.coefficients(4) == (66, 9)  # float32
    assert megatron.coefficients(4, dropout=0.0) == (64, 4)  # no masks, no separate dropout output
    assert megatron.coefficients(8) == (130, 17)
    assert megatron.statistics_itemsize(2) == 4  # a 16-bit layer norm keeps float32 statistics
    assert megatron.layer_bytes(S, B, H, A, 2, 0.1) == S * B * H * 34 + 5 * A * S * S * B
    assert megatron.fraction_removed(2048, 96, 12288) == pytest.approx(80 / 114)  # GPT-3: ~70%
    assert round(megatron.fraction_removed(2048, 96, 12288), 2) == 0.70


@pytest.mark.parametrize("dtype,itemsize", [("bfloat16", 2), ("float16", 2), ("float32", 4), ("float64", 8)])
@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_every_term_of_every_block_equals_the_formula(dtype, itemsize, dropout):
    acc = account(dtype, dropout)
    linear, quadratic = megatron.coefficients(itemsize, dropout)
    for layer in range(DEPTH):
        table = rows(acc, layer, itemsize, dropout)
        in_formula = [r for r in table if r.terms]
        assert len(in_formula) == 13  # 14 terms: q, k and v are one buffer, one row covering two terms
        for r in in_formula:
            assert r.ledger_bytes == r.formula_bytes, (layer, r.label)
        assert megatron.total(table) == S * B * H * linear + quadratic * A * S * S * B
        assert megatron.total(table) == megatron.layer_bytes(S, B, H, A, itemsize, dropout)
        extras = [r for r in table if not r.terms]
        assert [r.label for r in extras] == [megatron.LN_STATISTICS]  # nothing unrecognised
        # mean and 1/std, per row, of two norms (float32 beside 16-bit activations)
        assert extras[0].ledger_bytes == 2 * 2 * S * B * max(itemsize, 4) == megatron.statistics_bytes(S, B, itemsize)


def test_bfloat16_gives_the_papers_34_and_5_term_by_term_without_conversion():
    acc = account("bfloat16", 0.1)
    for layer in range(DEPTH):
        table = rows(acc, layer, 2, 0.1)
        assert megatron.total(table) == S * B * H * 34 + 5 * A * S * S * B
        masks = [r for r in table if r.terms and megatron.TERM[r.terms[0]].mask]
        assert [r.ledger_bytes for r in masks] == [A * S * S * B, S * B * H, S * B * H]  # 1 byte per element


def test_what_changes_at_dropout_0():
    """No masks, and attention over values saves the softmax output itself: three rows go to 0 bytes."""
    with_dropout, without = rows(account(dropout=0.1), 0), rows(account(dropout=0.0), 0, dropout=0.0)
    gone = {r.label for r, r0 in zip(with_dropout, without) if r.ledger_bytes and not r0.ledger_bytes}
    assert gone == {"softmax dropout mask", "dropout output (attention over values)", "projection dropout mask",
                    "MLP dropout mask"}
    assert megatron.total(with_dropout) - megatron.total(without) == 2 * S * B * H + 5 * A * S * S * B


def test_selective_checkpointing_leaves_exactly_the_linear_term():
    acc = account(checkpoint="selective")
    for layer in range(DEPTH):
        table = rows(acc, layer)
        quadratic = [r for r in table if r.terms and megatron.TERM[r.terms[0]].quadratic]
        assert [r.ledger_bytes for r in quadratic] == [0, 0, 0]
        assert megatron.total(table) == 66 * S * B * H  # β = 0
    recomputed = [b for b in acc.buffers if b.phase == "recompute" and b.category == "activation"]
    assert sum(b.nbytes for b in recomputed) == DEPTH * 9 * A * S * S * B  # each block's core, in backward


def test_full_checkpointing_holds_segment_inputs_only():
    acc = account(checkpoint="every:1")
    for layer in range(DEPTH):
        table = rows(acc, layer)
        assert megatron.total(table) == 0
        assert [(r.label, r.ledger_bytes) for r in table if not r.terms] == [(megatron.SEGMENT_INPUT, S * B * H * 4)]


# What each strategy holds for backward beyond the formula's terms, per block: the layer norms' statistics while
# the blocks' buffers are held; a segment's input where a segment starts (sqrt at depth 2: one segment of both).
# Anything else (an unrecognised buffer, a buffer the Checkpoint op saves beyond its inputs) fails.
EXTRAS = {
    "none": [[megatron.LN_STATISTICS]] * DEPTH,
    "selective": [[megatron.LN_STATISTICS]] * DEPTH,
    "every:1": [[megatron.SEGMENT_INPUT]] * DEPTH,
    "sqrt": [[megatron.SEGMENT_INPUT], []],
}


def live_activation_bytes_at_end_of_forward(acc) -> int:
    """From the ledger's events alone: the activation bytes alive after the last forward event."""
    category = {b.key: b.category for b in acc.buffers}
    last_forward = max(i for i, e in enumerate(acc.events) if e.phase == "forward")
    return sum(e.delta_bytes for e in acc.events[: last_forward + 1] if category[e.key] == "activation")


@pytest.mark.parametrize("checkpoint", list(EXTRAS))
def test_outside_rows_and_blocks_account_for_every_saved_byte(checkpoint):
    """Under every checkpoint strategy: every byte alive for backward when forward ends is in exactly one row (a
    formula term, a named extra, or a row outside the blocks), and nothing is left unrecognised."""
    acc = account(checkpoint=checkpoint)
    blocks = 0
    for layer in range(DEPTH):
        table = rows(acc, layer)
        assert [r.label for r in table if not r.terms] == EXTRAS[checkpoint][layer], (checkpoint, layer)
        if checkpoint in ("every:1", "sqrt") and EXTRAS[checkpoint][layer]:
            segment_input = next(r for r in table if r.label == megatron.SEGMENT_INPUT)
            assert (segment_input.ledger_bytes, segment_input.buffers) == (S * B * H * 4, 1)
        blocks += sum(r.ledger_bytes for r in table)
    outside = megatron.outside_rows(acc, DEPTH)
    assert not any("other" in r.label for r in outside), [r.label for r in outside]
    held = sum(r.ledger_bytes for r in outside if r.label != "token ids and targets (the step's input)")
    assert blocks + held == live_activation_bytes_at_end_of_forward(acc)
    if checkpoint == "none":  # nothing is recomputed: the end of forward is the activations' maximum
        assert blocks + held == acc.activation_bytes


def test_outside_rows_name_what_the_step_holds_outside_the_blocks():
    acc = account()
    outside = megatron.outside_rows(acc, DEPTH)
    labels = {r.label: r.ledger_bytes for r in outside}
    assert labels["loss: softmax of the logits (b·s·vocab)"] == B * S * VOCAB * 4
    assert labels["embedding: position ids (saved by wpe's lookup)"] == S * 8
    assert labels["embedding: dropout mask"] == S * B * H
    assert labels["head: ln_f statistics"] == 2 * S * B * 4
    assert labels["token ids and targets (the step's input)"] == B * (S + 1) * 8
    assert not any("other" in label for label in labels)
    blocks = sum(sum(r.ledger_bytes for r in rows(acc, layer)) for layer in range(DEPTH))
    held = sum(r.ledger_bytes for r in outside) - labels["token ids and targets (the step's input)"]
    assert blocks + held == acc.activation_bytes

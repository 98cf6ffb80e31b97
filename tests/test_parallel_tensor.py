"""Tensor and sequence parallelism (memstudy/parallel/tensor.py): the rank's shards, its refusals, and Korthikanti
et al. 2022's Table 2 from the rank's graph. Prediction = ledger for these ranks is checked in tests/test_predict.py
(its grid has tensor_parallel and sequence_parallel cells for gpt and llama)."""
from __future__ import annotations

import pytest

from memstudy import cli
from memstudy.config import ConfigError, normalize
from memstudy.findings import korthikanti, megatron
from memstudy.measure.predict import predict, predicted_account

GPT = dict(model="gpt", depth=2, width=32, heads=4, seq_len=8, vocab=23, batch_size=2, optimizer="adam")
LLAMA = dict(model="llama", depth=2, width=32, heads=4, kv_heads=2, ffn=48, seq_len=8, vocab=23, batch_size=2,
             optimizer="adam")


@pytest.mark.parametrize("raw,wrong", [
    ({**GPT, "tensor_parallel": 3}, "tensor_parallel 3 must divide heads (4)"),
    ({**LLAMA, "tensor_parallel": 4}, "tensor_parallel 4 must divide kv_heads (2)"),
    ({**LLAMA, "ffn": 50, "tensor_parallel": 4, "kv_heads": 4}, "tensor_parallel 4 must divide ffn (50)"),
    ({**GPT, "sequence_parallel": True}, "sequence_parallel needs tensor_parallel > 1"),
    ({**GPT, "tensor_parallel": 4, "sequence_parallel": True, "seq_len": 6}, "must divide seq_len (6)"),
    ({**GPT, "tensor_parallel": 2, "lora_rank": 2}, "LoRA adapters are not split"),
])
def test_refused_with_one_line(raw, wrong):
    with pytest.raises(ConfigError) as info:
        normalize(raw)
    message = str(info.value)
    assert wrong in message and "\n" not in message


def test_cli_refuses_t_not_dividing_heads_exit_2(capsys):
    status = cli.main(["predict", "--model", "gpt", "--heads", "4", "--width", "32", "--tensor-parallel", "3"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "tensor_parallel 3 must divide heads (4)" in captured.err


@pytest.mark.parametrize("raw", [GPT, LLAMA])
def test_rank_holds_its_shards(raw):
    """Each rank of t = 2 holds the blocks' Linear weights halved (the embeddings, norms and the row-parallel biases
    whole), and its attention scores for half the heads."""
    one = predicted_account(normalize(raw))
    two = predicted_account(normalize({**raw, "tensor_parallel": 2}))
    assert two.registered_bytes["parameter"] < one.registered_bytes["parameter"]
    block = {name: shape for name, shape in _shapes(raw, 1).items() if ".0." in name}
    halves = _shapes(raw, 2)
    for name, shape in block.items():
        if name.endswith("weight") and len(shape) == 2:
            assert halves[name][0] * halves[name][1] * 2 == shape[0] * shape[1], name
    assert two.activation_bytes < one.activation_bytes


def _shapes(raw: dict, t: int) -> dict:
    from memstudy.autograd.meta import meta_mode
    from memstudy.config import get_family

    config = normalize({**raw, "tensor_parallel": t})
    with meta_mode():
        model = get_family(config["model"]).build(config)
    return {name: p.shape for name, p in model.named_parameters()}


def test_sequence_parallel_saves_the_local_tokens_and_communicates():
    """Under sequence parallelism the layer norms' inputs are s/t tokens and the collectives' buffers are
    `communication` (the gathered Linear inputs, the reduce-scattered outputs)."""
    raw = {**GPT, "dropout": 0.1, "dtype": "bfloat16"}
    tp = predicted_account(normalize({**raw, "tensor_parallel": 2}))
    sp = predicted_account(normalize({**raw, "tensor_parallel": 2, "sequence_parallel": True}))
    ln_inputs = [b for b in sp.buffers if b.saved_by == "layer_norm" and b.layer == 0 and b.phase == "forward"
                 and b.role not in ("mean", "rstd")]
    assert ln_inputs and all(b.shape == (2, 4, 32) for b in ln_inputs)
    assert sp.activation_bytes < tp.activation_bytes
    assert sp.max_by_category["communication"] > 0
    ops = {b.op for b in sp.buffers if b.category == "communication"}
    assert {"all_gather", "reduce_scatter_to_sequence", "reduce_scatter_backward"} <= ops


def test_korthikanti_table2_rows_equal_the_paper_term_by_term():
    """The six rows of Table 2 for one bfloat16 layer of the 22B configuration (t = 8): the ledger's bytes of the
    paper's terms equal its expression, each term too; the layer norms' statistics are a line of their own."""
    rows = korthikanti.table2()
    assert len(rows) == 6
    for row in rows:
        assert row.ledger_bytes == row.formula_bytes, row.setting.label
        for line in row.rows:
            if line.terms:
                assert line.ledger_bytes == line.formula_bytes, (row.setting.label, line.label)
    s, h, a, t = 2048, 6144, 64, 8
    no_parallel, tp, sp, tp_selective, sp_selective, full = (r.ledger_bytes for r in rows)
    assert no_parallel == s * h * 34 + 5 * a * s * s  # sbh(34 + 5as/h), b = 1
    assert tp == s * h * 10 + s * h * 24 // t + 5 * a * s * s // t
    assert sp == s * h * 34 // t + 5 * a * s * s // t
    assert tp_selective == s * h * 10 + s * h * 24 // t
    assert sp_selective == 34 * s * h // t
    assert full == 2 * s * h
    statistics = [line for line in rows[2].rows if line.label == megatron.LN_STATISTICS]
    assert statistics[0].ledger_bytes == 4 * s * 4 // t  # float32 mean and 1/std of two norms, s/t tokens


def test_predict_reports_one_rank():
    fields = predict({**LLAMA, "tensor_parallel": 2, "sequence_parallel": True})
    assert fields["predicted_peak_bytes"] < predict(LLAMA)["predicted_peak_bytes"]


# --- pipeline parallelism (memstudy/parallel/pipeline.py) --------------------------------------------------------
@pytest.mark.parametrize("raw,wrong", [
    ({**GPT, "depth": 3, "pipeline_parallel": 2, "microbatches": 2}, "pipeline_parallel 2 must divide depth (3)"),
    ({**GPT, "pipeline_parallel": 2, "microbatches": 1}, "microbatches 1 < pipeline_parallel 2: the 1f1b schedule"),
    ({**GPT, "microbatches": 3}, "microbatches 3 must divide batch_size (2)"),
    ({**GPT, "model": "cnn", "depth": 2, "pipeline_parallel": 2, "microbatches": 2}, "builds no pipeline stages"),
])
def test_pipeline_refused_with_one_line(raw, wrong):
    with pytest.raises(ConfigError) as info:
        normalize({k: v for k, v in raw.items() if raw.get("model") != "cnn" or k not in GPT or k in
                   ("model", "depth", "batch_size", "optimizer")})
    assert wrong in str(info.value) and "\n" not in str(info.value)


def test_cli_refuses_too_few_microbatches_exit_2(capsys):
    status = cli.main(["predict", "--model", "gpt", "--depth", "4", "--pipeline-parallel", "4", "--microbatches", "2"])
    captured = capsys.readouterr()
    assert status == 2 and len(captured.err.strip().splitlines()) == 1
    assert "microbatches 2 < pipeline_parallel 4" in captured.err


def test_schedule_orders():
    from memstudy.parallel.pipeline import order

    assert order(4, 0, 6, "1f1b") == [("F", 0), ("F", 1), ("F", 2), ("F", 3), ("B", 0), ("F", 4), ("B", 1),
                                      ("F", 5), ("B", 2), ("B", 3), ("B", 4), ("B", 5)]
    assert order(4, 3, 2, "1f1b") == [("F", 0), ("B", 0), ("F", 1), ("B", 1)]
    assert order(2, 0, 2, "gpipe") == [("F", 0), ("F", 1), ("B", 0), ("B", 1)]


def test_first_stage_holds_p_microbatches_under_1f1b_and_m_under_gpipe():
    """The first of p = 4 stages with m = 8 microbatches: 1F1B holds 4 microbatches' saved tensors at once, GPipe
    all 8, each microbatch's the same (one microbatch on one stage: the p = 4, m = 1 GPipe step)."""
    raw = {**GPT, "depth": 4, "batch_size": 8, "dropout": 0.1, "pipeline_parallel": 4}
    f1b = predicted_account(normalize({**raw, "microbatches": 8, "schedule": "1f1b"}))
    gpipe = predicted_account(normalize({**raw, "microbatches": 8, "schedule": "gpipe"}))
    single = predicted_account(normalize({**raw, "microbatches": 1, "schedule": "gpipe", "batch_size": 1}))
    assert f1b.activation_bytes == 4 * single.activation_bytes
    assert gpipe.activation_bytes == 8 * single.activation_bytes
    last = predicted_account(normalize({**raw, "microbatches": 8, "schedule": "1f1b", "rank": 3}))
    assert "communication" in last.max_by_category and last.max_by_category["communication"] > 0


def test_first_stage_total_is_l_layers_worth_of_34sbh_over_t():
    """Table 3's path at a small size (the published block runs the 175B, 530B and 1T stages, slow): under 1F1B with
    sequence parallelism and selective recomputation the first of p stages holds p microbatches of L/p layers, the
    blocks' paper terms 34·s·b·h·L/t exactly; the embedding's masks and the norms' statistics are lines of their own."""
    raw = {**korthikanti.stage_config("175B"), "depth": 8, "width": 64, "heads": 8, "seq_len": 16, "vocab": 50,
           "pipeline_parallel": 4, "microbatches": 4, "batch_size": 4, "tensor_parallel": 2}
    r = korthikanti.first_stage("small", raw)
    assert r.blocks_bytes - r.statistics_bytes == r.formula_bytes == 34 * 16 * 64 * 8 // 2
    assert r.statistics_bytes == 4 * 4 * (16 // 2) * 8  # 4 float32 values per token, s/t tokens, L layers' worth
    assert r.embedding_bytes > 0 and r.other_bytes == 0


def test_which_strategy_cuts_which_category():
    """memstudy.findings.parallel at a small size (the published block runs a mid-size GPT and Llama, slow): tensor
    parallelism cuts parameters, gradients, optimiser state and activations; ZeRO 1 the optimiser state only; the
    paper's expression is below the ledger's activations by what the head and embeddings hold (never above)."""
    from memstudy.findings import parallel

    base = dict(model="gpt", depth=4, width=64, heads=8, seq_len=16, vocab=50, batch_size=8, dropout=0.1,
                precision="bf16-master", optimizer="adam")
    strategies = tuple(s for s in parallel.STRATEGIES if s[0] in ("one device", "t 8 + sequence parallel",
                                                                  "p 4, 1f1b, m 8 (first stage)", "ZeRO 1, N 8"))
    rows = parallel.strategy_rows(base, strategies)
    cut = parallel.cuts(rows)
    assert set(cut["t 8 + sequence parallel"]) >= {"parameter", "gradient", "optimizer_state", "activation"}
    assert cut["ZeRO 1, N 8"] == ["optimizer_state"]
    for r in rows:
        if r.formula_activation_bytes is not None:
            assert 0 < r.formula_activation_bytes <= r.bytes_by_category["activation"], r.label


def test_a_spec_may_skip_refused_combinations():
    """[run] skip_refused: grid points a family refuses (t not dividing heads) are left out of the cells; without it
    the spec is refused in one line naming the combination."""
    from memstudy.run.spec import SpecError, parse_spec

    data = {"grid": {"model": "gpt", "depth": 2, "width": 48, "heads": [4, 6], "seq_len": 8, "vocab": 23,
                     "tensor_parallel": [1, 4]}, "run": {"repeats": 1}}
    with pytest.raises(SpecError, match="tensor_parallel 4 must divide heads \\(6\\)"):
        parse_spec(data, name="tp")
    spec = parse_spec({**data, "run": {"repeats": 1, "skip_refused": True}}, name="tp")
    assert sorted((c["heads"], c["tensor_parallel"]) for c in spec.cells()) == [(4, 1), (4, 4), (6, 1)]
    with pytest.raises(SpecError, match="skip_refused must be true or false"):
        parse_spec({**data, "run": {"skip_refused": "yes"}}, name="tp")


# --- ZeRO over the data-parallel group of tensor-parallel ranks ----------------------------------------------------
ZERO_STATES = {0: lambda p, n: 16 * p, 1: lambda p, n: 4 * p + 12 * p // n, 2: lambda p, n: 2 * p + 14 * p // n,
               3: lambda p, n: 16 * p // n}


@pytest.mark.parametrize("raw", [GPT, LLAMA], ids=["gpt", "llama"])
@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp", "tp+sp"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_with_tensor_parallelism_reaches_every_linear(raw, sequence_parallel, stage):
    """ZeRO wraps each module's forward; the row- (and sequence-) parallel Linears must run through it too, so that
    every parameter of the rank's shard is reduced and sharded: model states are ZeRO's Table 1 of the rank's Ψ, and
    stages 0-1 all-reduce every gradient (a tied weight once per module that uses it, as at t = 1). Before the
    products moved inside `Linear.forward`, stage 3 raised and stages 0-2 skipped the row-parallel weights."""
    base = {**raw, "precision": "bf16-master", "param_persistence_threshold": 0, "data_parallel": 2}
    tp = dict(tensor_parallel=2, sequence_parallel=sequence_parallel)
    psi = predict({**base, **tp, "data_parallel": 1})["parameter_count"]  # the rank's Ψ (its shards)
    rank = predict({**base, **tp, "zero": stage})
    held = rank["parameter_bytes"] + rank["gradient_bytes"] + rank["optimizer_state_bytes"]
    assert held == ZERO_STATES[stage](psi, 2)
    reduced = rank["predicted_collective_bytes"].get("all_reduce" if stage < 2 else "reduce_scatter", [0, 0])[1]
    one_device = predict({**base, "zero": 0})  # t = 1: how many bytes beyond 2Ψ a tied weight's second use adds
    tied_extra = one_device["predicted_collective_bytes"]["all_reduce"][1] - 2 * one_device["parameter_count"]
    assert reduced == 2 * psi + tied_extra


def test_every_rank_has_one_place_in_megatrons_order():
    """rank → (tensor rank, data-parallel rank, pipeline stage) is one-to-one over the t·n·p ranks (tensor-parallel
    fastest): ZeRO takes its data-parallel rank from here, not the global rank (a global rank ≥ n raised before)."""
    from memstudy.parallel.pipeline import stage_of
    from memstudy.parallel.rank import data_parallel_rank

    for t, n, p in [(1, 1, 1), (2, 3, 1), (1, 2, 4), (4, 2, 2), (2, 2, 3)]:
        places = set()
        for rank in range(t * n * p):
            config = dict(tensor_parallel=t, data_parallel=n, pipeline_parallel=p, rank=rank)
            place = (rank % t, data_parallel_rank(config), stage_of(config))
            assert 0 <= place[1] < n and 0 <= place[2] < p
            places.add(place)
        assert len(places) == t * n * p

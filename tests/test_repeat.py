"""Repeated blocks predicted once (nn.repeat, memory.predict's memoised path) give the account of the step in which
every block runs, field for field.

For every family (the built-in ones, a user's file that adopts `nn.repeat.Plan`, one that does not) over a grid of
checkpoint strategies (none, sqrt, every:K, selective), saved-tensor policies, optimisers, dtypes and modes, at
depths where runs of alike blocks and of alike checkpoint segments are compressed: every field of the prediction,
the peak's event, the number of events and buffers and each category's maximum equal the plain run's. The fold that
works out a repeated run's account is checked against unrolling it on random event lists; a family whose blocks do
not chain falls back to running every block; absurd depths are predicted with the textbook's law intact.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from memstudy.config import normalize
from memstudy.measure import ledger as ledger_module
from memstudy.measure import predict as predict_module
from memstudy.measure.ledger import CATEGORIES, _flat, _summarise
from memstudy.measure.predict import memoised_account, predict, predicted_account, prediction_fields
from memstudy.nn.models.registry import builtin_names
from test_predict import grid, rotate

ROOT = Path(__file__).resolve().parents[1]
DECLARED = str(ROOT / "tests" / "families" / "declared.py") + ":DeclaredFamily"
UNDECLARED = str(ROOT / "examples" / "residual.py") + ":ResidualFamily"  # loops over plain lists
UNCHAINED = str(ROOT / "tests" / "families" / "unchained.py") + ":UnchainedFamily"
POLICIES = ("minimal", "all", "half")
MODES = ("train", "inference")

# depths at which every strategy compresses both levels: runs of > 3 alike blocks and of > 3 alike segments
# (MLP 26: sqrt = 4 segments of 6 and one of 2; GPT 16: sqrt = 4 of 4; every:2 = 8 of 2)
MLP_SHAPES = (dict(width=16, in_features=12, out_features=5, batch_size=7),
              dict(width=8, in_features=4, out_features=300, batch_size=50),  # the loss sets the peak
              dict(width=64, in_features=3, out_features=2, batch_size=100))  # an activation sets it
GPT_SHAPES = (dict(width=16, heads=4, seq_len=8, vocab=23, batch_size=3),
              dict(width=8, heads=2, seq_len=16, vocab=300, batch_size=4),  # the logits' softmax
              dict(width=32, heads=8, seq_len=32, vocab=11, batch_size=2))  # the attention scores

FAMILY_GRID: dict[str, list[dict]] = {
    "mlp": rotate([{"model": "mlp", "depth": 26, **c} for c in grid(
        checkpoint=("none", "sqrt", "every:1", "every:3"), policy=POLICIES, mode=MODES)],
        shape=range(len(MLP_SHAPES)), optimizer=("sgd", "momentum", "adam"), dtype=("float32", "float64"),
        activation=("relu", "sigmoid", "tanh"), bias=(True, False))
    + [{"model": "mlp", "depth": 26, **MLP_SHAPES[0], "lora_rank": 2, "checkpoint": c, "policy": p}
       for c in ("none", "sqrt") for p in POLICIES],
    "gpt": rotate([{"model": "gpt", "depth": 16 if c["checkpoint"] == "sqrt" else 10, **c} for c in grid(
        checkpoint=("none", "selective", "sqrt", "every:2"), policy=POLICIES, mode=MODES)],
        shape=range(len(GPT_SHAPES)), dropout=(0.0, 0.2), optimizer=("sgd", "adam", "momentum"),
        dtype=("float32", "float64"), bias=(True, False))
    + [{"model": "gpt", "depth": 10, **GPT_SHAPES[0], "lora_rank": 2, "checkpoint": c, "mode": m}
       for c in ("none", "every:2") for m in MODES],
    "llama": rotate([{"model": "llama", "depth": 16 if c["checkpoint"] == "sqrt" else 10, **c} for c in grid(
        checkpoint=("none", "selective", "sqrt", "every:2"), lora_rank=(0, 2), mode=MODES)],
        shape=range(2), policy=POLICIES, optimizer=("adam", "sgd", "momentum"), kv_heads=(4, 2, 1),
        tie=(False, True), dtype=("float32", "float64")),
    "seed": [dict(model="seed", width=16, in_features=12, out_features=5, batch_size=7, lam=0.1, policy=p, mode=m)
             for p in POLICIES for m in MODES[:1]] + [dict(model="seed", mode="inference")],
    "cnn": [dict(model="cnn", depth=3, width=4, image_size=16, batch_size=3, checkpoint=c, policy=p, mode=m)
            for c, p, m in (("none", "minimal", "train"), ("every:1", "half", "train"), ("sqrt", "all", "inference"))],
    "declared": rotate([{"model": DECLARED, "depth": 16, **c} for c in grid(
        checkpoint=("none", "sqrt", "every:2"), policy=POLICIES, mode=MODES)],
        optimizer=("adam", "sgd", "momentum"), dtype=("float32", "float64")),
    "undeclared": [dict(model=UNDECLARED, depth=6, width=8, in_features=4, batch_size=3, mode=m) for m in MODES],
}
# the 16-bit precisions (16-bit ops, master weights, the loss scaler, autocast) with repeated blocks: gpt and llama
# under every checkpoint strategy, in turn. Autocast's cached weight copies live until the forward pass ends (the cast
# cache), past the block that made them: each copy's own, scaled where they die (ledger._check_repeats)
for _family, _depth in (("gpt", 10), ("llama", 10)):
    FAMILY_GRID[_family] += rotate([{"model": _family, "depth": _depth, "optimizer": "adam", **c} for c in grid(
        precision=("bf16-true", "bf16-master", "16-master", "bf16-mixed", "16-mixed"), mode=MODES)],
        checkpoint=("none", "selective", "every:2"))
    FAMILY_GRID[_family] += [{"model": _family, "depth": 16, "optimizer": "adam", "precision": p, "checkpoint": "sqrt",
                              "mode": "train"} for p in ("bf16-mixed", "16-mixed")]

# microbatches (gradient accumulation, pipeline stages): each block's gradient from one microbatch is freed by the
# next microbatch's backward of the same block (a run of the blocks freeing what another run of as many made)
for _family, _extra in (("gpt", {}), ("llama", {"kv_heads": 2})):
    FAMILY_GRID[_family] += [{"model": _family, "depth": 10, "optimizer": "adam", "batch_size": 4, **_extra, **c}
                             for c in ({"microbatches": 2}, {"microbatches": 4, "precision": "bf16-mixed"},
                                       {"pipeline_parallel": 2, "microbatches": 2, "checkpoint": "every:1"},
                                       {"data_parallel": 2, "zero": 2, "microbatches": 2, "precision": "bf16-master"},
                                       {"data_parallel": 2, "zero": 3, "microbatches": 2, "checkpoint": "selective"})]


def test_autocast_predictions_repeat_blocks():
    """Autocast's cached weight copies outlive the block that made them (the cache drops them when the forward pass
    ends); each repeated block's copies are its own, so the memoised predictor still runs one block for many (it
    ran every block before) and gives the full account's figures."""
    for raw in ({"model": "gpt", "depth": 10, "optimizer": "adam", "precision": "bf16-mixed", "mode": "inference"},
                {"model": "llama", "depth": 16, "optimizer": "adam", "precision": "bf16-mixed", "checkpoint": "sqrt"}):
        config = normalize(raw)
        memoised = memoised_account(config)
        assert memoised.repeated
        assert totals(memoised) == totals(predicted_account(config))


LLAMA_SHAPES = (dict(width=16, heads=4, ffn=24, seq_len=8, vocab=23, batch_size=3),
                dict(width=32, heads=8, ffn=40, seq_len=32, vocab=11, batch_size=2))  # the attention scores
REPEATING = {"mlp", "gpt", "llama", "declared"}  # families that build their blocks through nn.repeat.Plan


def _shaped(raw: dict) -> dict:
    raw = dict(raw)
    shape = raw.pop("shape", None)
    if shape is not None:
        raw.update({"mlp": MLP_SHAPES, "gpt": GPT_SHAPES, "llama": LLAMA_SHAPES}[raw["model"]][shape])
    return raw


def totals(account) -> dict:
    """Everything a memoised account states: the prediction's fields and the step's totals behind them."""
    return {**prediction_fields(account), "peak_event": account.peak_event, "event_count": account.event_count,
            "max_by_category": account.max_by_category, "baseline_bytes": account.baseline_bytes}


def cases() -> list:
    out = []
    for family, configs in FAMILY_GRID.items():
        out += [pytest.param(family, _shaped(c), id=f"{family}-{i}") for i, c in enumerate(configs)]
    return out


def test_the_grid_covers_every_builtin_family():
    assert set(builtin_names()) <= set(FAMILY_GRID)


@pytest.mark.parametrize("family,raw", cases())
def test_memoised_prediction_equals_running_every_block(family, raw, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = normalize(raw)
    plain = predicted_account(config)
    memoised = memoised_account(config)
    assert totals(memoised) == totals(plain)
    assert memoised.event_count == len(plain.raw_events) and memoised.buffer_count == len(plain.records)
    assert memoised.repeated == (family in REPEATING)  # it compressed where it could, and only there
    if memoised.repeated:
        assert len(memoised.raw_events) < len(plain.raw_events)
    prediction, fields = predict(raw), prediction_fields(plain)
    assert prediction == predict(raw, memoise=False)
    assert {k: prediction[k] for k in fields} == fields  # (a parallel configuration's rank fields besides)


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(1, 40), every=st.integers(0, 7), policy=st.sampled_from(POLICIES),
       mode=st.sampled_from(MODES), optimizer=st.sampled_from(("sgd", "momentum", "adam")),
       batch=st.integers(1, 60), width=st.integers(1, 12))
def test_memoised_mlp_equals_running_every_block_at_any_depth_and_segment_size(depth, every, policy, mode,
                                                                                optimizer, batch, width):
    checkpoint = "none" if every == 0 else ("sqrt" if every == 7 else f"every:{every}")
    config = normalize(dict(depth=depth, width=width, in_features=3, out_features=4, batch_size=batch,
                            checkpoint=checkpoint, policy=policy, mode=mode, optimizer=optimizer))
    assert totals(memoised_account(config)) == totals(predicted_account(config))


# --- the fold: a repeated run's account worked out equals the account of the run unrolled -------------------------

def _chunk(draw, level: int) -> list:
    """A random run: plain events (category, delta) and nested repeated runs ("repeat", copies, run)."""
    items = []
    for _ in range(draw(st.integers(1, 4))):
        if level < 2 and draw(st.booleans()):
            items.append(("repeat", draw(st.integers(1, 5)), _chunk(draw, level + 1)))
        else:
            items.append((draw(st.integers(0, len(CATEGORIES) - 1)), draw(st.integers(-50, 80))))
    return items


@st.composite
def runs(draw):
    return _chunk(draw, 0)


def _events(items, path, compressed, out, categories, ids) -> None:
    for item in items:
        if item[0] == "repeat":
            _, copies, inner = item
            if compressed:
                _events(inner, path + ((next(ids), copies),), True, out, categories, ids)
            else:
                for _ in range(copies):
                    _events(inner, path, False, out, categories, ids)
        else:
            category, delta = item
            categories.append(category)
            out.append((len(out), "forward", "op", None, len(categories) - 1, delta, path or None))


@settings(max_examples=200, deadline=None)
@given(items=runs())
def test_a_repeated_run_is_summarised_as_its_unrolled_run(items):
    import itertools

    compressed, unrolled, cat_c, cat_u = [], [], [], []
    _events(items, (), True, compressed, cat_c, itertools.count(1))
    _events(items, (), False, unrolled, cat_u, itertools.count(1))
    folded = _summarise(compressed, 0, len(compressed), 0, cat_c)
    flat = _flat(unrolled, 0, len(unrolled), cat_u)
    assert (folded.events, folded.delta, folded.total, folded.best, folded.best_at, folded.best_live, folded.top) \
        == (flat.events, flat.delta, flat.total, flat.best, flat.best_at, flat.best_live, flat.top)


# --- where it cannot apply, and where it must --------------------------------------------------------------------

def test_blocks_that_do_not_chain_fall_back_to_running_every_block(monkeypatch):
    """Block 0 hands on a view of a buffer twice the size the others make: the stand-in's copies would each free
    that much. The ledger sees it (RepeatMismatch) and the predictor runs every block instead."""
    monkeypatch.chdir(ROOT)
    mismatches = []
    check = ledger_module._check_repeats

    def spy(records, events):
        try:
            check(records, events)
        except ledger_module.RepeatMismatch as exc:
            mismatches.append(str(exc))
            raise

    monkeypatch.setattr(ledger_module, "_check_repeats", spy)
    for mode in MODES:
        config = normalize(dict(model=UNCHAINED, depth=7, mode=mode))
        memoised = memoised_account(config)
        assert not memoised.repeated and totals(memoised) == totals(predicted_account(config))
    assert len(mismatches) == 2 and "would not chain" in mismatches[0]


def test_absurd_depths_are_predicted_in_constant_time_with_the_law_intact():
    """Depth 10⁹ runs a handful of blocks and keeps the README's law: one width × itemsize activation per layer per
    example, plus the softmax probabilities; the same law the plain run gives at depth 40."""
    for depth in (40, 10 ** 9):
        for checkpoint in ("none", "every:1"):
            raw = dict(depth=depth, width=32, batch_size=16, checkpoint=checkpoint)
            prediction = predict(raw, memoise=depth > 40)
            if checkpoint == "none":
                assert prediction["predicted_activation_bytes"] == depth * 16 * 32 * 4 + 16 * 10 * 4
            assert prediction["parameter_bytes"] == 4 * (32 * 33 * depth + 33 * 10)
    from memstudy.autograd import meta
    from memstudy.nn import repeat
    from memstudy.nn.models.mlp import MLP

    with meta.meta_mode(), repeat.compressing():
        model = MLP(8, 8, 10 ** 9, 2, checkpoint="sqrt")
    assert len(model.hidden_layers) <= 12 and sum(model.hidden_layers.copies) == 10 ** 9


def test_a_deep_plain_family_is_refused_with_an_estimate(monkeypatch):
    monkeypatch.chdir(ROOT)
    config = normalize(dict(model=UNDECLARED, depth=10 ** 7, width=8))
    with pytest.raises(predict_module.PredictionTooSlow) as refused:
        predict(config, max_seconds=1.0)
    assert refused.value.estimate_seconds > 1.0 and "estimated from depths 16 and 64" in str(refused.value)
    assert predict_module.prediction_cost(normalize(dict(depth=10 ** 7))) is None  # the MLP repeats its blocks


def test_a_slow_prediction_shows_progress_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(predict_module, "PROGRESS_AFTER_SECONDS", 0.05)
    with predict_module._progress_bar(True, 2.0):
        time.sleep(0.6)
    assert "predicting" in capsys.readouterr().err
    with predict_module._progress_bar(True, None):  # quicker than the threshold: nothing drawn
        pass
    assert capsys.readouterr().err == ""


def test_a_cnn_prediction_does_as_much_work_for_any_batch(monkeypatch):
    """The convolution's weight gradient, summed example by example, runs one example on shape-only arrays (each
    allocates nothing): the prediction's numpy calls do not grow with the batch, and its figures stay exact."""
    from memstudy.autograd.meta import MetaArray

    calls = []
    functions, ufuncs = MetaArray.__array_function__, MetaArray.__array_ufunc__

    def counting_function(self, func, types, args, kwargs):
        calls.append(func.__name__)
        return functions(self, func, types, args, kwargs)

    def counting_ufunc(self, ufunc, method, *args, **kwargs):
        calls.append(ufunc.__name__)
        return ufuncs(self, ufunc, method, *args, **kwargs)

    monkeypatch.setattr(MetaArray, "__array_function__", counting_function)
    monkeypatch.setattr(MetaArray, "__array_ufunc__", counting_ufunc)
    counts = []
    for batch in (3, 300):
        calls.clear()
        predict(dict(model="cnn", depth=2, width=4, image_size=8, batch_size=batch))
        counts.append(len(calls))
    assert counts[0] == counts[1]
    monkeypatch.undo()
    raw = dict(model="cnn", depth=2, width=4, image_size=8, batch_size=5, conv_save="columns")
    assert totals(memoised_account(normalize(raw))) == totals(predicted_account(normalize(raw)))


def test_a_lora_target_naming_one_block_runs_every_block():
    """`lora_targets = hidden_layers.3` gives block 3 adapters the others lack: no block stands for it, so the
    compressed build refuses (NotRepeatable) and every block runs; the state bytes are counted the same way."""
    from memstudy.measure.predict import state_bytes

    raw = dict(depth=9, width=16, batch_size=3, lora_rank=2, lora_targets="hidden_layers.3", optimizer="adam")
    config = normalize(raw)
    memoised = memoised_account(config)
    plain = predicted_account(config)
    assert not memoised.repeated and totals(memoised) == totals(plain)
    held = state_bytes(config)
    assert held.trainable_bytes == 2 * 16 * 4 * 2 and held.parameter_bytes == plain.registered_bytes["parameter"]

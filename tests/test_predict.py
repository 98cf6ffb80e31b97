"""The prediction is the engine run on shape-only arrays: it must equal the measured ledger byte for byte.

For every registered model family, a grid of configurations runs twice in-process: on real arrays
(`Workload(config)`, a warm-up step, then `ledger_step()`, as a cell measures) and through `predict` (the same
Workload built inside `meta_mode()`). Every buffer the ledger saw, every event, every category's maximum, the
peak, its split, the saved tensors and the recomputed ops must be equal. A family registered without
configurations here fails the test: a new family (gpt, cnn) adds its own.
"""
from __future__ import annotations

import itertools
import json
import tracemalloc

import numpy as np
import pytest

from memstudy import cli
from memstudy.config import normalize
from memstudy.measure.generation import predicted_generation_figures
from memstudy.measure.ledger import StepAccount
from memstudy.measure.predict import predict, predicted_account
from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import PRECISIONS, builtin_names
from memstudy.parallel.rank import accounted_rank, is_parallel, notes as rank_notes


def grid(**axes) -> list[dict]:
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def rotate(configs: list[dict], **axes) -> list[dict]:
    """Each config gets the next combination of `axes` in turn (every combination appears, evenly)."""
    combos = grid(**axes)
    return [{**c, **combos[i % len(combos)]} for i, c in enumerate(configs)]


MLP_SHAPE = dict(depth=4, width=16, in_features=12, out_features=5, batch_size=7)
MLP_DEEPER = dict(depth=5, width=16, in_features=12, out_features=5, batch_size=7)
# shapes whose peak falls mid-backward (an activation's or the loss's), and a single layer
MLP_HEAVY = (dict(depth=7, width=16, in_features=12, out_features=5, batch_size=200),
             dict(depth=4, width=8, in_features=4, out_features=300, batch_size=50),
             dict(depth=1, width=64, in_features=3, out_features=2, batch_size=100))
CHECKPOINTS = ("none", "sqrt", "every:1", "every:3")
POLICIES = ("minimal", "all", "half")
SEED_SHAPE = dict(width=16, in_features=12, out_features=5, batch_size=7)
CNN_SHAPE = dict(depth=3, width=4, image_size=16, in_channels=3, classes=5, batch_size=3)
GPT_SHAPE = dict(depth=3, width=16, heads=4, seq_len=8, vocab=23, batch_size=3)
GPT_CHECKPOINTS = ("none", "selective", "sqrt", "every:2")
# a peak set by the logits' softmax (large vocab), and one set by the attention scores (long sequence, 8 heads)
GPT_HEAVY = (dict(depth=2, width=8, heads=2, seq_len=16, vocab=300, batch_size=4),
             dict(depth=1, width=32, heads=8, seq_len=64, vocab=11, batch_size=2))
LLAMA_SHAPE = dict(depth=3, width=16, heads=4, ffn=24, seq_len=8, vocab=23, batch_size=3)
# a peak set by the logits' softmax (large vocab, one K/V head), and one by the attention scores (long sequence)
LLAMA_HEAVY = (dict(depth=2, width=8, heads=2, kv_heads=1, ffn=12, seq_len=16, vocab=300, batch_size=4),
               dict(depth=1, width=32, heads=8, kv_heads=2, ffn=40, seq_len=64, vocab=11, batch_size=2))

# every precision (dtype x autocast x master weights x loss scaling: the registry's names, Lightning's and memstudy's)
PRECISION_NAMES = tuple(PRECISIONS)

FAMILY_CONFIGS: dict[str, list[dict]] = {
    # activation x dtype x optimiser x bias x mode, each with the next checkpoint x policy pair in turn; then
    # checkpoint x policy x mode in full at two settings; then the mid-backward-peak shapes
    "mlp": rotate([{"model": "mlp", **MLP_SHAPE, **c} for c in grid(
        activation=("relu", "sigmoid", "tanh"), dtype=("float32", "float64"), optimizer=("sgd", "momentum", "adam"),
        bias=(True, False), mode=("train", "inference"))], checkpoint=CHECKPOINTS[:3], policy=POLICIES)
    + [{"model": "mlp", **MLP_DEEPER, **fixed, **c}
       for fixed in (dict(activation="relu", dtype="float32", optimizer="adam", bias=True),
                     dict(activation="tanh", dtype="float64", optimizer="momentum", bias=False))
       for c in grid(checkpoint=CHECKPOINTS, policy=POLICIES, mode=("train", "inference"))]
    + [{"model": "mlp", **shape, **c} for shape in MLP_HEAVY for c in grid(checkpoint=CHECKPOINTS, policy=POLICIES)],
    "seed": rotate([{"model": "seed", **SEED_SHAPE, **c} for c in grid(
        activation=("relu", "sigmoid", "tanh"), dtype=("float32", "float64"), mode=("train", "inference"),
        policy=POLICIES, lam=(0.0, 0.1))], optimizer=("sgd", "momentum", "adam"))
    + [dict(model="seed", width=64, in_features=3, out_features=300, batch_size=100, lam=0.1, policy=policy)
       for policy in POLICIES],
    # conv_save x batch norm x checkpoint x mode in full, each with the next dtype x optimiser x policy in turn;
    # then an odd image side (floor-mode pooling), a single block, and the smallest image for the depth
    "cnn": rotate([{"model": "cnn", **CNN_SHAPE, **c} for c in grid(
        conv_save=("input", "columns"), batch_norm=(True, False), checkpoint=CHECKPOINTS[:3],
        mode=("train", "inference"))], precision=PRECISION_NAMES, optimizer=("sgd", "adam"), policy=POLICIES)
    + [dict(model="cnn", depth=2, width=3, image_size=13, in_channels=2, classes=4, batch_size=2, conv_save=cs)
       for cs in ("input", "columns")]
    + [dict(model="cnn", depth=1, width=8, image_size=6, in_channels=1, classes=3, batch_size=5, checkpoint="sqrt"),
       dict(model="cnn", depth=3, width=2, image_size=8, in_channels=3, classes=2, batch_size=2,
            conv_save="columns", optimizer="momentum")]
    # conv_algo: batched (the whole batch per GEMM) and auto under limits from everything fits to one example per
    # block, with each conv_save, mode, checkpoint and precision in turn
    + rotate([{"model": "cnn", **CNN_SHAPE, "batch_size": 5, **c} for c in grid(
        conv_algo=("batched", "auto"), conv_workspace=("64MiB", "20KB", "1KB"), conv_save=("input", "columns"))],
        mode=("train", "inference"), checkpoint=CHECKPOINTS[:3], precision=PRECISION_NAMES),
    # checkpoint (selective too) x dropout x mode, each with the next dtype x optimiser x policy x bias in turn;
    # then the heavy shapes with every checkpoint, dropout on
    "gpt": rotate([{"model": "gpt", **GPT_SHAPE, **c} for c in grid(
        checkpoint=GPT_CHECKPOINTS, dropout=(0.0, 0.2), mode=("train", "inference"), policy=POLICIES)],
        precision=PRECISION_NAMES, optimizer=("sgd", "momentum", "adam"), bias=(True, False))
    + [{"model": "gpt", **shape, "dropout": 0.1, "optimizer": "adam", "checkpoint": checkpoint}
       for shape in GPT_HEAVY for checkpoint in GPT_CHECKPOINTS]
    + rotate([{"model": "gpt", **GPT_SHAPE, "lora_rank": 2, **c} for c in grid(
        checkpoint=GPT_CHECKPOINTS, policy=POLICIES)], dropout=(0.0, 0.2), optimizer=("sgd", "adam")),
    # checkpoint x LoRA x mode x policy in full, each with the next dtype x optimiser x kv_heads x tie in turn; then
    # the heavy shapes with every checkpoint, LoRA on and off
    "llama": rotate([{"model": "llama", **LLAMA_SHAPE, **c} for c in grid(
        checkpoint=GPT_CHECKPOINTS, lora_rank=(0, 3), mode=("train", "inference"), policy=POLICIES)],
        precision=PRECISION_NAMES, optimizer=("sgd", "momentum", "adam"), kv_heads=(4, 2, 1), tie=(False, True))
    + [{"model": "llama", **shape, "optimizer": "adam", "checkpoint": checkpoint, "lora_rank": lora}
       for shape in LLAMA_HEAVY for checkpoint in GPT_CHECKPOINTS for lora in (0, 2)],
}
# mode generate: cache x the prefill's logits, each with the next dtype x new_tokens (x kv_heads, tie, LoRA) in turn
FAMILY_CONFIGS["gpt"] += rotate([{"model": "gpt", **GPT_SHAPE, "mode": "generate", **c} for c in grid(
    kv_cache=("dynamic", "static"), prefill_logits=("last", "all"))], dtype=("float32", "float64"), new_tokens=(1, 3))
FAMILY_CONFIGS["llama"] += rotate([{"model": "llama", **LLAMA_SHAPE, "mode": "generate", **c} for c in grid(
    kv_cache=("dynamic", "static"), prefill_logits=("last", "all"), kv_heads=(4, 1))],
    dtype=("float32", "float64"), new_tokens=(1, 3, 5), tie=(False, True), lora_rank=(0, 2))
# attention flash (the fused core): checkpoint x mode, each with the next precision x policy x optimiser (x kv_heads) in
# turn; a sequence longer than a key tile; and mode generate (the prefill and each decode step through it)
FLASH_LONG = dict(depth=1, width=16, heads=2, seq_len=160, vocab=11, batch_size=1)
FAMILY_CONFIGS["gpt"] += rotate([{"model": "gpt", **GPT_SHAPE, "attention": "flash", **c} for c in grid(
    checkpoint=GPT_CHECKPOINTS, mode=("train", "inference"))], precision=PRECISION_NAMES, policy=POLICIES,
    optimizer=("sgd", "adam")) + [
    {"model": "gpt", **FLASH_LONG, "attention": "flash", "checkpoint": c} for c in ("none", "selective")] + [
    {"model": "gpt", **GPT_SHAPE, "attention": "flash", "mode": "generate", "kv_cache": cache, "new_tokens": 3}
    for cache in ("dynamic", "static")]
FAMILY_CONFIGS["llama"] += rotate([{"model": "llama", **LLAMA_SHAPE, "attention": "flash", **c} for c in grid(
    checkpoint=GPT_CHECKPOINTS, mode=("train", "inference"))], precision=PRECISION_NAMES, policy=POLICIES,
    optimizer=("sgd", "adam"), kv_heads=(4, 2, 1)) + [
    {"model": "llama", **FLASH_LONG, "ffn": 24, "kv_heads": 1, "attention": "flash", "precision": p}
    for p in ("32-true", "bf16-mixed")] + [
    {"model": "llama", **LLAMA_SHAPE, "attention": "flash", "mode": "generate", "kv_cache": cache, "kv_heads": 2,
     "new_tokens": 3, "dtype": dtype} for cache, dtype in (("dynamic", "float64"), ("static", "float32"))]

# every family in every precision, train and inference, Adam (the cnn, gpt and llama rotations above also pair each
# precision with checkpoints, policies and optimisers; the mlp's and seed's stay float32 x float64)
SHAPES = {"mlp": MLP_SHAPE, "seed": SEED_SHAPE, "cnn": CNN_SHAPE, "gpt": {**GPT_SHAPE, "dropout": 0.1},
          "llama": {**LLAMA_SHAPE, "kv_heads": 2}}
for _family, _shape in SHAPES.items():
    FAMILY_CONFIGS[_family] += [{"model": _family, **_shape, "optimizer": "adam", **c} for c in grid(
        precision=PRECISION_NAMES, mode=("train", "inference"))]
# LoRA on the MLP's hidden layers (all-linear), every checkpoint x policy
FAMILY_CONFIGS["mlp"] += [{"model": "mlp", **MLP_SHAPE, "lora_rank": 2, "checkpoint": c, "policy": p,
                           "optimizer": "adam"} for c in CHECKPOINTS for p in POLICIES]
# tensor parallelism (t = 2, 4) x sequence parallelism x every checkpoint, each with the next precision x policy x
# dropout (gpt) or kv_heads (llama) in turn (memstudy/parallel/tensor.py: the rank's shards and collectives)
FAMILY_CONFIGS["gpt"] += rotate([{"model": "gpt", **GPT_SHAPE, "optimizer": "adam", **c} for c in grid(
    tensor_parallel=(2, 4), sequence_parallel=(False, True), checkpoint=GPT_CHECKPOINTS)],
    precision=("32-true", "bf16-mixed", "bf16-true", "16-mixed"), policy=POLICIES, dropout=(0.0, 0.2))
FAMILY_CONFIGS["llama"] += rotate([{"model": "llama", **LLAMA_SHAPE, "optimizer": "adam", **c,
                                    "kv_heads": 2 if c["tensor_parallel"] == 2 else 4} for c in grid(  # GQA at t = 2
    tensor_parallel=(2, 4), sequence_parallel=(False, True), checkpoint=GPT_CHECKPOINTS)],
    precision=("32-true", "bf16-mixed", "bf16-true"), policy=POLICIES)
# pipeline parallelism: p = 2 with m = 2 and 4 under both schedules, every stage (rank), each with the next
# checkpoint x precision in turn; then with tensor and sequence parallelism (rank 2 = stage 1's first tensor rank)
PIPELINE_SHAPE = dict(depth=4, batch_size=4, optimizer="adam")
for _family, _shape in (("gpt", {**GPT_SHAPE, "dropout": 0.1}), ("llama", {**LLAMA_SHAPE, "kv_heads": 2})):
    FAMILY_CONFIGS[_family] += rotate([{"model": _family, **_shape, **PIPELINE_SHAPE, "pipeline_parallel": 2, **c}
                                       for c in grid(microbatches=(2, 4), schedule=("1f1b", "gpipe"), rank=(0, 1))],
                                      checkpoint=GPT_CHECKPOINTS, precision=("32-true", "bf16-mixed", "16-mixed"))
    FAMILY_CONFIGS[_family] += [{"model": _family, **_shape, **PIPELINE_SHAPE, "pipeline_parallel": 2,
                                 "microbatches": 2, "tensor_parallel": 2, "sequence_parallel": True, "rank": 2}]

# ZeRO (memstudy/parallel/zero.py): each stage on 1 and 3 data-parallel ranks (3 divides no parameter's size here:
# padded parts), a given rank and the default, 16-bit with master weights and float32/float64, Adam and SGD
ZERO_GRID = [dict(zero=z, data_parallel=n, param_persistence_threshold=0) for z in (0, 1, 2, 3) for n in (1, 3)]
for _family, _shape in (("mlp", MLP_SHAPE), ("gpt", {**GPT_SHAPE, "dropout": 0.1}), ("llama", {**LLAMA_SHAPE, "kv_heads": 2})):
    FAMILY_CONFIGS[_family] += rotate([{"model": _family, **_shape, **c} for c in ZERO_GRID],
                                      precision=("bf16-master", "32-true", "16-master", "64-true"),
                                      optimizer=("adam", "sgd", "momentum"), rank=(None, 2))
FAMILY_CONFIGS["gpt"] += [{"model": "gpt", **GPT_SHAPE, "zero": 3, "data_parallel": 2, "checkpoint": c,
                           "optimizer": "adam", "precision": "bf16-master"} for c in GPT_CHECKPOINTS]

# ZeRO over the data-parallel group of tensor-parallel ranks (the row-parallel Linears run inside the forward ZeRO
# wraps): stages 2 and 3, with and without sequence parallelism, on the last of 2 x 2 ranks
for _family, _shape in (("gpt", GPT_SHAPE), ("llama", {**LLAMA_SHAPE, "kv_heads": 2})):
    FAMILY_CONFIGS[_family] += [{"model": _family, **_shape, "optimizer": "adam", "precision": "bf16-master",
                                 "zero": z, "data_parallel": 2, "tensor_parallel": 2, "sequence_parallel": sp,
                                 "rank": 3} for z in (2, 3) for sp in (False, True)]


def cases() -> list:
    out = []
    for family in builtin_names():
        configs = FAMILY_CONFIGS.get(family) or [None]  # None: the family has no configurations here
        out += [pytest.param(family, c, id=f"{family}-{i}") for i, c in enumerate(configs)]
    return out


def measured_account(config: dict) -> StepAccount:
    """A steady-state step as the cell measures it: warm-up step, gradients None, then the ledger step."""
    work = Workload(config)
    work.warm_up()
    work.reset()
    return work.ledger_step()


def assert_same_account(predicted: StepAccount, measured: StepAccount) -> None:
    assert predicted.registered_bytes == measured.registered_bytes
    assert predicted.max_by_category == measured.max_by_category
    assert predicted.peak_bytes == measured.peak_bytes
    assert predicted.step_peak_bytes == measured.step_peak_bytes
    assert predicted.peak_event == measured.peak_event
    assert predicted.peak_by_category == measured.peak_by_category
    assert predicted.saved_tensors == measured.saved_tensors
    assert predicted.recomputed_ops == measured.recomputed_ops
    assert (predicted.parameter_count, predicted.trainable_parameter_count) == (
        measured.parameter_count, measured.trainable_parameter_count)
    # every buffer (op, role, layer, phase, shape, dtype, bytes, birth, death, category) and every event
    assert predicted.buffers == measured.buffers
    assert predicted.raw_events == measured.raw_events
    assert predicted.choices == measured.choices  # the algorithms ops chose (a convolution's conv_algo)


@pytest.mark.parametrize("family,raw", cases())
def test_prediction_equals_measured_ledger(family, raw):
    assert raw is not None, f"family {family!r} is registered but has no configurations in FAMILY_CONFIGS"
    config = normalize(raw)
    measured = measured_account(config)
    assert_same_account(predicted_account(config), measured)
    prediction = predict(raw)
    assert prediction == {
        "parameter_bytes": measured.registered_bytes["parameter"],
        "parameter_count": measured.parameter_count,
        "trainable_parameter_count": measured.trainable_parameter_count,
        "gradient_bytes": measured.max_by_category["gradient"],
        "optimizer_state_bytes": measured.registered_bytes["optimizer_state"],
        "input_bytes": measured.registered_bytes["input"],
        "predicted_activation_bytes": measured.activation_bytes,
        "predicted_saved_tensors": measured.saved_tensors,
        "predicted_recomputed_ops": measured.recomputed_ops,
        "predicted_peak_bytes": measured.peak_bytes,
        "predicted_step_peak_bytes": measured.step_peak_bytes,
        "predicted_peak_by_category": measured.peak_by_category,
        "predicted_communication_bytes": sum(b for _, b in measured.collective_bytes.values()),
        "predicted_collective_bytes": measured.collective_bytes,
        "predicted_buffers": len(measured.records),
        **predicted_generation_figures(measured),
        **({"accounted_rank": config["rank"] or 0, "rank_choice": accounted_rank(config)[1], "shape_only": True,
            "rank_notes": rank_notes(config)}
           if is_parallel(config) else {}),
    }


def test_every_family_config_is_valid_and_families_are_covered():
    assert set(FAMILY_CONFIGS) >= set(builtin_names())
    assert {"mlp", "seed"} <= set(builtin_names())
    for configs in FAMILY_CONFIGS.values():
        for raw in configs:
            normalize(raw)


def test_prediction_allocates_nothing_real():
    """Inside the prediction no array has data: the model, batch and every buffer the ledger saw are shape-only."""
    from memstudy.autograd.meta import MetaArray, meta_mode

    config = normalize(dict(depth=3, width=16, batch_size=7, optimizer="adam", policy="half"))
    with meta_mode():
        work = Workload(config)
        work.step()
    arrays = [p.data for p in work.model.parameters()] + work.optimizer.state_arrays() + [work.inputs.data]
    assert all(type(a) is MetaArray for a in arrays)


HUGE = dict(depth=96, width=12288, batch_size=2048, dtype="float32", optimizer="adam")


def test_huge_prediction_traced_memory_is_small():
    """Depth 96, width 12288, batch 2048, Adam: a 232 GB step predicted in a few MB of Python objects."""
    predict(dict(HUGE, depth=2))  # imports and numpy's dtype caches are not the prediction's cost
    tracemalloc.start()
    try:
        prediction = predict(HUGE)
        traced_peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert traced_peak_bytes < 10 * 2 ** 20, traced_peak_bytes
    width, batch, depth, item = 12288, 2048, 96, 4
    params = (depth * (width * width + width) + 10 * width + 10) * item
    assert prediction["parameter_bytes"] == params
    assert prediction["optimizer_state_bytes"] == 2 * params
    assert prediction["predicted_activation_bytes"] == depth * batch * width * item + batch * 10 * item
    assert prediction["predicted_peak_bytes"] > 4 * params


def test_cli_predict_table_and_json(capsys):
    """`memstudy predict --depth 64 --batch 1024 --checkpoint sqrt` (table and --json) prints the prediction."""
    args = ["predict", "--depth", "64", "--batch", "1024", "--checkpoint", "sqrt"]
    assert cli.main(args + ["--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = predict(dict(depth=64, batch_size=1024, checkpoint="sqrt"))
    assert {k: printed[k] for k in expected} == expected
    # sqrt of 64: segments of 8; backward holds 7 segment inputs and the last segment's 8 recomputed layers
    unit = 1024 * 256 * 4
    assert printed["predicted_activation_bytes"] == 15 * unit
    assert printed["predicted_recomputed_ops"] == 2 * 64
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    assert "memstudy predict (train)" in table and "ops recomputed (checkpointing)" in table
    assert "128" in table  # the recomputed ops


def test_gradients_of_real_runs_unchanged_by_meta_support():
    """A real step on real arrays still produces real gradients (the engine's MetaArray checks are no-ops)."""
    work = Workload(normalize(dict(depth=2, width=8, batch_size=4, dtype="float64")))
    work.loss("minimal").backward()
    grads = [p.grad for p in work.model.parameters()]
    assert all(type(g) is np.ndarray and np.isfinite(g).all() and g.any() for g in grads)

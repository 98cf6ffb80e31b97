"""What buys memory back: gradient checkpointing and the saved-tensor policies (minimal, all, half).

Gradients are compared in float64 against the unmodified engine (no checkpointing, policy minimal); the
ledger is compared against the predictor exactly for every checkpoint × policy combination; liveness
tests run with the cyclic garbage collector disabled.
"""
from __future__ import annotations

import itertools
import math
import weakref

import numpy as np
import pytest

from memstudy import nn, optim
from memstudy.autograd import STATE, Tensor, saved_buffers, saved_tensors_policy
from memstudy.config import ConfigError, normalize
from memstudy.measure.predict import predict
from memstudy.nn import MLP, checkpoint_segments, parse_checkpoint
from memstudy.measure.workload import Workload
from memstudy.measure.cell import measure
from memstudy.run.spec import SpecError, parse_spec

from test_ledger import assert_ledger_equals_predictor, measured
from test_lifetime import gc_disabled, growth_in_fresh_process


def gradients(depth, checkpoint="none", policy="minimal", activation="relu", bias=True, dtype="float64", seed=0,
              batch=6, width=7, features=5, classes=3):
    model = MLP(features, width, depth, classes, activation=activation, bias=bias, dtype=dtype, seed=seed,
                checkpoint=checkpoint)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, features)).astype(dtype)
    y = rng.integers(0, classes, size=batch)
    with saved_tensors_policy(policy):
        loss = nn.cross_entropy(model(x), y)
    loss.backward()
    return float(loss.data), [p.grad for p in model.parameters()]


def relative_error(grads, reference) -> float:
    g = np.concatenate([a.ravel() for a in grads])
    r = np.concatenate([a.ravel() for a in reference])
    return float(np.linalg.norm(g - r) / np.linalg.norm(r))


# --------------------------------------------------------------------------------------------------
# Strategies and config
# --------------------------------------------------------------------------------------------------
def test_segments():
    assert checkpoint_segments("none", 8) is None
    assert checkpoint_segments("sqrt", 64) == [(i, i + 8) for i in range(0, 64, 8)]
    assert checkpoint_segments("sqrt", 10) == [(0, 4), (4, 8), (8, 10)]  # ⌈√10⌉ = 4
    assert checkpoint_segments("sqrt", 1) == [(0, 1)]
    assert checkpoint_segments("every:3", 7) == [(0, 3), (3, 6), (6, 7)]
    assert checkpoint_segments("every:8", 4) == [(0, 4)]
    for depth in range(1, 40):
        size = checkpoint_segments("sqrt", depth)[0][1]
        assert size == math.ceil(math.sqrt(depth))


@pytest.mark.parametrize("text,canonical", [("none", "none"), ("sqrt", "sqrt"), ("every:2", "every:2"),
                                            ("every:08", "every:8"), (" Every:3 ", "every:3")])
def test_checkpoint_values_are_canonical(text, canonical):
    assert parse_checkpoint(text) == canonical
    assert normalize({"checkpoint": text})["checkpoint"] == canonical


@pytest.mark.parametrize("bad", ["every:0", "every:-1", "every:", "every:K", "every:1.5", "every", "sqrt2", "",
                                 "half", 2, None])
def test_bad_checkpoint_values_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError, match="checkpoint must be none, sqrt or every:K") as info:
        normalize({"checkpoint": bad})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        MLP(4, 4, 2, 2, checkpoint=bad)


def test_policy_values():
    for policy in ("minimal", "all", "half"):
        assert normalize({"policy": policy})["policy"] == policy
    with pytest.raises(ConfigError, match="policy"):
        normalize({"policy": "float16"})
    with pytest.raises(ValueError):
        saved_tensors_policy("some")


def test_spec_grid_takes_checkpoint_and_policy():
    spec = parse_spec({"grid": {"depth": [4, 9], "checkpoint": ["none", "sqrt", "every:3"],
                                "policy": ["minimal", "all", "half"]}})
    cells = spec.cells()
    assert len(cells) == 18 and {c["checkpoint"] for c in cells} == {"none", "sqrt", "every:3"}
    with pytest.raises(SpecError, match="grid.checkpoint"):
        parse_spec({"grid": {"checkpoint": ["every:0"]}})
    with pytest.raises(SpecError, match="grid.policy"):
        parse_spec({"grid": {"policy": ["quarter"]}})
    with pytest.raises(SpecError, match="same cell"):  # every:04 is every:4
        parse_spec({"grid": {"checkpoint": ["every:4", "every:04"]}})


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("checkpoint", ["sqrt", "every:1", "every:2", "every:3"])
def test_checkpoint_gradients_equal_the_plain_engine(checkpoint):
    for depth in range(1, 10):  # includes depths that K does not divide
        loss, reference = gradients(depth)
        loss_ck, grads = gradients(depth, checkpoint)
        assert loss_ck == loss
        for g, r in zip(grads, reference):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * np.abs(r).max())


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_checkpoint_gradients_other_activations_no_bias(activation):
    for depth in (3, 5):
        _, reference = gradients(depth, activation=activation, bias=False)
        _, grads = gradients(depth, "every:2", activation=activation, bias=False)
        assert relative_error(grads, reference) <= 1e-12


@pytest.mark.parametrize("checkpoint", ["none", "sqrt", "every:2"])
def test_all_policy_gives_identical_gradients(checkpoint):
    for depth in (1, 4, 5):
        loss, reference = gradients(depth)
        loss_all, grads = gradients(depth, checkpoint, policy="all")
        assert loss_all == loss
        assert all(np.array_equal(g, r) if checkpoint == "none" else np.allclose(g, r, rtol=1e-12, atol=0)
                   for g, r in zip(grads, reference))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_half_policy_gradients_are_close_but_not_equal(dtype):
    for depth in (2, 5):
        loss, reference = gradients(depth, dtype=dtype)
        loss_half, grads = gradients(depth, policy="half", dtype=dtype)
        assert loss_half == loss  # the forward pass computes in the compute dtype; only storage is float16
        assert all(g.dtype == np.dtype(dtype) for g in grads)
        error = relative_error(grads, reference)
        assert 0 < error < 5e-3, error
        # half with checkpointing: the recompute starts from a float16-stored segment input
        _, grads = gradients(depth, "every:2", policy="half", dtype=dtype)
        assert 0 < relative_error(grads, reference) < 5e-3


def test_policy_scope_restores_and_defaults_to_minimal():
    assert STATE.policy == "minimal" and STATE.half_cache is None
    with saved_tensors_policy("half"):
        assert STATE.policy == "half" and STATE.half_cache == {}
        with saved_tensors_policy("all"):
            assert STATE.policy == "all"
        assert STATE.policy == "half"
    assert STATE.policy == "minimal" and STATE.half_cache is None


# --------------------------------------------------------------------------------------------------
# What the graph holds
# --------------------------------------------------------------------------------------------------
DEPTH, WIDTH, BATCH, CLASSES = 3, 8, 5, 4


def graph(policy, checkpoint="none", dtype="float32"):
    model = MLP(WIDTH, WIDTH, DEPTH, CLASSES, dtype=dtype, seed=0, checkpoint=checkpoint)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((BATCH, WIDTH)).astype(dtype))
    y = rng.integers(0, CLASSES, size=BATCH)
    with saved_tensors_policy(policy):
        loss = nn.cross_entropy(model(x), y)
    return model, x, y, loss


def test_half_saves_each_buffer_once_as_float16_and_never_casts_parameters_or_input():
    model, x, y, loss = graph("half")
    buffers = saved_buffers(loss, inputs=[x, y])
    acts = [b for b in buffers if b.kind == "activation"]
    assert [(b.dtype, b.shape) for b in acts] == [("float16", (BATCH, WIDTH))] * DEPTH + [("float16", (BATCH, CLASSES))]
    # ReLU's output and the next Linear's input: one float16 buffer saved by both
    assert [b.saved_by for b in acts[:DEPTH]] == [("relu", "linear")] * DEPTH
    inputs = [b for b in buffers if b.kind == "input"]
    assert [(b.role, b.dtype) for b in inputs] == [("x", "float32"), ("labels", "int64")]
    params = [b for b in buffers if b.kind == "parameter"]
    assert params and all(b.dtype == "float32" for b in params)
    weights = {id(layer.weight.data) for layer in model.linears}
    first_linear = [n for n in _nodes(loss) if n.fn.name == "linear" and n.layer == 1][0]
    assert id(first_linear.saved[1]) in weights  # the saved weight is the parameter's own array


def _nodes(loss):
    from memstudy.autograd.engine import walk

    return list(walk(loss))


def test_all_keeps_pre_activations_logits_and_loss():
    _, x, y, minimal = graph("minimal")
    _, x2, y2, everything = graph("all")
    kept = [b for b in saved_buffers(everything, inputs=[x2, y2]) if b.kind == "activation"]
    least = [b for b in saved_buffers(minimal, inputs=[x, y]) if b.kind == "activation"]
    assert len(least) == DEPTH + 1
    # z and h per layer, the logits, the probabilities, the loss value
    assert len(kept) == 2 * DEPTH + 3
    assert sorted(b.op for b in kept) == sorted(["linear"] * (DEPTH + 1) + ["relu"] * DEPTH
                                                 + ["softmax_cross_entropy"] * 2)
    hidden = BATCH * WIDTH * 4
    assert sum(b.nbytes for b in kept if b.shape == (BATCH, WIDTH)) == 2 * DEPTH * hidden


def test_checkpoint_holds_only_segment_inputs_after_forward():
    _, x, y, loss = graph("minimal", checkpoint="every:2")  # depth 3: segments [0, 2) and [2, 3)
    buffers = saved_buffers(loss, inputs=[x, y])
    acts = [b for b in buffers if b.kind == "activation"]
    # the second segment's input (saved by its checkpoint) and the last hidden output (saved by the output
    # Linear), then the probabilities; the first segment's input is the network input x
    assert [(b.saved_by, b.shape) for b in acts] == [(("checkpoint",), (BATCH, WIDTH)), (("linear",), (BATCH, WIDTH)),
                                                     (("softmax_cross_entropy",), (BATCH, CLASSES))]
    assert [b for b in buffers if b.kind == "input"][0].saved_by == ("checkpoint",)
    assert {n.fn.name for n in _nodes(loss)} == {"checkpoint", "linear", "softmax_cross_entropy"}


# --------------------------------------------------------------------------------------------------
# Ledger == predictor, exactly, for every checkpoint × policy combination
# --------------------------------------------------------------------------------------------------
CHECKPOINTS = ("none", "sqrt", "every:1", "every:2", "every:3")
POLICIES = ("minimal", "all", "half")


@pytest.mark.parametrize("checkpoint,policy", list(itertools.product(CHECKPOINTS, POLICIES)))
def test_ledger_equals_predictor_with_checkpoint_and_policy(checkpoint, policy):
    for depth, dtype, optimizer, bias, activation in ((4, "float32", "adam", True, "relu"),
                                                      (5, "float64", "momentum", False, "tanh"),
                                                      (1, "float32", "sgd", True, "sigmoid")):
        for mode in ("train", "inference"):
            config = dict(depth=depth, width=16, in_features=12, out_features=5, batch_size=7, dtype=dtype,
                          optimizer=optimizer, bias=bias, activation=activation, mode=mode,
                          checkpoint=checkpoint, policy=policy)
            account = assert_ledger_equals_predictor(config)
            prediction = predict(config)
            assert account.recomputed_ops == (prediction["predicted_recomputed_ops"] if mode == "train" else 0)


@pytest.mark.parametrize("checkpoint,policy", [("sqrt", "minimal"), ("every:2", "half"), ("every:3", "all"),
                                               ("none", "half"), ("none", "all")])
@pytest.mark.parametrize("shape", [dict(depth=7, width=16, in_features=12, out_features=5, batch_size=200),
                                   dict(depth=4, width=8, in_features=4, out_features=300, batch_size=50)],
                         ids=["batch-heavy", "classes-heavy"])
def test_ledger_equals_predictor_when_peak_is_mid_backward(shape, checkpoint, policy):
    account = assert_ledger_equals_predictor({**shape, "checkpoint": checkpoint, "policy": policy})
    assert account.events[account.peak_event].phase in ("backward", "recompute")


def test_recomputed_ops_counted_and_recomputed_buffers_marked():
    account, _ = measured(depth=6, width=16, batch_size=8, checkpoint="every:4")
    assert account.recomputed_ops == 2 * 6  # every hidden layer's Linear and activation, once
    recomputed = [b for b in account.buffers if b.phase == "recompute"]
    assert len(recomputed) == 2 * 6  # each recomputed op's output: z (temporary) and h (held for backward)
    assert sum(b.category == "activation" for b in recomputed) == 6
    assert {b.op for b in recomputed} == {"linear", "relu"}
    plain, _ = measured(depth=6, width=16, batch_size=8)
    assert plain.recomputed_ops == 0 and not any(b.phase == "recompute" for b in plain.buffers)


def test_activation_bytes_by_hand():
    batch, width, classes, item = 8, 16, 5, 4
    hidden, probs = batch * width * item, batch * classes * item
    base = dict(width=width, batch_size=batch, out_features=classes)
    assert measured(depth=9, **base)[0].activation_bytes == 9 * hidden + probs
    assert measured(depth=9, policy="all", **base)[0].activation_bytes == 2 * 9 * hidden + 2 * probs + item
    assert measured(depth=9, policy="half", **base)[0].activation_bytes == (9 * hidden + probs) // 2
    # sqrt at depth 9: three segments of three; forward ends holding 3 segment inputs (+ probabilities);
    # the last segment's recompute holds the other two segment inputs and its own three layers
    assert measured(depth=9, checkpoint="sqrt", **base)[0].activation_bytes == 5 * hidden


def test_sqrt_bound_at_depth_64_predicted():
    """The must-show configuration: depth 64, width 256, batch 256, float32 (predicted; the study measures it)."""
    batch = width = 256
    unit = batch * width * 4
    prediction = predict(dict(depth=64, width=width, batch_size=batch, checkpoint="sqrt"))
    assert prediction["predicted_activation_bytes"] <= 17 * unit + batch * 10 * 4
    assert prediction["predicted_activation_bytes"] == 15 * unit  # 7 segment inputs + 8 recomputed layers
    assert predict(dict(depth=64, width=width, batch_size=batch))["predicted_activation_bytes"] == 64 * unit + \
        batch * 10 * 4


# --------------------------------------------------------------------------------------------------
# Lifetimes: nothing outlives the step, nothing waits for the cyclic collector
# --------------------------------------------------------------------------------------------------
def checkpointed_steps(checkpoint: str, policy: str):
    """A training step (Adam) of a 5-layer MLP under a checkpoint strategy and a saved-tensor policy."""
    model = MLP(64, 64, 5, 10, dtype="float64", seed=0, checkpoint=checkpoint)
    opt = optim.make("adam", model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 64)), rng.integers(0, 10, size=32)

    def step():
        with saved_tensors_policy(policy):
            loss = nn.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


@pytest.mark.parametrize("checkpoint,policy", [("sqrt", "minimal"), ("every:2", "half"), ("every:3", "all"),
                                               ("none", "half")])
def test_no_growth_and_no_cycles(checkpoint, policy):
    # in a fresh process: after tests/test_published.py, in this one, [every:2-half] once read a one-off 1.9 MB
    # block as growth (issue 10's note); the harness asserts gc.collect() == 0 along the way
    growth = growth_in_fresh_process(checkpointed_steps, checkpoint, policy, repeats=30)
    assert abs(growth) < 8 * 1024, growth


def test_saved_arrays_die_when_backward_is_done():
    model = MLP(16, 16, 6, 4, dtype="float64", seed=0, checkpoint="every:2")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 16)), rng.integers(0, 4, size=8)
    with gc_disabled():
        with saved_tensors_policy("half"):
            loss = nn.cross_entropy(model(X), y)
        refs = [weakref.ref(a) for node in _nodes(loss) for a in node.saved if a is not None and a is not X and a is not y
                and not any(a is p.data for p in model.parameters())]
        assert refs and all(r() is not None for r in refs)
        loss.backward()
        assert all(r() is None for r in refs)
        assert all(node.saved == () and node.saved_tensors == () for node in _nodes(loss))


# --------------------------------------------------------------------------------------------------
# The measured row
# --------------------------------------------------------------------------------------------------
def test_cell_rows_report_recomputed_ops_and_gradient_error():
    base = dict(depth=4, width=32, batch_size=16, mode="train")
    half = measure({**base, "policy": "half", "checkpoint": "every:2"})[0]
    assert half["recomputed_ops"] == 8
    assert 0 < half["grad_rel_error"] < 5e-3
    assert half["activation_bytes"] == half["predicted_activation_bytes"]
    every = measure({**base, "policy": "all"})[0]
    assert every["recomputed_ops"] == 0 and every["grad_rel_error"] == 0.0  # measured: all's gradients are minimal's
    plain = measure(base)[0]
    assert plain["grad_rel_error"] is None  # minimal is the reference
    inference = measure({**base, "mode": "inference", "policy": "half"})[0]
    assert inference["grad_rel_error"] is None and inference["activation_bytes"] == 0


def test_gradient_error_leaves_no_gradients_behind():
    work = Workload(normalize(dict(depth=2, width=8, batch_size=4, policy="half")))
    error = work.gradient_error()
    assert error > 0 and all(p.grad is None for p in work.model.parameters())


def test_inference_ignores_checkpointing():
    with_ck, _ = measured(depth=6, width=32, batch_size=8, checkpoint="sqrt", mode="inference")
    without, _ = measured(depth=6, width=32, batch_size=8, mode="inference")
    assert with_ck.peak_bytes == without.peak_bytes and with_ck.recomputed_ops == 0


def test_ledger_sees_float16_copies_and_cast_back_copies():
    account, _ = measured(depth=2, width=8, batch_size=4, out_features=3, policy="half")
    unpacks = [b for b in account.buffers if b.op == "unpack"]
    # backward casts back h1 (relu 1 and linear 2 each read it), h0 (relu 0 and linear 1) and the probabilities
    assert len(unpacks) == 5 and all(b.category == "temporary" and b.dtype == "float32" for b in unpacks)
    halves = [b for b in account.buffers if b.dtype == "float16"]
    assert len(halves) == 3 and all(b.category == "activation" for b in halves)
    probs32 = [b for b in account.buffers if b.op == "softmax_cross_entropy" and b.shape == (4, 3)
               and b.dtype == "float32" and b.phase == "forward"]
    assert len(probs32) == 1 and probs32[0].category == "temporary"  # the array `half` replaced, seen too


# --------------------------------------------------------------------------------------------------
# The report's sections, on rows made from the predictor (exact bytes, made-up times)
# --------------------------------------------------------------------------------------------------
def predicted_rows(grid: dict, repeats: int = 1) -> list[dict]:
    from memstudy.run.results.fields import ROW_FIELDS
    from memstudy.run.spec import cell_id

    keys = list(grid)
    rows = []
    for values in itertools.product(*(grid[k] for k in keys)):
        config = normalize(dict(zip(keys, values)))
        p = predict(config)
        seconds = 1e-3 * config["depth"] * (1.3 if config["checkpoint"] != "none" else 1.0)
        for repeat in range(repeats):
            row = dict.fromkeys(ROW_FIELDS)
            row.update(config, repeat=repeat, experiment="synthetic", cell=cell_id(config), status="ok", error="")
            row.update({k: p[k] for k in ("parameter_bytes", "optimizer_state_bytes", "input_bytes",
                                          "predicted_peak_bytes", "predicted_step_peak_bytes",
                                          "predicted_activation_bytes")})
            row.update(peak_bytes=p["predicted_peak_bytes"], step_peak_bytes=p["predicted_step_peak_bytes"],
                       activation_bytes=p["predicted_activation_bytes"], saved_tensors=p["predicted_saved_tensors"],
                       recomputed_ops=p["predicted_recomputed_ops"] if config["mode"] == "train" else 0,
                       grad_rel_error=1e-4 if config["policy"] == "half" and config["mode"] == "train" else None,
                       step_seconds=seconds, tracemalloc_step_peak_bytes=p["predicted_step_peak_bytes"] + 1000,
                       rss_step_peak_bytes=p["predicted_step_peak_bytes"], rss_method="vmhwm",
                       mprof_step_peak_bytes=p["predicted_step_peak_bytes"], hwm_bytes=1 << 26,
                       **{f"peak_{c}_bytes": v for c, v in p["predicted_peak_by_category"].items()})
            rows.append(row)
    return rows


def write_predicted_runs(path, grid):
    from memstudy.run.sweep import format_rows, header_line

    path.mkdir(parents=True)
    (path / "runs.csv").write_text(header_line() + format_rows(predicted_rows(grid)))
    return path


def test_report_sections_for_each_remedy(tmp_path):
    from memstudy.report import write_report

    studies = {
        "checkpointing": ({"depth": [4, 16, 64], "checkpoint": ["none", "sqrt", "every:2"], "batch_size": [256]},
                          "checkpoint_tradeoff.png", ["### Gradient checkpointing", "**sqrt at depth 64, width 256, "
                                                      "batch 256, float32:**", "= 15.00 layers' worth",
                                                      "2·√64 + 1 = 17", "1.30× (within the 1.6× bound)"]),
        "policies": ({"policy": ["minimal", "all", "half"], "depth": [2, 4, 8], "batch_size": [16, 64]},
                     "policy_bytes.png", ["### Saved-tensor policies", "| `minimal` | 1,024.0 B | 1.000 | 1.000 |",
                                          "| `all` | 2,048.0 B | 2.000 | 2.000 |", "| `half` | 512.0 B | 0.500 | 0.500 |",
                                          "1.00e-04"]),
        "optimizers": ({"optimizer": ["sgd", "momentum", "adam"], "width": [32, 128], "batch_size": [8, 512],
                        "depth": [2]}, "optimizer_peak.png",
                       ["### Optimiser state", "| momentum | 1.000 – 1.000 | 1× |", "| adam | 2.000 – 2.000 | 2× |"]),
        "dtypes": ({"dtype": ["float32", "float64"], "depth": [2, 4], "mode": ["train", "inference"],
                    "optimizer": ["adam"]}, "dtype_ratio.png",
                   ["### float32 against float64", "| activations held for backward | 2 | 0.5000 |",
                    "| optimiser state | 2 | 0.5000 |"]),
    }
    for name, (grid, figure, texts) in studies.items():
        out = write_predicted_runs(tmp_path / name, grid)
        written = {p.name for p in write_report(out)}
        assert figure in written, name
        report = (out / "report.md").read_text()
        # the dtypes have their own section since 16-bit training came (findings/precision.py)
        heading = "## Precision: what 16 bits buy" if name == "dtypes" else "## What buys the memory back"
        assert heading in report, name
        for text in texts:
            assert text in report, (name, text)
        others = [t for t in ("### Gradient checkpointing", "### Saved-tensor policies", "### Optimiser state",
                              "### float32 against float64") if t != texts[0]]
        assert not any(t in report for t in others), name


def test_checkpoint_with_retain_graph_recomputes_each_time():
    model = MLP(5, 6, 4, 3, dtype="float64", seed=0, checkpoint="every:2")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((7, 5)), rng.integers(0, 3, size=7)
    loss = nn.cross_entropy(model(X), y)
    loss.backward(retain_graph=True)
    once = [p.grad.copy() for p in model.parameters()]
    loss.backward()
    for p, g in zip(model.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-14)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()

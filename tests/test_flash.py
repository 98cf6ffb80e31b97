"""`attention = flash` (issue 27 item 4): the fused attention op against the eager ops, in every dtype, on the models,
under the ledger (no s² buffer kept, the tiles' scratch named as workspace), in generation, and its bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memstudy import cli
from memstudy.autograd import Tensor, apply, autocast, ops
from memstudy.autograd.ops import flash as flash_module
from memstudy.autograd.precision import dtype as as_dtype
from memstudy.measure.workload import Workload
from memstudy.nn.generation import generate
from memstudy.nn.models.registry import normalize


def eager(q: np.ndarray, k: np.ndarray, v: np.ndarray, offset: int, weights: np.ndarray):
    """The eager ops on K/V repeated per group: output and (dq, dk, dv) of Σ output·weights, in float64."""
    g = q.shape[1] // k.shape[1]
    qt = Tensor(q, requires_grad=True)
    kt = Tensor(np.repeat(k, g, axis=1), requires_grad=True)
    vt = Tensor(np.repeat(v, g, axis=1), requires_grad=True)
    att = apply(ops.BatchedMatMul, qt, kt.transpose(0, 1, 3, 2)) * (1.0 / np.sqrt(q.shape[-1]))
    att = apply(ops.Softmax, apply(ops.CausalMask, att, offset=offset), axis=-1)
    out = apply(ops.BatchedMatMul, att, vt)
    (out * Tensor(weights)).sum().backward()
    fold = lambda grad: grad.reshape(k.shape[0], k.shape[1], g, *k.shape[2:]).sum(axis=2)  # noqa: E731
    return out.data, (qt.grad, fold(kt.grad), fold(vt.grad))


def fused(q: np.ndarray, k: np.ndarray, v: np.ndarray, offset: int, weights: np.ndarray):
    qt, kt, vt = (Tensor(x, requires_grad=True) for x in (q, k, v))
    out = apply(ops.FlashAttention, qt, kt, vt, offset=offset)
    (out * Tensor(weights.astype(out.dtype))).sum().backward()
    return out.data, (qt.grad, kt.grad, vt.grad)


def inputs(rng, b, a, kv, s, t, d, dtype="float64"):
    q = rng.standard_normal((b, a, s, d))
    k, v = rng.standard_normal((b, kv, t, d)), rng.standard_normal((b, kv, t, d))
    return [x.astype(as_dtype(dtype)) for x in (q, k, v)], rng.standard_normal((b, a, s, d))


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 2), kv=st.integers(1, 2), groups=st.integers(1, 3), s=st.integers(1, 9),
       offset=st.integers(0, 4), unfilled=st.integers(0, 3), d=st.integers(1, 4), tile=st.sampled_from([1, 3, 128]),
       seed=st.integers(0, 1000))
def test_fused_op_equals_the_eager_ops_in_float64(b, kv, groups, s, offset, unfilled, d, tile, seed):
    """Output and gradients of q, k, v equal the eager path's (K/V repeated there, not here) for any shape, a KV
    cache's offset, a static cache's unfilled slots (keys beyond the last query), and any key tile size."""
    (q, k, v), weights = inputs(np.random.default_rng(seed), b, kv * groups, kv, s, offset + s + unfilled, d)
    previous, flash_module.KEY_TILE = flash_module.KEY_TILE, tile
    try:
        out, grads = fused(q, k, v, offset, weights)
    finally:
        flash_module.KEY_TILE = previous
    want, want_grads = eager(q, k, v, offset, weights)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)
    for name, got, expected in zip("qkv", grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=name)


def test_non_contiguous_views_in_and_the_input_left_alone():
    """q, k, v as the models pass them (transposed views of one projection) give the contiguous inputs' results."""
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((2, 5, 3 * 8))
    q, k, v = (qkv[:, :, i * 8:(i + 1) * 8].reshape(2, 5, 2, 4).transpose(0, 2, 1, 3) for i in range(3))
    kept = qkv.copy()
    weights = rng.standard_normal((2, 2, 5, 4))
    out, grads = fused(q, k, v, 0, weights)
    want, want_grads = fused(*(np.ascontiguousarray(x) for x in (q, k, v)), 0, weights)
    np.testing.assert_array_equal(out, want)
    for got, expected in zip(grads, want_grads):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(qkv, kept)


@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("bfloat16", 3e-2), ("float16", 5e-3)])
def test_every_dtype_rounds_once_near_float64(dtype, rtol):
    """The output and gradients come in the operands' dtype, computed in float32 (a few roundings of the dtype's
    precision from float64's); the log-sum-exp is kept in float32."""
    (q, k, v), weights = inputs(np.random.default_rng(2), 1, 4, 2, 140, 140, 8, dtype)  # two key tiles
    out, grads = fused(q, k, v, 0, weights)
    want, want_grads = eager(*(x.astype(np.float64) for x in (q, k, v)), 0, weights.astype(as_dtype(dtype)).astype(np.float64))
    assert out.dtype == as_dtype(dtype) and all(g.dtype == as_dtype(dtype) for g in grads)
    scale = np.abs(want).max()
    assert np.abs(out.astype(np.float64) - want).max() <= rtol * scale
    for got, expected in zip(grads, want_grads):
        assert np.abs(got.astype(np.float64) - expected).max() <= rtol * np.abs(expected).max() * 4


def test_under_autocast_float32_inputs_run_in_bfloat16():
    (q, k, v), weights = inputs(np.random.default_rng(3), 1, 2, 1, 6, 6, 4, "float32")
    qt, kt, vt = (Tensor(x, requires_grad=True) for x in (q, k, v))
    with autocast("bfloat16"):
        out = apply(ops.FlashAttention, qt, kt, vt)
    assert out.dtype == as_dtype("bfloat16")
    (out * Tensor(weights.astype(as_dtype("bfloat16")))).sum().backward()
    assert qt.grad.dtype == np.float32 and kt.grad.dtype == np.float32  # cast back through the casts' backward


def test_bad_shapes_are_one_line_value_errors():
    q = Tensor(np.zeros((1, 3, 4, 2)))
    with pytest.raises(ValueError, match="kv dividing a"):
        apply(ops.FlashAttention, q, Tensor(np.zeros((1, 2, 4, 2))), Tensor(np.zeros((1, 2, 4, 2))))


# --- the models ----------------------------------------------------------------------------------------------------

GPT = dict(model="gpt", vocab=23, seq_len=8, depth=2, width=16, heads=4, batch_size=2)
LLAMA = dict(model="llama", vocab=23, seq_len=8, depth=2, width=16, heads=4, kv_heads=2, ffn=24, batch_size=2)


def gradients(config):
    work = Workload(normalize(config))
    loss = work.loss("minimal")
    loss.backward()
    return float(loss.data), {n: p.grad for n, p in work.model.named_parameters()}


@pytest.mark.parametrize("shape", [GPT, LLAMA], ids=["gpt", "llama"])
@pytest.mark.parametrize("checkpoint", ["none", "selective", "every:1"])
def test_models_gradients_equal_eagers_in_float64(shape, checkpoint):
    loss, grads = gradients({**shape, "dtype": "float64", "checkpoint": checkpoint})
    loss_f, grads_f = gradients({**shape, "dtype": "float64", "checkpoint": checkpoint, "attention": "flash"})
    assert abs(loss_f - loss) <= 1e-13 * abs(loss)
    for name, g in grads.items():
        np.testing.assert_allclose(grads_f[name], g, rtol=1e-9, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("shape", [GPT, LLAMA], ids=["gpt", "llama"])
def test_ledger_keeps_no_scores_and_names_the_tiles_scratch(shape):
    """Eager keeps a·s² scores per example; flash keeps its output and b·a·s log-sum-exp floats, and its scratch is
    the op's workspace (temporaries, never activations), none of it s × s."""
    config = {**shape, "seq_len": 12, "dtype": "float32"}
    b, a, s, d = config["batch_size"], config["heads"], config["seq_len"], config["width"] // config["heads"]
    eager_account = Workload(normalize(config)).ledger_step()
    account = Workload(normalize({**config, "attention": "flash"})).ledger_step()
    square = lambda acc: [x for x in acc.buffers if x.category == "activation" and x.shape[-2:] == (s, s)]  # noqa
    assert square(eager_account) and not square(account)
    lse = [x for x in account.buffers if x.op == "flash_attention" and x.shape == (b, a, s)]
    assert len(lse) == shape["depth"] and all(x.category == "activation" and x.nbytes == 4 * b * a * s for x in lse)
    scratch = {x.role for x in account.buffers if x.op.startswith("flash_attention.")} | \
        {x.op.split(".", 1)[1] for x in account.buffers if x.op.startswith("flash_attention.")}
    assert {"scores", "grad_scores", "query", "key_tile"} <= scratch
    work = [x for x in account.buffers if x.op.startswith("flash_attention.")]
    assert all(x.category == "temporary" for x in work)
    # per block: the softmax's output (a·s² per example) traded for the log-sum-exp; the fused op's output, laid out
    # (b, s, a, d), is the output projection's input itself (the heads merged: a view)
    assert eager_account.activation_bytes - account.activation_bytes == shape["depth"] * 4 * b * a * (s * s - s)


@pytest.mark.parametrize("shape", [GPT, LLAMA], ids=["gpt", "llama"])
def test_generation_through_the_fused_op_gives_eagers_tokens(shape):
    config = {**shape, "mode": "generate", "dtype": "float64", "prompt_len": 3, "new_tokens": 4}
    tokens = {}
    for attention in ("eager", "flash"):
        work = Workload(normalize({**config, "attention": attention}))
        for p in work.model.parameters():  # lively weights: the greedy tokens change from step to step
            p.data[...] = np.random.default_rng(p.data.size).standard_normal(p.shape)
        for kind in ("dynamic", "static"):
            sequences, _ = generate(work.model, work.inputs, 4, kind)
            tokens[attention, kind] = sequences.data
    assert len(np.unique(tokens["eager", "dynamic"][:, 3:])) > 1
    for kind in ("dynamic", "static"):
        np.testing.assert_array_equal(tokens["flash", kind], tokens["eager", kind])


# --- bad input -----------------------------------------------------------------------------------------------------

def one_error_line(capsys, args):
    try:
        status = cli.main(args)
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt", "--attention", "flsh"], "flsh"),
    (["--model", "llama", "--attention", "sdpa"], "sdpa"),
    (["--model", "gpt", "--attention", "flash", "--dropout", "0.1"], "attention flash takes no dropout"),
    (["--model", "mlp", "--attention", "flash"], "attention"),
])
def test_bad_attention_is_one_line_exit_2(capsys, args, message):
    assert message in one_error_line(capsys, ["predict", *args])


def test_bad_attention_in_a_spec_is_one_line_exit_2(capsys, tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[study]\nname = "bad"\n[grid]\nmodel = "gpt"\nattention = ["eager", "fused"]\n')
    assert "fused" in one_error_line(capsys, ["sweep", str(spec), "--out", str(tmp_path / "out")])


def test_inference_with_dropout_may_use_flash_and_the_row_names_it():
    config = normalize({**GPT, "dropout": 0.1, "mode": "inference", "attention": "flash"})
    assert config["attention"] == "flash"
    from memstudy.nn.models.registry import get_family
    assert "attention flash" in get_family("gpt").describe(config)
    assert "attention" not in get_family("gpt").describe(normalize(GPT))

"""conv_algo: per_example, batched (a block of examples per GEMM) and auto (the largest block whose workspace fits).

The batched algorithm gives per_example's results and gradients (float64 to 1e-12; float32 and the 16-bit types to a
few units in their last place: only the order of the float32 sums differs), its workspaces are what
`batched_workspace_bytes` says, byte for byte, as the ledger measures them, auto's choice is the largest block that
fits, and the CNN family's fields reject what they cannot take in one line (CLI exit 2)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memstudy.autograd import Tensor, apply, ops
from memstudy.autograd.ops import conv
from memstudy.autograd.precision import dtype as as_dtype
from memstudy.config import ConfigError, normalize
from memstudy.measure.ledger import Ledger

DTYPES = ("float64", "float32", "bfloat16", "float16")
# normwise relative difference from per_example's: float64 summation order; float32 likewise; a 16-bit result rounded
# once from float32 sums taken in another order: a unit or two in its last place
TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 2.0 ** -6, "float16": 2.0 ** -9}


def _run(x, w, b, grad, dtype, **consts):
    """Output and the gradients of x, w, b of one convolution, in float64."""
    dt = as_dtype(dtype)
    xt = Tensor(x.astype(dt), requires_grad=True)
    wt = Tensor(w.astype(dt), requires_grad=True)
    bt = None if b is None else Tensor(b.astype(dt), requires_grad=True)
    out = apply(ops.Conv2d, xt, wt, *(() if bt is None else (bt,)), **consts)
    out.backward(grad.astype(dt))
    results = [out.data, xt.grad, wt.grad] + ([] if bt is None else [bt.grad])
    return [np.asarray(r, dtype=np.float64) for r in results]


def _rel(a, ref):
    scale = np.linalg.norm(ref)
    return float(np.linalg.norm(a - ref) / scale) if scale > 0 else float(np.linalg.norm(a))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7), o=st.integers(1, 3),
       k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), bias=st.booleans(),
       save=st.sampled_from(conv.CONV_SAVES), block=st.none() | st.integers(1, 4), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2 ** 16))
def test_batched_equals_per_example(n, c, h, w, o, k, stride, padding, bias, save, block, dtype, seed):
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    rng = np.random.default_rng(seed)
    x, weight = rng.normal(size=(n, c, h, w)), rng.normal(size=(o, c, k, k))
    b = rng.normal(size=o) if bias else None
    out_h, out_w = conv.output_size(h, k, stride, padding), conv.output_size(w, k, stride, padding)
    grad = rng.normal(size=(n, o, out_h, out_w))
    common = dict(stride=stride, padding=padding, save=save)
    reference = _run(x, weight, b, grad, dtype, algo="per_example", **common)
    batched = _run(x, weight, b, grad, dtype, algo="batched", block=block, **common)
    for name, got, want in zip(("output", "x's gradient", "weight's gradient", "bias's gradient"), batched, reference):
        assert _rel(got, want) <= TOLERANCE[dtype], name


def _ledger_workspace_bytes(algo, n, c, side, o, k, padding, save, dtype, need_x, **consts):
    """The most bytes of conv2d workspaces the ledger saw alive at once over a forward and backward."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(n, c, side, side)).astype(dtype), requires_grad=need_x)
    w = Tensor(rng.normal(size=(o, c, k, k)).astype(dtype), requires_grad=True)
    ledger = Ledger()
    ledger.register(x.data, "input")
    ledger.register(w.data, "parameter", leaf=w)
    with ledger:
        out = apply(ops.Conv2d, x, w, padding=padding, save=save, algo=algo, **consts)
        out.backward(np.ones(out.shape, dtype=dtype))
        out = None
    account = ledger.finish()
    return account.max_live_bytes("conv2d."), [label for _, _, label in account.choices]


@pytest.mark.parametrize("save", conv.CONV_SAVES)
@pytest.mark.parametrize("need_x", [True, False])
@pytest.mark.parametrize("block", [None, 1, 2, 3])
@pytest.mark.parametrize("geometry", [(5, 3, 6, 4, 3, 1), (4, 2, 5, 3, 1, 0), (3, 2, 7, 2, 3, 0)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_ledger_measures_the_workspace_the_formula_states(save, need_x, block, geometry, dtype):
    n, c, side, o, k, padding = geometry
    out_side = conv.output_size(side, k, 1, padding)
    itemsize = np.dtype(dtype).itemsize
    measured, labels = _ledger_workspace_bytes("batched", n, c, side, o, k, padding, save, dtype, need_x, block=block)
    used = min(block or n, n)
    assert labels == [conv.algo_label("batched", used, n)]
    assert measured == conv.batched_workspace_bytes(n, used, c, o, k, out_side, out_side, itemsize, save, need_x, True)
    measured, labels = _ledger_workspace_bytes("per_example", n, c, side, o, k, padding, save, dtype, need_x)
    assert labels == ["per_example"]
    assert measured == conv.per_example_workspace_bytes(n, c, k, 1, padding, out_side, out_side, itemsize, save,
                                                        need_x, True)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), c=st.integers(1, 16), o=st.integers(1, 16), k=st.integers(1, 3), side=st.integers(1, 12),
       save=st.sampled_from(conv.CONV_SAVES), need_x=st.booleans(), need_w=st.booleans(),
       limit=st.integers(0, 2_000_000))
def test_auto_takes_the_largest_block_that_fits(n, c, o, k, side, save, need_x, need_w, limit):
    args = (c, o, k, side, side, 4, save, need_x, need_w)
    algo, block = conv.choose("auto", limit, None, n, c, o, k, 1, 0, side, side, 4, save, need_x, need_w)
    assert algo == "batched" and 1 <= block <= n

    def size(b):
        return conv.batched_workspace_bytes(n, b, *args)
    if size(block) > limit:  # nothing fits: the smallest workspace there is
        assert block == 1
    else:
        assert block == n or size(block + 1) > limit


def test_auto_in_a_step_reports_its_choice_and_fits_the_limit():
    limit = 50_000
    measured, labels = _ledger_workspace_bytes("auto", 8, 3, 8, 4, 3, 1, "input", "float64", True,
                                               workspace_bytes=limit)
    assert labels == ["batched:3"]  # 8·8·(27 + 4)·8 = 15,872 bytes per example; the term 4·27·8 once
    assert measured == 3 * 8 * 8 * (27 + 4) * 8 + 4 * 27 * 8 <= limit


@pytest.mark.parametrize("raw,message", [
    (dict(conv_algo="fast"), "conv_algo must be one of per_example, batched, auto, got 'fast'"),
    (dict(conv_workspace=-5), "conv_workspace must be at least 1, got -5"),
    (dict(conv_workspace="-5MiB"), "conv_workspace must be a positive size in bytes"),
    (dict(conv_workspace="10%"), "conv_workspace must be a positive size in bytes"),
])
def test_bad_conv_fields_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError) as info:
        normalize({"model": "cnn", **raw})
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_conv_workspace_takes_a_size():
    assert normalize({"model": "cnn", "conv_algo": "auto", "conv_workspace": "64MiB"})["conv_workspace"] == 64 * 2 ** 20
    assert normalize({"model": "cnn"})["conv_algo"] == "per_example"  # existing results stay what they were


@pytest.mark.parametrize("flags", [["--conv-algo", "fast"], ["--conv-workspace", "-5"], ["--conv-workspace", "x"]])
def test_cli_rejects_bad_conv_flags_with_exit_2(flags):
    done = subprocess.run([sys.executable, "-m", "memstudy", "predict", "--model", "cnn", *flags],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "conv" in done.stderr.strip().splitlines()[-1]

"""numpy's hidden ufunc buffer: Linear's broadcast bias add keeps it small, the scope that does so is undone, and
ReLU's backward makes no hidden mask.

numpy broadcasts through a scratch buffer of `bufsize` elements (8192: 64 KiB of float64) that the ledger
cannot see; `ops.small_ufunc_buffer` shrinks it for a whole forward pass (see ops.py).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from memstudy import nn
from memstudy.autograd import STATE, Tensor, apply, no_grad, ops

BATCH, WIDTH = 256, 512  # float64 output: 1 MiB, far above the 1024-element threshold
DEFAULT_BUFSIZE = np.getbufsize()  # numpy's own (8192), as this process started


def hidden_scratch_bytes(run) -> int:
    """tracemalloc's peak while `run()` makes its result, less the result itself."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - result.nbytes


@pytest.fixture
def operands():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, WIDTH))
    weight = Tensor(rng.standard_normal((WIDTH, WIDTH)), requires_grad=True)
    bias = Tensor(rng.standard_normal(WIDTH), requires_grad=True)
    return x, weight, bias


def test_the_measurement_sees_numpys_default_buffer(operands):
    x, weight, bias = operands

    def plain():
        out = x @ weight.data.T
        out += bias.data  # default bufsize: numpy's 64 KiB float64 scratch
        return out

    assert hidden_scratch_bytes(plain) >= DEFAULT_BUFSIZE * 8


@pytest.mark.parametrize("scoped", [False, True])
def test_linear_bias_add_keeps_the_hidden_buffer_small(operands, scoped):
    x, weight, bias = operands

    def linear():
        with no_grad():
            if scoped:
                with ops.small_ufunc_buffer():
                    return apply(ops.Linear, x, weight, bias).data
            return apply(ops.Linear, x, weight, bias).data

    assert hidden_scratch_bytes(linear) <= 16 * 1024
    assert np.getbufsize() == DEFAULT_BUFSIZE and STATE.small_ufunc_buffer is False


def test_a_forward_restores_numpys_buffer_size_even_when_it_fails():
    model = nn.MLP(8, 16, 3, 4, dtype="float64")
    model(np.ones((2, 8)))
    assert np.getbufsize() == DEFAULT_BUFSIZE and STATE.small_ufunc_buffer is False
    with pytest.raises(ValueError):
        model(np.ones((2, 7)))  # wrong in_features: matmul raises inside the scope
    assert np.getbufsize() == DEFAULT_BUFSIZE and STATE.small_ufunc_buffer is False
    with ops.small_ufunc_buffer():
        with ops.small_ufunc_buffer():  # nested: the inner scope leaves the setting to the outer one
            assert np.getbufsize() == ops.BIAS_BUFFER_ELEMENTS
        assert np.getbufsize() == ops.BIAS_BUFFER_ELEMENTS and STATE.small_ufunc_buffer is True
    assert np.getbufsize() == DEFAULT_BUFSIZE


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_backward_makes_its_gradient_and_no_hidden_mask(dtype):
    """ReLU's backward builds the mask in its result's dtype (sign of the saved output): no boolean mask and no
    cast buffer beside the gradient. Writing a comparison into a float buffer (np.greater(out=), the old code)
    casts through numpy's buffer: ~9 KiB unseen by the ledger at this size."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((BATCH, WIDTH)).astype(dtype), requires_grad=True)
    y = apply(ops.ReLU, x)
    grad = rng.standard_normal((BATCH, WIDTH)).astype(dtype)
    result = None

    def backward():
        nonlocal result
        (result,) = ops.ReLU.backward(y._node, grad)
        return result

    assert hidden_scratch_bytes(backward) <= 1024
    np.testing.assert_array_equal(result, np.where(x.data > 0, grad, 0))

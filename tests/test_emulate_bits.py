"""bfloat16 on the bits (emulate.widen / narrow, ReLU): the very bits ml_dtypes' own casts and loops give.

The fast suite checks every bfloat16 value (65536 patterns) for widening and ReLU, and for narrowing every float32
whose low half is one of a few hundred patterns (ties, halfway ±1, carries into the exponent and into inf) under
every top half, plus NaN and random draws; the slow one (`pytest -m slow`) compares all 2^32 float32 patterns.
"""
from __future__ import annotations

import numpy as np
import pytest

from memstudy.autograd import Tensor, apply, ops
from memstudy.autograd.ops import emulate
from memstudy.autograd.ops.chunks import CHUNK_ELEMENTS
from memstudy.autograd.precision import dtype as as_dtype

BF16 = as_dtype("bfloat16")
EVERY_BF16 = np.arange(1 << 16, dtype=np.uint16).view(BF16)


def reference_narrow(values: np.ndarray) -> np.ndarray:
    return values.astype(BF16).view(np.uint16)


def narrowed(values: np.ndarray, spare=None) -> np.ndarray:
    out = np.empty(values.shape, dtype=BF16)
    before = values.copy()
    emulate.narrow(out, values, spare)
    np.testing.assert_array_equal(values.view(np.uint32), before.view(np.uint32))  # the values are left alone
    return out.view(np.uint16)


def test_widen_is_ml_dtypes_cast_for_every_bfloat16():
    wide = np.empty(EVERY_BF16.shape, dtype=np.float32)
    emulate.widen(wide, EVERY_BF16)
    np.testing.assert_array_equal(wide.view(np.uint32), EVERY_BF16.astype(np.float32).view(np.uint32))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # ml_dtypes' cast of a NaN
@pytest.mark.parametrize("shape", [(256, 512), (3, 40, 7000), (1, 5)])
def test_widen_of_a_transposed_operand_in_bands(shape):
    values = np.resize(EVERY_BF16, shape[:-2] + shape[:-3:-1]).swapaxes(-1, -2)  # the last two axes transposed
    wide = np.empty(shape, dtype=np.float32)
    emulate.widen(wide, values)
    np.testing.assert_array_equal(wide.view(np.uint32), values.astype(np.float32).view(np.uint32))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # ml_dtypes' cast of a NaN
def test_narrow_matches_ml_dtypes_on_every_top_half_and_the_hard_low_halves():
    low = np.array(sorted({0, 1, 0x7FFE, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF, 0x4000, 0xC000}
                          | set(range(0, 1 << 16, 257))), dtype=np.uint32)
    for start in range(0, 1 << 16, 1 << 12):  # top halves in slices (every one, NaN top halves included)
        top = np.arange(start, start + (1 << 12), dtype=np.uint32)
        values = ((top[:, None] << 16) | low[None, :]).view(np.float32)
        finite_or_inf = values[~np.isnan(values).any(axis=1)]
        np.testing.assert_array_equal(narrowed(finite_or_inf), reference_narrow(finite_or_inf))
        np.testing.assert_array_equal(narrowed(values), reference_narrow(values))  # rows with NaN: ml_dtypes' cast


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # ml_dtypes' cast of a NaN
def test_a_nan_leaves_the_array_to_ml_dtypes():
    values = np.resize(np.array([1.0, np.nan, -np.nan, np.inf, 3.0e38, 1.00390625], dtype=np.float32), CHUNK_ELEMENTS)
    np.testing.assert_array_equal(narrowed(values), reference_narrow(values))


@pytest.mark.parametrize("shape", [(), (0,), (7,), (CHUNK_ELEMENTS,), (3, CHUNK_ELEMENTS + 5), (2, 3, CHUNK_ELEMENTS // 4)])
def test_narrow_on_any_shape_and_layout_with_or_without_spare(shape):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 1 << 32, size=shape, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = np.where(np.isnan(values), np.float32(1.5), values).astype(np.float32)
    expected = reference_narrow(values)
    np.testing.assert_array_equal(narrowed(values), expected)
    np.testing.assert_array_equal(narrowed(values, np.empty(1000, dtype=np.float32)), expected)  # pieces of 1000
    if values.ndim >= 2:  # transposed values and target
        out = np.empty(values.shape[::-1], dtype=BF16).T
        emulate.narrow(out, values.T.copy().T)
        np.testing.assert_array_equal(out.view(np.uint16), expected)


def test_relu_on_the_bits_matches_ml_dtypes_for_every_bfloat16():
    for x in (EVERY_BF16, EVERY_BF16[np.isfinite(EVERY_BF16.astype(np.float32))]):
        y = apply(ops.ReLU, Tensor(x.copy(), requires_grad=True))
        np.testing.assert_array_equal(y.data.view(np.uint16), np.maximum(x, 0).view(np.uint16))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_relu_backward_on_the_bits_matches_ml_dtypes():
    finite = EVERY_BF16[np.isfinite(EVERY_BF16.astype(np.float32))]
    positive = finite[finite.astype(np.float32) > 0]
    outs = [np.zeros_like(finite), np.full_like(finite, 1.0), np.resize(positive, finite.shape),
            np.resize(np.concatenate([positive, np.zeros_like(positive)]), finite.shape)]
    grads = [finite, EVERY_BF16]  # every finite gradient; with inf and NaN (ml_dtypes' loop)
    for x_out in outs:
        for grad in grads:
            x_out = np.resize(x_out, grad.shape)
            x = Tensor(x_out.copy(), requires_grad=True)
            y = apply(ops.ReLU, x)
            (result,) = ops.ReLU.backward(y._node, grad)
            expected = np.sign(y.data)
            expected *= grad
            np.testing.assert_array_equal(result.view(np.uint16), expected.view(np.uint16))


@pytest.mark.slow
def test_narrow_matches_ml_dtypes_on_every_float32():
    step = 1 << 24
    for start in range(0, 1 << 32, step):
        values = np.arange(start, start + step, dtype=np.uint32).view(np.float32)
        values = values[~np.isnan(values)]  # NaN-free: the bit path (a NaN sends the whole array to ml_dtypes)
        np.testing.assert_array_equal(narrowed(values, np.empty(step, dtype=np.uint32)), reference_narrow(values),
                                      err_msg=f"float32 patterns from {start:#x}")

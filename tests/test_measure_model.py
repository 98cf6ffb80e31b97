"""`memstudy.measure_model`: the loss's signature and the batch's dtype are checked before anything runs
(issue 21, item 11), each with one clear line."""
from __future__ import annotations

import numpy as np
import pytest

import memstudy
from memstudy import nn
from memstudy.config import ConfigError


def mlp(dtype: str = "float32") -> nn.MLP:
    return nn.MLP(in_features=6, hidden=8, depth=2, out_features=3, dtype=dtype, seed=0)


def batch(dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 6)).astype(dtype), np.arange(4) % 3


def test_a_loss_with_the_wrong_signature_is_one_line_naming_the_expected_one():
    x, y = batch()
    with pytest.raises(ConfigError) as raised:
        memstudy.measure_model(mlp(), x, y, loss=lambda out, labels: nn.cross_entropy(out, labels))
    message = str(raised.value)
    assert "\n" not in message and "loss(model, inputs, labels)" in message, message


def test_a_loss_that_returns_no_tensor_is_one_line():
    x, y = batch()
    with pytest.raises(ConfigError) as raised:
        memstudy.measure_model(mlp(), x, y, loss=lambda model, inputs, labels: 0.0)
    assert "\n" not in str(raised.value) and "Tensor" in str(raised.value) and "float" in str(raised.value)


def test_a_three_argument_loss_is_used():
    x, y = batch()
    seen = []

    def loss(model, inputs, labels):
        seen.append(labels.shape)
        return nn.cross_entropy(model(inputs), labels)

    result = memstudy.measure_model(mlp(), x, y, loss=loss)
    assert seen and result.rows[0]["activation_bytes"] > 0


def test_a_float64_batch_for_a_float32_model_is_refused_naming_both_dtypes():
    x, y = batch("float64")
    with pytest.raises(ConfigError) as raised:
        memstudy.measure_model(mlp("float32"), x, y)
    message = str(raised.value)
    assert "\n" not in message and "float64" in message and "float32" in message and "astype" in message, message


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_row_says_the_models_dtype(dtype):
    x, y = batch(dtype)
    (row,) = memstudy.measure_model(mlp(dtype), x, y).rows
    assert row["dtype"] == dtype and row["prediction_matches"] is True


def test_integer_inputs_take_the_models_dtype_in_the_row():
    """Token ids (int64) feed an embedding: the row's dtype is the parameters', not the ids'."""
    model = memstudy.nn.models.registry.get_family("gpt").build(
        memstudy.config.normalize({"model": "gpt", "depth": 1, "width": 8, "heads": 2, "seq_len": 4, "vocab": 11,
                                   "batch_size": 2}))
    tokens = np.zeros((2, 4), dtype=np.int64)
    (row,) = memstudy.measure_model(model, tokens, tokens).rows
    assert row["dtype"] == "float32"

"""16-bit training: dtypes, fp32 master weights (ZeRO's 2 + 2 + 12 bytes per parameter), dynamic loss scaling
(PyTorch GradScaler's rules), the precision fields and Lightning's names, and what each op does to a 16-bit value.

Hand-made expectations throughout: Ψ is counted from the model, the scale's sequence is PyTorch's own kernel's
(`torch._amp_update_scale_`, when torch is installed), the underflow is a depth-8 sigmoid MLP's first-layer gradient
(vanishing gradients: ~1e-8, below float16's smallest subnormal 6e-8 once rounded).
"""
from __future__ import annotations

import numpy as np
import pytest

from memstudy import optim
from memstudy.autograd import Tensor, apply, ops
from memstudy.autograd.precision import FLOAT32, dtype as as_dtype, is_float, is_low
from memstudy.config import ConfigError
from memstudy.measure.predict import predicted_account
from memstudy.measure.workload import Workload, _copy_values
from memstudy.nn.models.registry import LIGHTNING_PRECISIONS, PRECISIONS, normalize

BF16 = as_dtype("bfloat16")
FAMILIES = {
    "mlp": dict(depth=2, width=24, batch_size=4),
    "seed": dict(width=16, batch_size=4),
    "gpt": dict(depth=2, width=32, heads=2, seq_len=8, vocab=40, batch_size=2, dropout=0.1),
    "llama": dict(depth=2, width=32, heads=4, kv_heads=2, seq_len=8, vocab=40, batch_size=2, ffn=48),
    "cnn": dict(depth=2, width=4, image_size=8, batch_size=2),
}


def test_bfloat16_is_a_float_and_16_bit_but_not_kind_f():
    assert BF16.kind == "V" and BF16.itemsize == 2  # why the code asks is_float, never dtype.kind == "f"
    assert is_float(BF16) and is_low(BF16) and is_low(np.dtype(np.float16))
    assert not is_low(np.dtype(np.float32)) and not is_float(np.dtype(np.int16))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_master_weights_with_adam_are_zeros_2_2_12_bytes_per_parameter_in_every_family(family, dtype):
    config = normalize(dict(model=family, **FAMILIES[family], dtype=dtype, master_weights=True, optimizer="adam"))
    work = Workload(config)
    work.step()
    work.reset()
    account = work.ledger_step()
    trainable = sum(p.data.size for p in work.optimizer.params)
    model_state = sum(p.data.size for p in work.model.parameters()) + sum(a.size for _, a in work.model.named_buffers())
    assert account.registered_bytes["parameter"] == 2 * model_state
    assert account.max_by_category["gradient"] == 2 * trainable
    assert account.registered_bytes["optimizer_state"] == 12 * trainable  # masters, first and second moments
    assert all(a.dtype == FLOAT32 for a in work.optimizer.state_arrays())
    predicted = predicted_account(config)
    assert (predicted.registered_bytes, predicted.max_by_category) == (account.registered_bytes,
                                                                       account.max_by_category)


def test_without_master_weights_16_bit_adam_keeps_its_state_in_16_bits():
    config = normalize(dict(model="mlp", **FAMILIES["mlp"], dtype="bfloat16", optimizer="adam"))
    work = Workload(config)
    work.step()
    trainable = sum(p.data.size for p in work.optimizer.params)
    assert work.optimizer.state_nbytes() == 4 * trainable  # two moments, 2 bytes each (PyTorch keeps p's dtype)


def test_lora_adapters_stay_float32_beside_a_16_bit_base_and_need_no_master_copy():
    config = normalize(dict(model="gpt", **FAMILIES["gpt"], dtype="bfloat16", master_weights=True, optimizer="adam",
                            lora_rank=2))
    work = Workload(config)
    work.step()
    adapters = sum(p.data.size for p in work.optimizer.params)
    assert all(p.data.dtype == FLOAT32 for p in work.optimizer.params)
    assert work.optimizer.state_nbytes() == 8 * adapters  # m and v in float32, no master (already float32)


def test_an_update_below_bfloat16s_resolution_is_lost_without_master_weights_and_kept_with_them():
    """lr·g = 1e-6 per step beside a parameter of 1.0 (bfloat16's spacing there: 2⁻⁷): rounded away every step
    in bfloat16, accumulated by the float32 master copy until it moves the parameter."""
    results = {}
    for master in (False, True):
        p = Tensor(np.ones(3, dtype=BF16), requires_grad=True)
        sgd = optim.SGD([p], lr=1e-3, master_weights=master)
        for _ in range(8000):
            p.grad = np.full(3, -1e-3, dtype=BF16)
            sgd.step()
        results[master] = p.data.astype(np.float64)
    assert np.all(results[False] == 1.0)
    assert np.all(results[True] == 1.0078125)  # 1 + 8000e-6 = 1.008, rounded to bfloat16: 1 + 2⁻⁷


def sigmoid_mlp(**fields):
    return Workload(normalize(dict(model="mlp", depth=8, width=64, batch_size=64, activation="sigmoid",
                                   optimizer="sgd", **fields)))


def first_layer_gradient(work: Workload) -> np.ndarray:
    work.optimizer.zero_grad()
    loss = work.loss("minimal")
    scale = 1.0 if work.scaler is None else float(work.scaler.scale)
    (loss if work.scaler is None else loss * scale).backward()
    return work.model.parameters()[0].grad.astype(np.float64) / scale


def float64_first_layer_gradient(work: Workload) -> np.ndarray:
    twin = Workload({**work.config, "dtype": "float64", "autocast": "none", "master_weights": False,
                     "loss_scale": "none"})
    _copy_values(work.model, twin.model)
    twin.inputs.data[...] = work.inputs.data
    twin.labels[...] = work.labels
    return first_layer_gradient(twin)


@pytest.mark.parametrize("fields", [dict(autocast="float16"), dict(dtype="float16", master_weights=True)],
                         ids=["16-mixed", "16-master"])
def test_float16_gradients_underflow_without_loss_scaling_and_not_with_it(fields):
    unscaled = first_layer_gradient(sigmoid_mlp(**fields))
    scaled_work = sigmoid_mlp(**fields, loss_scale="dynamic")
    scaled = first_layer_gradient(scaled_work)
    reference = float64_first_layer_gradient(scaled_work)
    assert np.abs(reference).max() < 1e-7  # vanishing: every entry below float16's smallest normal (6.1e-5)
    assert np.all(unscaled == 0)  # flushed to zero
    assert np.mean(scaled == 0) < 0.01
    error = np.linalg.norm(scaled - reference) / np.linalg.norm(reference)
    assert error < 2 ** -7, error  # float16 arithmetic on 2¹⁶-times larger numbers: its usual precision


def test_the_loss_scaler_has_gradscalers_defaults():
    scaler = optim.LossScaler()
    assert float(scaler.scale) == 2.0 ** 16 and int(scaler.growth_tracker) == 0
    assert (scaler.growth_factor, scaler.backoff_factor, scaler.growth_interval) == (2.0, 0.5, 2000)
    torch = pytest.importorskip("torch")
    theirs = torch.amp.GradScaler("cpu")
    assert (theirs._init_scale, theirs._growth_factor, theirs._backoff_factor, theirs._growth_interval) == (
        2.0 ** 16, 2.0, 0.5, 2000)


def test_the_scale_grows_and_backs_off_as_pytorchs_kernel_does():
    torch = pytest.importorskip("torch")
    pattern = [False] * 2000 + [True] + [False] * 1999 + [True, True] + [False] * 4100
    pattern[3000] = True
    ours = optim.LossScaler()
    scale, tracker = torch.tensor(2.0 ** 16), torch.tensor(0, dtype=torch.int32)
    for step, found in enumerate(pattern):
        ours.update(found)
        torch._amp_update_scale_(scale, tracker, torch.tensor(float(found)), 2.0, 0.5, 2000)
        assert float(ours.scale) == float(scale) and int(ours.growth_tracker) == int(tracker), step
    assert float(ours.scale) == 2.0 ** 16 * 2 ** 3 / 2 ** 4  # 3 growths (each 2000 clean steps), 4 backoffs


def test_a_step_with_an_inf_gradient_is_skipped_and_the_scale_halves():
    p = Tensor(np.ones(4, np.float32), requires_grad=True)
    adam = optim.Adam([p])
    scaler = optim.LossScaler()
    p.grad = np.array([1.0, np.inf, 0.0, 2.0], np.float32)
    assert adam.step(scaler) is False
    assert np.all(p.data == 1.0) and adam.steps == 0 and float(scaler.scale) == 2.0 ** 15
    p.grad = np.full(4, 2.0 ** 15, np.float32)  # a clean scaled gradient: unscaled to 1 in place, then applied
    assert adam.step(scaler) is True
    assert np.all(p.grad == 1.0) and adam.steps == 1 and np.all(p.data < 1.0)
    assert int(scaler.growth_tracker) == 1


def test_the_scalers_two_4_byte_buffers_are_optimizer_state_in_the_ledger():
    base = dict(model="gpt", **FAMILIES["gpt"], optimizer="adam", autocast="float16")
    plain, scaled = (Workload(normalize({**base, "loss_scale": ls})) for ls in ("none", "dynamic"))
    for work in (plain, scaled):
        work.step()
    a, b = plain.ledger_step(), scaled.ledger_step()
    assert b.registered_bytes["optimizer_state"] - a.registered_bytes["optimizer_state"] == 8
    roles = [x.role for x in b.buffers if x.registered == "optimizer_state" and x.nbytes == 4]
    assert roles == ["loss_scale", "growth_tracker"]


# --- the fields and the names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LIGHTNING_PRECISIONS)
def test_lightnings_names_set_the_fields(name):
    config = normalize({"precision": name})
    dtype, cast, master, scale = PRECISIONS[name]
    assert (config["dtype"], config["autocast"], config["master_weights"], config["loss_scale"]) == \
        (dtype, cast, master, scale)
    assert "precision" not in config


@pytest.mark.parametrize("raw,message", [
    ({"precision": "bf17-mixed"}, "precision must be one of 64-true"),
    ({"precision": "bf16-true", "dtype": "float64"}, "precision bf16-true sets dtype"),
    ({"dtype": "bfloat16", "autocast": "bfloat16"}, "dtype must be float32 with autocast"),
    ({"dtype": "float64", "autocast": "float16"}, "dtype must be float32 with autocast"),
    ({"master_weights": True}, "dtype must be bfloat16 or float16 with master_weights"),
    ({"loss_scale": "dynamic"}, "loss_scale dynamic"),
    ({"dtype": "float16", "loss_scale": "dynamic"}, "loss_scale dynamic"),
    ({"autocast": "bfloat16", "loss_scale": "dynamic"}, "loss_scale dynamic"),
])
def test_bad_precision_fields_are_refused_in_one_line(raw, message):
    with pytest.raises(ConfigError) as info:
        normalize(raw)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_row_from_before_the_precision_fields_describes_as_before():
    from memstudy.nn.models.registry import get_family

    family = get_family("mlp")
    config = normalize({})
    old = {k: v for k, v in config.items() if k not in ("autocast", "master_weights", "loss_scale")}
    assert family.describe(old) == family.describe(config)
    assert "autocast bfloat16" in family.describe(normalize({"precision": "bf16-mixed"}))


# --- what the ops do to 16-bit values ----------------------------------------------------------------------------

def test_a_16_bit_matmul_accumulates_in_float32_and_rounds_once():
    k = 4096
    a = np.full((1, k), 1.0, dtype=BF16)
    b = np.full((k, 1), 1.0 / 256, dtype=BF16)  # k terms of 2⁻⁸: a bfloat16 running sum would stall at 2
    out = apply(ops.MatMul, Tensor(a), Tensor(b)).data
    assert out.dtype == BF16 and float(out[0, 0]) == 16.0


@pytest.mark.filterwarnings("ignore:overflow encountered in reduce:RuntimeWarning")
def test_16_bit_reductions_accumulate_in_float32():
    x = Tensor(np.ones(100_000, dtype=np.float16), requires_grad=True)
    total = x.sum()
    assert total.dtype == np.float16 and np.isinf(total.data)  # 100,000 > float16's largest, 65504: inf, honestly
    mean = x.mean()
    assert float(mean.data) == 1.0  # a float16 running sum would stop at 2048


# --- the command line ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--precision", "bf17"], ["--dtype", "bfloat16", "--autocast", "bfloat16"],
                                  ["--master-weights"], ["--precision", "bf16-true", "--dtype", "float64"],
                                  ["--autocast", "bfloat16", "--loss-scale", "dynamic"]])
def test_cli_refuses_bad_precision_flags_in_one_line(args, capsys):
    from memstudy import cli

    assert cli.main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_precision_name_sets_the_fields(capsys):
    import json

    from memstudy import cli

    assert cli.main(["predict", "--precision", "16-mixed", "--depth", "2", "--width", "16", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["dtype"], row["autocast"], row["master_weights"], row["loss_scale"]) == \
        ("float32", "float16", False, "dynamic")


def test_llama_3_8b_in_bfloat16_with_master_weights_is_zeros_16_bytes_per_parameter(capsys):
    """Issue 24's must-show: `memstudy predict --hf-config llama-3-8b.json --dtype bfloat16 --master-weights
    --optimizer adam --seq-len 4096 --batch 1`."""
    import json
    from pathlib import Path

    from memstudy import cli

    config = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "llama-3-8b.json"
    assert cli.main(["predict", "--hf-config", str(config), "--dtype", "bfloat16", "--master-weights", "--optimizer",
                     "adam", "--seq-len", "4096", "--batch", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    psi = 8_030_261_248  # REFERENCES.md: transformers builds it with exactly this count
    assert (row["parameter_bytes"], row["gradient_bytes"], row["optimizer_state_bytes"]) == (2 * psi, 2 * psi,
                                                                                              12 * psi)

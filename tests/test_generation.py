"""Mode generate: a prefill and greedy decode steps with a KV cache (nn/generation.py, nn/kv_cache.py, the ledger's
`kv_cache` category, memory/generation.py), for the GPT and Llama families.

- The cache's bytes after the prefill and after each decode step are 2 · L · b · s · kv_heads · d · itemsize (s the
  positions held; a static cache's s is prompt_len + new_tokens throughout), by the ledger and by the predictor,
  for every dtype the registry lists (registry.DTYPES: a dtype added there joins these tests).
- A dynamic cache's concatenation copies show: during each decode step the ledger holds one layer's old keys (then
  values) beside the new ones; a static cache never holds more than itself.
- Every cache buffer is `kv_cache`, with the role key or value and its layer; the phases are the prefill and the
  decode steps, nothing after.
- The tokens are the model's own greedy choice: equal to running the whole sequence again at every step (no cache),
  whatever the cache and the prefill's logits.
- Bad input is one line: new_tokens 0, a generation longer than seq_len, a family that cannot generate.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck import check_grad
from memstudy import nn
from memstudy.autograd import Tensor, apply, no_grad, ops
from memstudy.cli import main
from memstudy.config import ConfigError, normalize
from memstudy.measure.generation import GENERATION_COLUMNS, cache_bytes_after_each_step, generation_figures
from memstudy.measure.predict import predict, predicted_account
from memstudy.measure.workload import Workload
from memstudy.nn.generation import generate
from memstudy.nn.models.registry import DTYPES
from memstudy.run.spec import SpecError, cell_id, parse_spec

SETTINGS = settings(max_examples=12, deadline=None)
FAMILIES = {
    "gpt": dict(model="gpt", depth=2, width=16, heads=2, vocab=40),
    "llama": dict(model="llama", depth=2, width=16, heads=4, kv_heads=2, ffn=24, vocab=40),
}


def config(family: str, **fields) -> dict:
    return normalize({**FAMILIES[family], "mode": "generate", "seq_len": 16, "batch_size": 2, **fields})


def per_token_bytes(cfg: dict) -> int:
    """2 · L · kv_heads · d · itemsize: one sequence's cache per position."""
    kv = cfg.get("kv_heads") or cfg["heads"]
    return 2 * cfg["depth"] * kv * (cfg["width"] // cfg["heads"]) * np.dtype(cfg["dtype"]).itemsize


@SETTINGS
@given(family=st.sampled_from(sorted(FAMILIES)), dtype=st.sampled_from(DTYPES), kind=st.sampled_from(["dynamic", "static"]),
       batch=st.integers(1, 3), prompt=st.integers(1, 6), new=st.integers(1, 5), logits=st.sampled_from(["last", "all"]))
def test_cache_bytes_follow_the_formula_by_ledger_and_predictor(family, dtype, kind, batch, prompt, new, logits):
    cfg = config(family, dtype=dtype, kv_cache=kind, batch_size=batch, prompt_len=prompt, new_tokens=new,
                 prefill_logits=logits)
    work = Workload(cfg)
    account = work.ledger_step()
    held = [prompt + k for k in range(new)] if kind == "dynamic" else [prompt + new] * new
    expected = [per_token_bytes(cfg) * batch * s for s in held]
    assert cache_bytes_after_each_step(account) == expected
    predicted = predicted_account(cfg)
    assert cache_bytes_after_each_step(predicted) == expected
    assert generation_figures(predicted) == generation_figures(account)  # prediction = ledger
    assert predicted.peak_by_category == account.peak_by_category


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_dynamic_copies_show_and_static_holds_only_itself(family, kind):
    cfg = config(family, kv_cache=kind, prompt_len=5, new_tokens=4)
    account = Workload(cfg).ledger_step()
    layer_bytes = per_token_bytes(cfg) // cfg["depth"] // 2 * cfg["batch_size"]  # one layer's keys per position
    final = cache_bytes_after_each_step(account)[-1]
    if kind == "dynamic":  # the last step's concatenation: the old keys (prompt + 2 positions) beside the new ones
        assert account.max_by_category["kv_cache"] == final + layer_bytes * (5 + 2)
        copies = [b for b in account.buffers if b.category == "kv_cache" and b.died is not None]
        assert len(copies) == 2 * cfg["depth"] * 3  # every buffer but the last step's, keys and values per layer
    else:
        assert account.max_by_category["kv_cache"] == final
        assert all(b.died is None for b in account.buffers if b.category == "kv_cache")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cache_buffers_have_roles_layers_and_the_phases_are_prefill_and_decode_steps(family):
    cfg = config(family, prompt_len=4, new_tokens=3, kv_cache="static")
    account = Workload(cfg).ledger_step()
    cache = [b for b in account.buffers if b.category == "kv_cache"]
    assert sorted((b.layer, b.role) for b in cache) == sorted(
        (layer, role) for layer in range(cfg["depth"]) for role in ("key", "value"))
    assert all(b.op == "kv_cache_allocate" and b.phase == "prefill" for b in cache)
    phases = [p["phase"] for p in account.by_phase()]
    assert phases == ["baseline", "prefill", "decode 1", "decode 2"]
    rows = account.timeline_rows()
    assert {r["category"] for r in rows} >= {"kv_cache", "parameter", "temporary", "output"}
    assert rows[-1]["kv_cache_bytes"] == cache_bytes_after_each_step(account)[-1]


def reference_greedy(model, prompt: np.ndarray, new: int) -> np.ndarray:
    """Greedy decoding without a cache: the whole sequence run again for every token."""
    seq = prompt
    with no_grad():
        for _ in range(new):
            logits = model(seq).data
            seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return seq


def lively(model, seed: int = 5):
    """Weights N(0, 4/fan_in) (norms left at one), so greedy tokens differ from step to step (at the initial
    std 0.02 they repeat one token)."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.data.ndim == 2:
            p.data[...] = rng.standard_normal(p.shape) * 2 / np.sqrt(p.shape[1])
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generated_tokens_equal_greedy_decoding_without_a_cache(family):
    cfg = config(family, dtype="float64", prompt_len=5, new_tokens=7)
    work = Workload(cfg)
    lively(work.model)
    expected = reference_greedy(work.model, work.inputs.data, 7)
    assert len(np.unique(expected[:, 5:])) > 3  # the check can fail: the tokens change
    for kind in ("dynamic", "static"):
        for logits in ("last", "all"):
            sequences, cache = generate(work.model, work.inputs, 7, kind, logits)
            np.testing.assert_array_equal(sequences.data, expected)
            assert cache.length == 5 + 6


def test_the_step_keeps_its_output_and_cache_and_rows_carry_the_figures():
    cfg = config("llama", prompt_len=6, new_tokens=3)
    work = Workload(cfg)
    sequences, cache = work.step()
    assert sequences.shape == (2, 9) and cache.nbytes() == per_token_bytes(cfg) * 2 * 8
    figures = generation_figures(work.ledger_step())
    assert figures["kv_cache_step_bytes"] == per_token_bytes(cfg) * 2
    assert figures["kv_cache_prefill_bytes"] == per_token_bytes(cfg) * 2 * 6
    assert figures["prefill_peak_bytes"] > figures["decode_peak_bytes"] > 0
    prediction = predict(cfg)
    assert prediction["predicted_kv_cache_bytes"] == figures["kv_cache_bytes"]
    assert prediction["predicted_decode_peak_bytes"] == figures["decode_peak_bytes"]
    train = Workload(normalize({**FAMILIES["llama"], "seq_len": 16})).ledger_step()
    assert generation_figures(train) == dict.fromkeys(GENERATION_COLUMNS)
    assert train.peak_by_category["kv_cache"] == 0


def test_one_token_is_the_prefill_alone():
    cfg = config("gpt", prompt_len=4, new_tokens=1)
    figures = generation_figures(Workload(cfg).ledger_step())
    assert figures["decode_peak_bytes"] is None and figures["kv_cache_step_bytes"] is None
    assert figures["kv_cache_bytes"] == figures["kv_cache_prefill_bytes"] == per_token_bytes(cfg) * 2 * 4


# --- the fields and bad input ----------------------------------------------------------------------------

def test_defaults_fill_the_context_and_other_modes_carry_no_generation_fields():
    cfg = config("llama")
    assert (cfg["prompt_len"], cfg["new_tokens"], cfg["kv_cache"], cfg["prefill_logits"]) == (8, 8, "dynamic", "last")
    train = normalize({**FAMILIES["gpt"], "mode": "train", "prompt_len": 3, "new_tokens": 2})
    assert all(train[f] is None for f in ("prompt_len", "new_tokens", "kv_cache", "prefill_logits"))
    assert "prompt_len" not in cell_id(train)  # train and inference cells keep the ids they had before the fields
    assert "prompt_len=8" in cell_id(cfg) and "kv_cache=dynamic" in cell_id(cfg)


@pytest.mark.parametrize("fields,message", [
    (dict(new_tokens=0), "new_tokens must be at least 1"),
    (dict(prompt_len=10, new_tokens=7), "prompt_len + new_tokens = 10 + 7 = 17 is above seq_len 16"),
    (dict(new_tokens=16), "new_tokens 16 leaves no prompt within seq_len 16"),
    (dict(kv_cache="paged"), "kv_cache must be one of dynamic, static"),
])
def test_bad_generation_fields_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config("llama", **fields)


@pytest.mark.parametrize("model", ["mlp", "cnn", "seed"])
def test_a_family_that_cannot_generate_says_so(model):
    with pytest.raises(ConfigError, match=f"mode generate: model '{model}' cannot generate .*gpt, llama can"):
        normalize({"model": model, "mode": "generate"})


@pytest.mark.parametrize("argv,message", [
    (["run", "--model", "llama", "--mode", "generate", "--new-tokens", "0"], "argument --new-tokens: must be at least 1"),
    (["predict", "--model", "llama", "--mode", "generate", "--prompt-len", "128", "--new-tokens", "32"],
     "is above seq_len 64"),
    (["run", "--model", "mlp", "--mode", "generate"], "cannot generate"),
    (["predict", "--model", "cnn", "--mode", "generate"], "cannot generate"),
])
def test_cli_refuses_bad_generation_in_one_line(argv, message, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals (a flag's bounds) exit from the parser
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_predict_generate_on_the_cli(capsys):
    argv = ["predict", "--model", "llama", "--mode", "generate", "--prompt-len", "128", "--new-tokens", "32",
            "--seq-len", "160", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = normalize({k: out[k] for k in ("model", "depth", "width", "heads", "kv_heads", "dtype", "batch_size",
                                         "seq_len", "vocab", "ffn", "mode", "prompt_len", "new_tokens")})
    assert out["predicted_kv_cache_bytes"] == per_token_bytes(cfg) * cfg["batch_size"] * (128 + 31)


def test_a_grid_of_modes_and_generation_fields_makes_each_training_cell_once():
    spec = parse_spec({"grid": {**FAMILIES["llama"], "mode": ["train", "inference", "generate"], "seq_len": [16, 32],
                                "new_tokens": [2, 4]}})
    modes = [c["mode"] for c in spec.cells()]
    assert modes.count("train") == 2 and modes.count("inference") == 2 and modes.count("generate") == 4
    with pytest.raises(SpecError, match="cannot generate"):
        parse_spec({"grid": {"model": "mlp", "mode": ["train", "generate"]}})
    with pytest.raises(SpecError, match="above seq_len"):
        parse_spec({"grid": {**FAMILIES["gpt"], "mode": "generate", "seq_len": 8, "prompt_len": 6, "new_tokens": 4}})


# --- the ops -----------------------------------------------------------------------------------------------

def layouts(array: np.ndarray) -> list[np.ndarray]:
    """The same values as C-ordered, Fortran-ordered, a transposed copy viewed back, and a strided view."""
    wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],))
    wide[..., ::2] = array
    return [array.copy(), np.asfortranarray(array), array.swapaxes(-1, -2).copy().swapaxes(-1, -2), wide[..., ::2]]


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.integers(0, 4), st.integers(1, 3), st.integers(0, 3), st.integers(0, 3))
def test_causal_mask_with_an_offset(b, offset, rows, extra, layout):
    rng = np.random.default_rng(offset)
    x = layouts(rng.normal(size=(b, rows, offset + rows + extra)))[layout]
    out = apply(ops.CausalMask, Tensor(x), offset=offset).data
    keep = np.arange(x.shape[-1])[None, :] <= offset + np.arange(rows)[:, None]
    np.testing.assert_array_equal(np.isneginf(out), np.broadcast_to(~keep, out.shape))
    np.testing.assert_array_equal(out[:, keep], x[:, keep])
    check_grad(lambda t: apply(ops.Softmax, apply(ops.CausalMask, t, offset=offset), axis=-1), [x])


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(1, 3), st.integers(1, 3))
def test_concatenate_and_cache_append_on_every_layout(la, lb, t, q):
    rng = np.random.default_rng(t + 4 * q)
    a = layouts(rng.normal(size=(2, 3, t, 4)))[la]
    new = layouts(rng.normal(size=(2, 3, q, 4)))[lb]
    out = apply(ops.CacheAppend, Tensor(a), Tensor(new), role="value").data
    np.testing.assert_array_equal(out, np.concatenate([a, new], axis=-2))
    assert out.base is None and not np.shares_memory(out, a)
    check_grad(lambda s, u: apply(ops.Concatenate, s, u, axis=2), [a, new])
    check_grad(lambda s, u: apply(ops.CacheAppend, s, u, role="key"), [a, new])


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(1, 3))
def test_static_cache_layer_writes_in_place_from_every_layout(layout, start, q):
    from memstudy.nn.kv_cache import StaticLayer

    rng = np.random.default_rng(start + 4 * q)
    first = Tensor(layouts(rng.normal(size=(2, 3, start, 4)))[layout]) if start else None
    new = Tensor(layouts(rng.normal(size=(2, 3, q, 4)))[layout])
    layer = StaticLayer(start + q + 1)
    with no_grad():
        if first is not None:
            layer.update(first, first)
        keys, values = layer.update(new, new)
        buffer = keys.data
        one = Tensor(new.data[:, :, :1])
        assert layer.update(one, one)[0].data is buffer  # written in place: the same buffer, no new bytes
    np.testing.assert_array_equal(buffer[..., start:start + q, :], new.data)
    if first is not None:
        np.testing.assert_array_equal(buffer[..., :start, :], first.data)
    assert layer.length == start + q + 1
    with pytest.raises(ValueError, match="do not fit"), no_grad():
        layer.update(new, new)
    with pytest.raises(ValueError, match="role"):
        apply(ops.CacheAllocate, new, length=4, role="query")


def test_argmax_on_a_view_and_a_cache_where_a_graph_is_recorded_is_refused():
    logits = np.random.default_rng(0).normal(size=(3, 5, 7))
    view = logits[:, ::2, :].swapaxes(0, 1)
    np.testing.assert_array_equal(apply(ops.Argmax, Tensor(view), axis=-1).data, view.argmax(-1))
    model = nn.GPT(vocab=10, seq_len=8, depth=1, width=8, heads=2)
    from memstudy.nn.kv_cache import KVCache

    with pytest.raises(ValueError, match="under no_grad"):
        model(np.zeros((1, 2), dtype=np.int64), cache=KVCache(1))


def test_measure_model_generates_a_model_built_by_hand():
    import memstudy

    model = nn.Llama(vocab=30, seq_len=16, depth=1, width=16, heads=2, ffn=24)
    prompt = np.random.default_rng(0).integers(0, 30, (2, 5))
    result = memstudy.measure_model(model, prompt, mode="generate", new_tokens=3, kv_cache="static")
    row = result.rows[0]
    per_token = 2 * 1 * 2 * 8 * 4  # 2 · L · kv · d · itemsize
    assert row["kv_cache_bytes"] == row["predicted_kv_cache_bytes"] == per_token * 2 * (5 + 3)
    assert row["prefill_peak_bytes"] == row["predicted_prefill_peak_bytes"]

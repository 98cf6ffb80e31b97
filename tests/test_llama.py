"""The llama family: names, layers, checkpointing, bad configs; Hugging Face configs (--hf-config, a spec's
hf_config, Llama.from_hf_config) for llama and gpt, and every refusal as one line with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memstudy import nn
from memstudy.autograd import no_grad
from memstudy.config import ConfigError, normalize
from memstudy.measure.predict import predict
from memstudy.measure.workload import Workload
from memstudy.nn.models.hf_config import hf_config_fields
from memstudy.nn.models.llama import parameter_count
from memstudy.run.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
SMALL = dict(vocab=23, seq_len=6, depth=2, width=16, heads=4, kv_heads=2, ffn=24, dtype="float64", seed=0)
LLAMA_3_8B = json.loads((CONFIGS / "llama-3-8b.json").read_text())


def test_parameter_names_are_transformers_in_its_order():
    names = [n for n, _ in nn.Llama(**{**SMALL, "depth": 1}).named_parameters()]
    layer = "model.layers.0."
    assert names == ["model.embed_tokens.weight"] + [
        layer + p + ".weight" for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
                                        "post_attention_layernorm")] + ["model.norm.weight", "lm_head.weight"]
    tied = nn.Llama(**{**SMALL, "depth": 1, "tie": True})
    assert [n for n, _ in tied.named_parameters()][-1] == "model.norm.weight"  # the tied head listed once
    assert tied.lm_head.weight is tied.model.embed_tokens.weight


def test_shapes_and_parameter_layers():
    model = nn.Llama(**SMALL)
    params = dict(model.named_parameters())
    assert params["model.layers.0.self_attn.q_proj.weight"].shape == (16, 16)
    assert params["model.layers.0.self_attn.k_proj.weight"].shape == (8, 16)  # kv·d = 2·4
    assert params["model.layers.1.mlp.down_proj.weight"].shape == (16, 24)
    layers = dict(zip(params, model.parameter_layers()))
    assert layers["model.embed_tokens.weight"] == 3 and layers["model.norm.weight"] == 2
    assert layers["lm_head.weight"] == 2 and layers["model.layers.1.mlp.up_proj.weight"] == 1
    config = normalize({"model": "llama", **SMALL})
    assert sum(p.data.size for p in model.parameters()) == parameter_count(config)


def test_causal_logits_do_not_depend_on_later_tokens():
    model = nn.Llama(**SMALL)
    ids = np.random.default_rng(0).integers(0, 23, size=(2, 6))
    changed = ids.copy()
    changed[:, 4:] = (changed[:, 4:] + 1) % 23
    a, b = model(ids).data, model(changed).data
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert not np.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("checkpoint", ["selective", "sqrt", "every:1"])
@pytest.mark.parametrize("lora", [0, 2])
def test_checkpointing_gives_the_same_gradients(checkpoint, lora):
    grads = {}
    for strategy in ("none", checkpoint):
        work = Workload(normalize({"model": "llama", **SMALL, "depth": 3, "batch_size": 2, "checkpoint": strategy,
                                   "lora_rank": lora}))
        work.loss("minimal").backward()
        grads[strategy] = {n: p.grad for n, p in work.model.named_parameters() if p.requires_grad}
    for name, g in grads["none"].items():
        np.testing.assert_allclose(grads[checkpoint][name], g, rtol=1e-12, atol=1e-14, err_msg=name)


def test_inference_holds_nothing_and_tokens_are_checked():
    account = Workload(normalize({"model": "llama", **SMALL, "mode": "inference"})).ledger_step()
    assert account.activation_bytes == 0
    model = nn.Llama(**SMALL)
    with no_grad():
        assert model(np.zeros((1, 40), dtype=np.int64)).shape == (1, 40, 23)  # no position table: any length
    for bad, message in ((np.full((1, 3), 23), r"token ids must be in \[0, 23\)"), (np.zeros(3, int), "batch, seq_len"),
                         (np.zeros((1, 3)), "must be integers")):
        with pytest.raises(ValueError, match=message):
            model(bad)


@pytest.mark.parametrize("fields,message", [
    (dict(heads=4, kv_heads=3), "kv_heads must divide heads: heads 4 is not a multiple of kv_heads 3"),
    (dict(width=30), "heads must divide width: width 30 is not a multiple of heads 4"),
    (dict(width=12, heads=4), r"the head dimension width / heads = 3 must be even"),
    (dict(rope_theta=0.0), "rope_theta must be positive"),
    (dict(kv_heads=0), "kv_heads must be at least 1"),
])
def test_bad_configs_get_one_line(fields, message):
    with pytest.raises(ConfigError, match=message):
        normalize({"model": "llama", **fields})


def test_kv_heads_defaults_to_heads():
    assert normalize({"model": "llama", "heads": 8, "width": 64})["kv_heads"] == 8


# --- Hugging Face configs -----------------------------------------------------------------------------------------

def test_llama_fields_from_its_config_json():
    family, fields = hf_config_fields(CONFIGS / "llama-3-8b.json")
    assert family.name == "llama"
    assert fields == dict(depth=32, width=4096, heads=32, kv_heads=8, ffn=14336, vocab=128256, seq_len=8192,
                          rope_theta=500000.0, eps=1e-5, tie=False)
    _, tiny = hf_config_fields(CONFIGS / "tinyllama-1.1b.json")
    assert (tiny["rope_theta"], tiny["kv_heads"], tiny["depth"]) == (10000.0, 4, 22)  # LlamaConfig's default theta
    _, v5 = hf_config_fields({**LLAMA_3_8B, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert v5["rope_theta"] == 1e6  # transformers 5 writes rope_parameters


def test_gpt_fields_from_gpt2s_config_json():
    family, fields = hf_config_fields(CONFIGS / "gpt2.json")
    assert family.name == "gpt"
    assert fields == dict(depth=12, width=768, heads=12, seq_len=1024, vocab=50257, dropout=0.1)
    assert predict({"model": "gpt", **fields, "batch_size": 1, "mode": "inference"})["parameter_bytes"] == \
        4 * 124_439_808  # GPT-2 small with its 1024-position table


def test_sizes_of_the_shipped_configs():
    """Parameter counts in closed form (checked against transformers in tests/test_llama_hf.py for the 8B)."""
    counts = {}
    for name in ("llama-3-8b", "tinyllama-1.1b", "llama-3-70b"):
        _, fields = hf_config_fields(CONFIGS / f"{name}.json")
        counts[name] = parameter_count(normalize({"model": "llama", **fields}))
    assert counts == {"llama-3-8b": 8_030_261_248, "tinyllama-1.1b": 1_100_048_384,
                      "llama-3-70b": 70_553_706_496}


LLAMA_3_2_ROPE = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"}


@pytest.mark.parametrize("change,message", [
    (dict(rope_scaling=LLAMA_3_2_ROPE), "a 'llama3' rope_scaling is not what memstudy's llama computes"),
    (dict(rope_parameters={**LLAMA_3_2_ROPE, "rope_theta": 5e5}), "rope_parameters .* is not what memstudy's llama"),
    (dict(attention_bias=True), "attention_bias = true is not what memstudy's llama computes"),
    (dict(mlp_bias=True), "mlp_bias = true is not what"),
    (dict(hidden_act="gelu"), 'hidden_act = "gelu" is not what'),
    (dict(attention_dropout=0.1), "attention_dropout = 0.1 is not what"),
    (dict(head_dim=64), "head_dim 64 is not hidden_size / num_attention_heads = 128"),
    (dict(num_local_experts=8), "unknown key 'num_local_experts' for a llama"),
    (dict(model_type="mistral"), "model_type 'mistral' is not one memstudy reads"),
])
def test_what_the_llama_cannot_honour_is_one_line_naming_it(change, message):
    with pytest.raises(ConfigError, match=message):
        hf_config_fields({**LLAMA_3_8B, **change})


@pytest.mark.parametrize("change,message", [
    (dict(n_inner=1000), "n_inner 1000 is not 4 · n_embd = 3072"),
    (dict(activation_function="relu"), 'activation_function = "relu" is not what memstudy\'s gpt computes'),
    (dict(attn_pdrop=0.0), "memstudy's gpt has one dropout probability for all three"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings = false is not what"),
    (dict(n_special=3), "unknown key 'n_special' for a gpt2"),
])
def test_what_the_gpt_cannot_honour_is_one_line_naming_it(change, message):
    gpt2 = json.loads((CONFIGS / "gpt2.json").read_text())
    with pytest.raises(ConfigError, match=message):
        hf_config_fields({**gpt2, **change})


def test_unreadable_configs(tmp_path):
    (tmp_path / "bad.json").write_text("{ not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "none.json").write_text(json.dumps({"hidden_size": 64}))
    for path, message in ((tmp_path / "missing.json", "no such file"), (tmp_path / "bad.json", "invalid JSON"),
                          (tmp_path, "not a file"), (tmp_path / "list.json", "holds a JSON object, got list"),
                          (tmp_path / "none.json", "no model_type; name the family with --model")):
        with pytest.raises(ConfigError, match=message):
            hf_config_fields(path)
    assert hf_config_fields(tmp_path / "none.json", "llama")[1]["width"] == 64  # --model names the family
    with pytest.raises(ConfigError, match="model 'gpt' reads gpt2"):
        hf_config_fields(CONFIGS / "llama-3-8b.json", "gpt")


def test_llama_from_hf_config_with_overrides():
    model = nn.Llama.from_hf_config(CONFIGS / "tinyllama-1.1b.json", depth=1, width=64, heads=4, kv_heads=2, ffn=32,
                                    vocab=50, dtype="float32")
    assert (model.depth, model.width, model.kv_heads, model.rope_theta, model.eps) == (1, 64, 2, 10000.0, 1e-5)
    with pytest.raises(ValueError, match="unknown key 'sliding_window'"):
        nn.Llama.from_hf_config({**LLAMA_3_8B, "sliding_window": 4096})


# --- the command line and specs -----------------------------------------------------------------------------------

def memstudy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_predict_from_a_config_with_flags_overriding_it():
    done = memstudy("predict", "--hf-config", "experiments/configs/llama-3-8b.json", "--seq-len", "256",
                    "--depth", "2", "--batch", "1", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert (row["model"], row["depth"], row["seq_len"], row["width"], row["kv_heads"]) == ("llama", 2, 256, 4096, 8)
    config = normalize({k: row[k] for k in ("model", "depth", "seq_len", "width", "heads", "kv_heads", "ffn", "vocab",
                                            "rope_theta", "eps", "tie", "batch_size")})
    assert row["parameter_bytes"] == 4 * parameter_count(config)


@pytest.mark.parametrize("args,message", [
    (["predict", "--hf-config", "experiments/configs/nope.json"], "error: hf config experiments/configs/nope.json: "
                                                                 "no such file"),
    (["predict", "--model", "llama", "--heads", "4", "--kv-heads", "3"], "error: kv_heads must divide heads"),
    (["run", "--model", "llama", "--width", "30"], "error: heads must divide width"),
    (["predict", "--model", "llama", "--lora-rank", "65"], "error: lora_rank 65 is above the dimensions of "
                                                          "model.layers.0.self_attn.q_proj (64 -> 64): at most 64"),
    (["predict", "--model", "llama", "--lora-rank", "2", "--lora-targets", "q_proj,w_proj"],
     "error: lora_targets: 'w_proj' matches no Linear of the model"),
    (["graph", "--model", "gpt", "--hf-config", "experiments/configs/llama-3-8b.json"],
     "error: hf config: model_type 'llama' is not a gpt config"),
    (["predict", "--model", "cnn", "--hf-config", "experiments/configs/gpt2.json"],
     "error: model 'cnn' reads no Hugging Face config"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = memstudy(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith(message), done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_architecture_key_on_the_command_line(tmp_path):
    path = tmp_path / "moe.json"
    path.write_text(json.dumps({**LLAMA_3_8B, "num_experts_per_tok": 2}))
    done = memstudy("predict", "--hf-config", str(path))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: hf config: unknown key 'num_experts_per_tok' for a llama: it may change " \
                                  "the architecture, and memstudy's llama does not implement it"


SPEC = """
[study]
name = "hfspec"
[grid]
hf_config = "{path}"
depth = 1
seq_len = [8, 16]
width = 32
heads = 8
ffn = 16
vocab = 50
batch_size = 1
"""


def test_a_specs_hf_config_is_relative_to_the_spec_and_the_grid_overrides_it(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.json").write_text((CONFIGS / "tinyllama-1.1b.json").read_text())
    (tmp_path / "s.toml").write_text(SPEC.format(path="configs/tiny.json"))
    spec = load_spec(tmp_path / "s.toml")
    cells = spec.cells()
    assert [c["seq_len"] for c in cells] == [8, 16]
    assert {(c["model"], c["width"], c["heads"], c["kv_heads"], c["eps"]) for c in cells} == {("llama", 32, 8, 4, 1e-5)}
    (tmp_path / "bad.toml").write_text(SPEC.format(path="configs/missing.json"))
    with pytest.raises(SpecError, match=r"grid.hf_config: hf config .*configs/missing.json: no such file"):
        load_spec(tmp_path / "bad.toml")
    (tmp_path / "two.toml").write_text(SPEC.format(path="configs/tiny.json") + 'model = ["llama", "gpt"]\n')
    with pytest.raises(SpecError, match="one config describes one model"):
        load_spec(tmp_path / "two.toml")
    cli = load_spec(tmp_path / "bad.toml", hf_config=str(CONFIGS / "llama-3-8b.json"))  # --hf-config replaces it
    assert {c["rope_theta"] for c in cli.cells()} == {500000.0}


def test_sweep_refuses_a_missing_hf_config_in_one_line(tmp_path):
    (tmp_path / "s.toml").write_text(SPEC.format(path="nowhere.json"))
    done = memstudy("sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: grid.hf_config: hf config ") and "nowhere.json: no such file" in done.stderr
    assert not (tmp_path / "out").exists()


def test_grid_values_meet_their_cross_field_rules_on_the_cells(tmp_path):
    """A grid value is checked against the other fields' grid values, not their defaults: the 8B config's
    kv_heads = 8 beside its 32 heads, a GPT's width 30 beside heads 5 (each refused alone against the defaults
    before); an impossible combination is still one line, naming the rule."""
    (tmp_path / "8b.toml").write_text(f'[grid]\nhf_config = "{CONFIGS / "llama-3-8b.json"}"\nseq_len = 16\n')
    assert {c["kv_heads"] for c in load_spec(tmp_path / "8b.toml").cells()} == {8}
    (tmp_path / "gpt.toml").write_text('[grid]\nmodel = "gpt"\nwidth = 30\nheads = 5\n')
    assert load_spec(tmp_path / "gpt.toml").cells()[0]["width"] == 30
    (tmp_path / "bad.toml").write_text('[grid]\nmodel = "llama"\nheads = 4\nkv_heads = [2, 3]\n')
    with pytest.raises(SpecError, match="^grid: kv_heads must divide heads: heads 4 is not a multiple of kv_heads 3$"):
        load_spec(tmp_path / "bad.toml")

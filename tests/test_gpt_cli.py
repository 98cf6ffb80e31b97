"""`memstudy ... --model gpt` from the command line: bad input is one line and exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from memstudy.findings import megatron

GPT = ["--model", "gpt", "--depth", "1", "--width", "32", "--heads", "4", "--seq-len", "16", "--vocab", "50",
       "--batch", "2"]


def memstudy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["run", "predict"])
@pytest.mark.parametrize("change,message", [
    (["--width", "30"], "error: heads must divide width: width 30 is not a multiple of heads 4"),
    (["--dropout", "1.0"], "error: argument --dropout: must be below 1, got 1.0"),
    (["--dropout", "-0.1"], "error: argument --dropout: must be at least 0, got -0.1"),
    (["--seq-len", "0"], "error: argument --seq-len: must be at least 1, got 0"),
    (["--heads", "0"], "error: argument --heads: must be at least 1, got 0"),
    (["--checkpoint", "selectiv"], "error: checkpoint must be none, sqrt, selective or every:K"),
])
def test_bad_gpt_input_is_one_line_and_exit_2(command, change, message):
    done = memstudy(command, *GPT, *change)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(message) and "Traceback" not in done.stderr
    assert len([line for line in lines if line.startswith("error:")]) == 1


def test_selective_is_a_gpt_strategy_only():
    done = memstudy("run", "--model", "mlp", "--checkpoint", "selective")
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr


GPT2_SMALL = ["--model", "gpt", "--depth", "12", "--width", "768", "--heads", "12", "--seq-len", "1024", "--vocab",
              "50257", "--batch", "8", "--dtype", "float32", "--optimizer", "adam", "--dropout", "0.1"]


@pytest.mark.parametrize("extra", [[], ["--checkpoint", "selective"], ["--checkpoint", "sqrt"],
                                   ["--mode", "inference"]])
def test_gpt2_small_is_predicted_in_under_2_seconds(extra):
    start = time.perf_counter()
    done = memstudy("predict", *GPT2_SMALL, *extra, "--json")
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert seconds < 2.0, f"predict took {seconds:.2f} s"
    row = json.loads(done.stdout.splitlines()[-1])
    assert row["parameter_bytes"] == 4 * 124_439_808  # GPT-2 small: 124M parameters, the head tied
    if extra == ["--mode", "inference"]:
        assert row["predicted_activation_bytes"] == 0
    else:
        assert row["optimizer_state_bytes"] == 2 * row["parameter_bytes"]
        per_layer = megatron.layer_bytes(1024, 8, 768, 12, 4, 0.1)
        blocks = 12 * (per_layer + megatron.statistics_bytes(1024, 8, 4))
        if not extra:  # every block's terms, plus what the embeddings, the head and the loss hold
            assert blocks < row["predicted_activation_bytes"] < blocks + 8 * 1024 * 50257 * 4 + 4 * 8 * 1024 * 768 * 4

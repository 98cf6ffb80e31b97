"""`memstudy ... --model gpt` from the command line: bad input is one line and exit status 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

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

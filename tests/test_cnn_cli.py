"""`memstudy --model cnn` from the command line: bad input is one `error:` line and exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def memstudy(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True, timeout=timeout)


BAD = {
    "image too small for the blocks": (["run", "--model", "cnn", "--depth", "4", "--image-size", "8"],
                                       "image_size 8 is too small for 4 pooling blocks"),
    "image size 0": (["run", "--model", "cnn", "--image-size", "0"], "--image-size: must be at least 1"),
    "image size -32": (["predict", "--model", "cnn", "--image-size", "-32"], "--image-size: must be at least 1"),
    "in channels 0": (["run", "--model", "cnn", "--in-channels", "0"], "--in-channels: must be at least 1"),
    "width 0": (["run", "--model", "cnn", "--width", "0"], "--width: must be at least 1"),
    "batch 0": (["run", "--model", "cnn", "--batch", "0"], "--batch: must be at least 1"),
    "classes 0": (["run", "--model", "cnn", "--classes", "0"], "--classes: must be at least 1"),
    "conv_save unknown": (["run", "--model", "cnn", "--conv-save", "outputs"], "--conv-save: invalid choice"),
    "image size on the MLP": (["run", "--image-size", "32"], "--image-size is a flag of --model cnn"),
    "channels over the budget": (["run", "--model", "cnn", "--width", "4096", "--depth", "4", "--image-size", "256"],
                                 "the budget"),
}


@pytest.mark.parametrize("args,message", list(BAD.values()), ids=list(BAD))
def test_bad_cnn_input_is_one_error_line_exit_2(args, message):
    done = memstudy(*args, timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in lines[0]


def test_run_and_predict_a_cnn_from_the_command_line():
    args = ["--model", "cnn", "--depth", "2", "--width", "4", "--image-size", "16", "--batch", "3",
            "--conv-save", "columns", "--no-batch-norm"]
    done = memstudy("run", *args, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["model"], row["image_size"], row["conv_save"], row["batch_norm"]) == ("cnn", 16, "columns", False)
    assert row["activation_bytes"] == row["predicted_activation_bytes"] > 0
    assert row["peak_bytes"] == row["predicted_peak_bytes"]
    done = memstudy("predict", *args, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predicted_activation_bytes"] == row["activation_bytes"]

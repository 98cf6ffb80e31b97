"""The fork server (memstudy/run/forkserver.py): a forked cell is a fresh process that measures what an exec'd cell
measures, and fails, times out and takes its limits as an exec'd cell does."""
from __future__ import annotations

import os

import pytest

from memstudy.nn.models.registry import normalize
from memstudy.run import forkserver
from memstudy.run.launcher import CellRequest, cell_environment, launch

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="the fork server needs Linux (fork, pidfd_open)")

SMALL = dict(depth=2, width=64, batch_size=16)
LEDGER_AND_PREDICTED = ("peak_bytes", "step_peak_bytes", "activation_bytes", "saved_tensors", "parameter_bytes",
                        "optimizer_state_bytes", "input_bytes", "predicted_peak_bytes", "predicted_step_peak_bytes",
                        "predicted_activation_bytes", "prediction_matches")


def _env(way: str) -> dict[str, str]:
    env = cell_environment()
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"  # one server for the file
    if way == "exec":
        env[forkserver.LAUNCHER_ENV] = "exec"
    else:
        env.pop(forkserver.LAUNCHER_ENV, None)
    return env


def _launch(config: dict, way: str, raw: dict | None = None, **request) -> object:
    """One repeat of `config`; `raw`: fields set after normalizing, so that the cell itself refuses them."""
    return launch(CellRequest({**normalize(dict(config)), **(raw or {})}, 1, **request), env=_env(way), blas_cap=False)


def test_exec_is_chosen_by_the_environment():
    assert forkserver.wanted({forkserver.LAUNCHER_ENV: "exec"}) is False
    assert forkserver.wanted({}) is True


def test_a_forked_cell_measures_what_an_exec_cell_measures():
    forked, execd = _launch(SMALL, "fork"), _launch(SMALL, "exec")
    assert not forked.error and not execd.error
    for name in LEDGER_AND_PREDICTED:
        assert forked.rows[0][name] == execd.rows[0][name], name
    # tracemalloc sees the step's buffers, not the process: the same within a few hundred bytes of Python objects
    assert abs(forked.rows[0]["tracemalloc_step_peak_bytes"] - execd.rows[0]["tracemalloc_step_peak_bytes"]) < 4096


def test_each_forked_cell_has_its_own_high_water_mark():
    """A large cell before a small one leaves the small one's VmHWM as it was: a fresh process, not a reused one."""
    before = _launch(SMALL, "fork").rows[0]["hwm_bytes"]
    big = _launch(dict(depth=2, width=1024, batch_size=2048), "fork").rows[0]
    after = _launch(SMALL, "fork").rows[0]["hwm_bytes"]
    assert big["hwm_bytes"] > before + 16 * 2 ** 20  # the large cell's own peak is far above
    assert abs(after - before) < 4 * 2 ** 20  # the next small cell starts from the server's pages, not the big one's


def test_a_forked_cell_fails_times_out_and_takes_its_limit_as_an_exec_cell_does():
    forked, execd = _launch(SMALL, "fork", {"activation": "nope"}), _launch(SMALL, "exec", {"activation": "nope"})
    assert forked.error.startswith("cell exited with status 1: ConfigError: activation") and forked.error == execd.error
    slow = _launch(dict(depth=32, width=1024, batch_size=1024), "fork", timeout_seconds=0.5)
    assert slow.error == "timed out after 0.5 s"
    limited = _launch(SMALL, "fork", memory_limit_bytes=8 * 2 ** 30)
    assert not limited.error and limited.rows[0]["mem_limit_bytes"] == 8 * 2 ** 30
    assert os.environ.get(forkserver.LAUNCHER_ENV) != "exec"  # nothing leaked into our own environment

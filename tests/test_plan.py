"""`memstudy plan` (issue 27): the search space from the registry, FLOPs from the graph, the chosen configuration's
peak equal to `memstudy predict`'s, one-line errors."""
from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from memstudy import Tensor, cli
from memstudy.autograd import ops
from memstudy.autograd.tensor import apply
from memstudy.config import normalize
from memstudy.measure.ledger import Ledger
from memstudy.measure.predict import memoised_account, predicted_account
from memstudy.measure.workload import Workload
from memstudy.nn.models.registry import get_family
from memstudy.plan.cost import bubble_fraction
from memstudy.plan.space import Choices, Machines, enumerate_space, rank_key

TINY = {"depth": 10, "width": 32, "heads": 4, "kv_heads": 2, "ffn": 48, "vocab": 64}
TINY_SETS = [arg for k, v in TINY.items() for arg in ("--set", f"{k}={v}")]
FEW = ["--precision", "32-true,bf16-true", "--checkpoint", "none,every:1"]  # 4 of the default 16 (x attention)


def test_matmul_flops_are_2mnk_and_elementwise_one_per_element():
    a, b = Tensor(np.ones((3, 4)), requires_grad=True), Tensor(np.ones((4, 5)))
    ledger = Ledger().start()
    try:
        out = apply(ops.MatMul, a, b)
        apply(ops.ReLU, out)
    finally:
        ledger.stop()
    assert ledger.forward_flops == 2 * 3 * 5 * 4 + 3 * 5


@pytest.mark.parametrize("checkpoint", ["selective", "every:1", "sqrt"])
def test_recomputed_flops_memoised_equal_every_block_and_measured(checkpoint):
    config = normalize({"model": "llama", **TINY, "seq_len": 8, "batch_size": 2, "checkpoint": checkpoint,
                        "optimizer": "adam"})
    memoised, full = memoised_account(config), predicted_account(config)
    assert memoised.repeated and not full.repeated
    assert (memoised.forward_flops, memoised.recomputed_flops) == (full.forward_flops, full.recomputed_flops)
    assert full.recomputed_flops > 0
    work = Workload(config)  # real arrays: the measured ledger counts the same FLOPs
    work.warm_up()
    work.optimizer.zero_grad()
    measured = work.ledger_step()
    assert (measured.forward_flops, measured.recomputed_flops) == (full.forward_flops, full.recomputed_flops)


def test_a_layer_recomputed_costs_its_forward_flops():
    base = {"model": "llama", **TINY, "seq_len": 8, "batch_size": 2}
    none = memoised_account(normalize({**base, "checkpoint": "none"}))
    every = memoised_account(normalize({**base, "checkpoint": "every:1"}))
    # every decoder layer's forward runs again; the embedding, head and loss do not
    assert 0 < every.recomputed_flops < none.forward_flops
    assert every.forward_flops == none.forward_flops


def test_bubble_is_1f1b():
    assert bubble_fraction(1, 8) == 0.0
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)


def test_axes_come_from_the_registry_and_an_absent_field_is_refused():
    family = get_family("llama")
    names = {f.name for f in family.all_fields()}
    space = enumerate_space(family, {**TINY, "seq_len": 8}, Machines(1, 10**9, 0), 4, Choices())
    assert ("attention" in space.axes) == ("attention" in names)
    assert ("tensor_parallel" in space.axes) == ("tensor_parallel" in names)
    # the rank's batch (microbatches × micro-batch) over the data-parallel ranks is the global batch
    assert all(c["batch_size"] * (c.get("data_parallel") or 1) == 4 for c in space.configs)
    assert len({rank_key(c) for c in space.configs}) == len(space.configs)
    if "tensor_parallel" not in names:
        with pytest.raises(ValueError, match="no tensor_parallel field"):
            enumerate_space(family, TINY, Machines(1, 10**9, 0), 4, Choices(tensor_parallel=(2,)))


def _plan_lines(capsys, *extra: str) -> list[dict]:
    status = cli.main(["plan", "--model", "llama", *TINY_SETS, "--seq-len", "8", "--global-batch", "4",
                       "--devices", "1", "--device-memory", "1MiB", "--reserve", "0", "--json", "--no-progress",
                       *FEW, *extra])
    assert status == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_plan_ranks_what_fits_and_predict_gives_the_same_peak(capsys):
    rows = _plan_lines(capsys)
    fitting = [r for r in rows if r["fits"]]
    assert fitting and any(not r["fits"] for r in rows)  # the memory splits the configurations
    assert [r["rank"] for r in fitting] == list(range(1, len(fitting) + 1))
    assert [r["step_seconds"] for r in fitting] == sorted(r["step_seconds"] for r in fitting)
    assert all(r["predicted_peak_bytes"] <= r["usable_bytes"] for r in fitting)
    # the chosen configuration, through `memstudy predict` with the same fields: the same peak
    status = cli.main(["plan", "--model", "llama", *TINY_SETS, "--seq-len", "8", "--global-batch", "4",
                       "--devices", "1", "--device-memory", "1MiB", "--reserve", "0", "--no-progress", *FEW])
    assert status == 0
    text = capsys.readouterr().out
    command = next(line for line in text.splitlines() if "memstudy predict" in line)
    argv = shlex.split(command.split("`")[1])[1:]
    assert cli.main([*argv, "--json", "--no-progress"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["predicted_peak_bytes"] == fitting[0]["predicted_peak_bytes"]
    assert "not modelled" in text.lower() and "CUDA context" in text


def test_plan_predicts_each_rank_graph_once(monkeypatch):
    from memstudy.plan import evaluate, search as search_module

    calls = []
    real = evaluate.predict_rank
    monkeypatch.setattr(evaluate, "predict_rank", lambda config: calls.append(rank_key(config)) or real(config))
    result = search_module.search(get_family("llama"), {**TINY, "seq_len": 8}, Machines(1, 10**9, 0), 4,
                                  Choices(precision=("32-true", "bf16-true"), checkpoint=("none", "every:1")), jobs=1)
    assert len(calls) == len(set(calls)) == result.predictions
    assert len(result.ranked) == len(result.space.configs)  # a GB holds the tiny model in every way


def test_the_plan_is_the_same_walked_by_several_processes():
    """The groups walked by 2 forked processes give the same candidates, in the same order, with the same figures
    and the same skipped count, as one process (the memory cuts some groups short, so the early stop is exercised)."""
    from memstudy.plan import search as search_module

    def outcome(jobs: int) -> tuple:
        result = search_module.search(get_family("llama"), {**TINY, "seq_len": 8}, Machines(2, 2**19, 0), 8,
                                      Choices(precision=("32-true", "bf16-true"), checkpoint=("none", "every:1")),
                                      jobs=jobs)
        rows = [(c.config, c.result, c.cost, c.fits) for c in result.ranked + result.over]
        return rows, result.skipped_larger, result.failed

    one, two = outcome(1), outcome(2)
    assert one[0] and one[1] > 0  # some fit, some groups stopped early
    assert two == one


@pytest.mark.parametrize("args,expected", [
    (["--device-memory", "eighty"], "--device-memory must be a size"),
    (["--device-memory", "50%"], "--device-memory must be a size like 80GB"),
    (["--device-memory", "1KiB"], "no configuration fits in 1.00 KiB per device"),
])
def test_plan_bad_input_is_one_line(capsys, args, expected):
    from tests.test_messages import one_error_line

    line = one_error_line(capsys, ["plan", "--model", "llama", *TINY_SETS, "--seq-len", "8", "--global-batch", "4",
                                   "--reserve", "0", "--no-progress", *FEW, *args])
    assert expected in line
    if "fits" in expected:
        assert "smallest predicted peak is" in line and "dominated by" in line


@pytest.mark.parametrize("extra", [{"microbatches": 13, "batch_size": 13},
                                   {"pipeline_parallel": 2, "microbatches": 16, "batch_size": 16},
                                   {"data_parallel": 2, "zero": 2, "microbatches": 13, "batch_size": 26}])
def test_many_microbatches_predicted_from_few_equal_the_full_prediction(extra):
    """The evaluator predicts k and k + 1 microbatches and extrapolates; the full prediction says the same."""
    from memstudy.plan.evaluate import Evaluator, predict_rank, steady_microbatches

    fields = {f.name for f in get_family("llama").all_fields()}
    if not set(extra) <= fields:
        pytest.skip("this memstudy has no such parallel fields")
    config = normalize({"model": "llama", **TINY, "seq_len": 8, "optimizer": "adam", "precision": "bf16-master",
                        **extra})
    assert steady_microbatches(config) is not None
    evaluator = Evaluator()
    assert evaluator(config) == predict_rank(config)
    assert evaluator.predictions == 3


@pytest.mark.slow
def test_llama_8b_on_8_devices_chosen_configuration_equals_predict(capsys):
    """The issue's must-show: the plan prints a ranked table, and `memstudy predict` with the chosen configuration's
    fields gives the same per-rank peak (about a minute here)."""
    args = ["plan", "--hf-config", "experiments/configs/llama-3-8b.json", "--seq-len", "4096", "--global-batch", "64",
            "--devices", "8", "--device-memory", "80GB", "--no-progress"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    command = next(line for line in text.splitlines() if "memstudy predict" in line)
    peak_line = next(line for line in text.splitlines() if line.startswith("1 "))
    argv = shlex.split(command.split("`")[1])[1:]
    assert cli.main([*argv, "--json", "--no-progress"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert cli.main([*args, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["rank"] == 1 and predicted["predicted_peak_bytes"] == first["predicted_peak_bytes"]
    assert peak_line

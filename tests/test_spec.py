"""Experiment specs: the shipped studies load, and every kind of bad spec is refused naming its key."""
from __future__ import annotations

from pathlib import Path

import pytest

from memstudy.study.spec import SpecError, cell_id, load_spec, parse_budget, spec_hash

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[study]
name = "tiny"
description = "a test"

[grid]
depth = [1, 2]
batch_size = [4, 8]
mode = ["train", "inference"]
width = 16

[run]
repeats = 2
budget = "1GiB"
timeout_seconds = 30
jobs = 2
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_spec_expands_to_the_cartesian_product(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert (spec.name, spec.description, spec.repeats) == ("tiny", "a test", 2)
    assert (spec.jobs, spec.timeout_seconds) == (2, 30.0)
    cells = spec.cells()
    assert len(cells) == 2 * 2 * 2
    assert {c["width"] for c in cells} == {16}
    assert all(c["in_features"] == 16 for c in cells)  # left out: same as width
    ids = [cell_id(c) for c in cells]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "d1-w16-i16-o10-b4-relu-bias-float32-train-sgd-none-minimal-s0"
    assert spec.budget_bytes() == 1 << 30
    assert spec.varying() == ["depth", "batch_size", "mode"]


def test_default_study_is_the_main_grid():
    spec = load_spec(ROOT / "experiments" / "default.toml")
    cells = spec.cells()
    assert len(cells) == 6 * 4 * 2
    assert sorted({c["depth"] for c in cells}) == [1, 2, 4, 8, 16, 32]
    assert sorted({c["batch_size"] for c in cells}) == [16, 64, 256, 1024]
    assert {c["mode"] for c in cells} == {"train", "inference"}
    assert {(c["width"], c["dtype"], c["optimizer"]) for c in cells} == {(256, "float32", "sgd")}
    assert spec.repeats == 3 and spec.budget == "75%"


def test_width_study_varies_width_and_inputs():
    spec = load_spec(ROOT / "experiments" / "width.toml")
    assert {"width", "in_features"} <= set(spec.varying())
    assert len({cell_id(c) for c in spec.cells()}) == len(spec.cells())


def test_hash_ignores_jobs_and_description_but_not_the_grid(tmp_path):
    base = load_spec(write(tmp_path, GOOD, "a.toml"))
    cosmetic = load_spec(write(tmp_path, GOOD.replace("jobs = 2", "jobs = 1").replace("a test", "other"), "b.toml"))
    changed = load_spec(write(tmp_path, GOOD.replace("depth = [1, 2]", "depth = [1, 2, 3]"), "c.toml"))
    assert spec_hash(base) == base.hash == cosmetic.hash
    assert changed.hash != base.hash


@pytest.mark.parametrize("table, line, key", [
    ("study", 'colour = "red"', "study.colour"),
    ("grid", "layers = [1, 2]", "grid.layers"),
    ("grid", "repeat = [0, 1]", "grid.repeat"),
    ("run", "retries = 3", "run.retries"),
])
def test_unknown_key_in_each_table(tmp_path, table, line, key):
    text = GOOD.replace(f"[{table}]\n", f"[{table}]\n{line}\n")
    assert key in refused(tmp_path, text)


def test_unknown_table(tmp_path):
    assert "plot" in refused(tmp_path, GOOD + "\n[plot]\nx = 1\n")


@pytest.mark.parametrize("old, new, key", [
    ("depth = [1, 2]", 'depth = [1, "two"]', "grid.depth"),
    ("depth = [1, 2]", "depth = [1.5]", "grid.depth"),
    ("depth = [1, 2]", "depth = [0, 1]", "grid.depth"),
    ("width = 16", "width = true", "grid.width"),
    ("width = 16", 'bias = "yes"', "grid.bias"),
    ("repeats = 2", 'repeats = "3"', "run.repeats"),
    ("repeats = 2", "repeats = 0", "run.repeats"),
    ("jobs = 2", "jobs = 1.5", "run.jobs"),
    ("timeout_seconds = 30", "timeout_seconds = -1", "run.timeout_seconds"),
    ("budget = \"1GiB\"", "budget = \"lots\"", "run.budget"),
    ("budget = \"1GiB\"", "budget = \"150%\"", "run.budget"),
    ("budget = \"1GiB\"", "budget = \"4 parsecs\"", "run.budget"),
    ('name = "tiny"', "name = 3", "study.name"),
    ('description = "a test"', "description = [1]", "study.description"),
])
def test_wrong_type_names_the_key(tmp_path, old, new, key):
    assert old in GOOD
    assert key in refused(tmp_path, GOOD.replace(old, new))


@pytest.mark.parametrize("old, new, key", [
    ('mode = ["train", "inference"]', 'mode = ["train", "predict"]', "grid.mode"),
    ("width = 16", 'activation = "gelu"', "grid.activation"),
    ("width = 16", 'dtype = ["int8"]', "grid.dtype"),
    ("width = 16", 'optimizer = "lbfgs"', "grid.optimizer"),
])
def test_unknown_choice_value(tmp_path, old, new, key):
    message = refused(tmp_path, GOOD.replace(old, new))
    assert key in message


def test_empty_list_in_grid(tmp_path):
    assert "grid.depth" in refused(tmp_path, GOOD.replace("depth = [1, 2]", "depth = []"))


def test_empty_or_missing_grid(tmp_path):
    grid = GOOD[GOOD.index("[grid]"):GOOD.index("[run]")]
    assert "grid" in refused(tmp_path, GOOD.replace(grid, "[grid]\n\n"))
    assert "grid" in refused(tmp_path, GOOD.replace(grid, ""))


def test_duplicate_value(tmp_path):
    assert "grid.depth" in refused(tmp_path, GOOD.replace("depth = [1, 2]", "depth = [2, 2]"))


def test_invalid_toml_and_missing_file(tmp_path):
    assert "invalid TOML" in refused(tmp_path, "[grid\n")
    with pytest.raises(SpecError):
        load_spec(tmp_path / "nope.toml")


def test_budget_forms():
    assert parse_budget(1000) == 1000
    assert parse_budget("4GiB") == 4 << 30
    assert parse_budget("500MB") == 500_000_000
    assert parse_budget("75%", available_bytes=1000) == 750
    assert parse_budget("50 %", available_bytes=1000) == 500
    for bad in ("0", -1, True, "x%", "0%", "12 furlongs"):
        with pytest.raises(SpecError):
            parse_budget(bad, available_bytes=1000)

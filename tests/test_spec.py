"""Experiment specs: the shipped studies load, and every kind of bad spec is refused naming its key."""
from __future__ import annotations

from pathlib import Path

import pytest

from memstudy.run.spec import SpecError, cell_id, load_spec, parse_budget, spec_hash

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


# --- issue 21: typos, one name for the number of classes, model files beside the spec ------------------

@pytest.mark.parametrize("old, new, expected", [
    ("depth = [1, 2]", "deph = [1, 2]", "grid.deph: unknown key; did you mean depth?"),
    ("width = 16", "widht = 16", "grid.widht: unknown key; did you mean width?"),
    ("repeats = 2", "repeat = 2", "run.repeat: unknown key; did you mean repeats?"),
    ('name = "tiny"', 'nmae = "tiny"', "study.nmae: unknown key; did you mean name?"),
    ("[run]", "[rnu]", "rnu: unknown table; did you mean [run]?"),
    ("width = 16", 'activation = "rellu"', "did you mean relu?"),
    ("width = 16", 'optimizer = "adamw"', "did you mean adam?"),
    ("width = 16", 'width = 16\nmodel = "gtp"', "grid.model: model must be one of"),
    ("width = 16", 'width = 16\nmodel = "gtp"', "did you mean gpt?"),
])
def test_a_typo_gets_did_you_mean(tmp_path, old, new, expected):
    assert old in GOOD
    message = refused(tmp_path, GOOD.replace(old, new))
    assert expected in message, message


def test_a_key_far_from_every_field_gets_no_guess(tmp_path):
    message = refused(tmp_path, GOOD.replace("width = 16", "colour = 16"))
    assert "grid.colour: unknown key" in message and "did you mean" not in message


@pytest.mark.parametrize("model", ["mlp", "seed"])
def test_classes_is_the_grid_key_and_out_features_its_old_alias(tmp_path, model):
    """`classes` in every family (the flag is --classes); the MLP's first key, out_features, still loads and names
    the same cells (its runs.csv column keeps that name, so old folders resume)."""
    base = GOOD.replace("width = 16", f'width = 16\nmodel = "{model}"')
    if model == "seed":  # one hidden layer
        base = base.replace("depth = [1, 2]", "depth = 1")
    new = load_spec(write(tmp_path, base.replace("width = 16", "width = 16\nclasses = [3, 5]"), "new.toml"))
    old = load_spec(write(tmp_path, base.replace("width = 16", "width = 16\nout_features = [3, 5]"), "old.toml"))
    assert [cell_id(c) for c in new.cells()] == [cell_id(c) for c in old.cells()]
    assert {c["out_features"] for c in new.cells()} == {3, 5}
    assert new.hash == old.hash  # one field, however the spec spells it
    both = base.replace("width = 16", "width = 16\nclasses = 3\nout_features = 3")
    assert "grid.out_features" in refused(tmp_path, both) and "classes" in refused(tmp_path, both)


def test_classes_is_the_cnn_field_itself(tmp_path):
    spec = load_spec(write(tmp_path, GOOD.replace("width = 16", 'width = 16\nmodel = "cnn"\nclasses = 7\n'
                                                                 "image_size = 8\ndepth = 1")
                           .replace("depth = [1, 2]\n", "")))
    assert {c["classes"] for c in spec.cells()} == {7}


def test_a_relative_model_path_is_the_spec_files_not_the_working_directorys(tmp_path, monkeypatch):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "models").mkdir()
    (studies / "models" / "residual.py").write_text((ROOT / "examples" / "residual.py").read_text())
    text = GOOD.replace("width = 16", 'width = 16\nmodel = "models/residual.py:ResidualFamily"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no models/ here: the spec's folder decides
    spec = load_spec(write(studies, text))
    models = {c["model"] for c in spec.cells()}
    assert len(models) == 1
    path, _, name = models.pop().rpartition(":")
    assert name == "ResidualFamily" and Path(path).resolve() == (studies / "models" / "residual.py").resolve()
    assert spec.grid["model"] == ("models/residual.py:ResidualFamily",)  # the spec as written: its hash moves not
    assert cell_id(spec.cells()[0]).startswith("residual:ResidualFamily-")
    monkeypatch.chdir(studies)  # from the spec's own folder: the same cells
    assert [cell_id(c) for c in load_spec(studies / "spec.toml").cells()] == [cell_id(c) for c in spec.cells()]


def test_a_missing_model_file_names_the_spec_folders_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    message = refused(tmp_path / "sub", GOOD.replace("width = 16", 'width = 16\nmodel = "nope.py:Family"'))
    assert "grid.model" in message and str(tmp_path / "sub" / "nope.py") in message, message

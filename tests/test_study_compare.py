"""benchmarks/study_compare.py: both ways run the baseline's own study specs, and the timed sums cover only the
studies that ran both ways (a study the old code refused once made new ÷ old compare five sweeps with four)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package

from benchmarks import study_compare  # noqa: E402


def _fake_baseline(tmp_path, monkeypatch, studies):
    tree = tmp_path / "baseline"
    (tree / "experiments").mkdir(parents=True)
    for study in studies:
        (tree / "experiments" / f"{study}.toml").write_text("# the baseline's grid\n")
    monkeypatch.setattr(study_compare, "_baseline_tree", lambda ref, into: tree)
    return tree


def test_both_ways_run_the_baselines_spec(tmp_path, monkeypatch):
    tree = _fake_baseline(tmp_path, monkeypatch, ["a", "b"])
    calls = []

    def sweep(where, spec, out, env):
        calls.append((where, spec))
        return 1.0, ""

    monkeypatch.setattr(study_compare, "_sweep", sweep)
    result = study_compare.compare(("a", "b"), baseline="0" * 40)
    assert len(calls) == 4
    assert {where for where, _ in calls} == {tree, study_compare.ROOT}
    assert all(spec.parent == tree / "experiments" for _, spec in calls)  # never this checkout's newer grid
    assert result["timed"] == ("a", "b") and result["ratio"] == 1.0


def test_a_study_that_failed_one_way_is_left_out_of_both_sums(tmp_path, monkeypatch):
    tree = _fake_baseline(tmp_path, monkeypatch, ["a", "b"])
    wall = {("a", "old"): 2.0, ("a", "new"): 1.0, ("b", "old"): 0.5, ("b", "new"): 30.0}

    def sweep(where, spec, out, env):
        way = "old" if where == tree else "new"
        error = "exited 2: error: grid.x: unknown key" if (spec.stem, way) == ("b", "old") else ""
        return wall[spec.stem, way], error

    monkeypatch.setattr(study_compare, "_sweep", sweep)
    result = study_compare.compare(("a", "b"), baseline="0" * 40)
    assert result["timed"] == ("a",)
    assert (result["old_seconds"], result["new_seconds"], result["ratio"]) == (2.0, 1.0, 0.5)
    assert any(e.startswith("b (old)") for e in result["errors"])
    assert "1 studies timed both ways (a;" in study_compare.summary(result)


def test_a_study_the_baseline_lacks_is_an_error_not_a_run(tmp_path, monkeypatch):
    _fake_baseline(tmp_path, monkeypatch, ["a"])
    monkeypatch.setattr(study_compare, "_sweep", lambda where, spec, out, env: (1.0, ""))
    result = study_compare.compare(("a", "new_study"), baseline="0" * 40)
    assert result["timed"] == ("a",)
    assert "new_study: the baseline has no experiments/new_study.toml" in result["errors"]


def test_the_sweeps_cache_their_bytecode_under_pythondontwritebytecode(tmp_path, monkeypatch):
    _fake_baseline(tmp_path, monkeypatch, ["a"])
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    envs = []
    monkeypatch.setattr(study_compare, "_sweep", lambda where, spec, out, env: (envs.append(env), (1.0, ""))[1])
    study_compare.compare(("a",), baseline="0" * 40)
    assert len(envs) == 2 and not any("PYTHONDONTWRITEBYTECODE" in env for env in envs)

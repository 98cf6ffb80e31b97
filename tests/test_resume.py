"""Resume means resume: retry failed cells, extend a grid or the repeats, rerun skipped cells a larger budget
admits, refuse (naming the field) only what would reinterpret the rows; exit status 1 when a cell failed; the
committed studies resume with nothing to run; a torn runs.csv is repaired and said so."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memstudy.run.spec import cell_id, load_spec
from memstudy.run.sweep import SweepError, run_sweep
from sweep_helpers import (SPEC, assert_one_row_per_cell_and_repeat, clean_env, fake_cell, make_spec,  # noqa: F401
                           no_predictor, read_rows)

ROOT = Path(__file__).resolve().parents[1]


def sweep(spec, out, fake_cell, **kwargs):
    return run_sweep(spec, out, progress=False, cell_command=fake_cell, predictor=kwargs.pop("predictor", no_predictor),
                     **kwargs)


def logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# --- retry -------------------------------------------------------------------------------------------------

def test_failed_cells_are_kept_until_retry_failed_reruns_them(tmp_path, fake_cell, monkeypatch):
    spec = make_spec(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_CELL_RAISE", "depth=2")
    first = sweep(spec, out, fake_cell)
    assert (first.ok, first.failed, first.exit_status) == (8, 4, 1)
    monkeypatch.delenv("FAKE_CELL_RAISE")
    log = tmp_path / "cells.log"
    monkeypatch.setenv("FAKE_CELL_LOG", str(log))
    again = sweep(spec, out, fake_cell)  # a plain resume does not rerun them, and still says they failed
    assert (again.resumed, again.failed_before, again.exit_status) == (12, 4, 1)
    assert logged(log) == []
    retried = sweep(spec, out, fake_cell, retry_failed=True)
    assert (retried.retried, retried.ok, retried.failed, retried.failed_before, retried.exit_status) == (4, 4, 0, 0, 0)
    assert sorted(c["config"]["depth"] for c in logged(log)) == [2, 2, 2, 2]
    rows = assert_one_row_per_cell_and_repeat(spec, out)
    assert {r["status"] for r in rows} == {"ok"}


def test_a_timed_out_cell_is_retried_under_a_longer_timeout(tmp_path, fake_cell, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_CELL_SLEEP", "1")
    monkeypatch.setenv("FAKE_CELL_HANG", "depth=3")  # only depth 3 would pass a short timeout otherwise
    short = make_spec(tmp_path, SPEC.replace("depth = [1, 2, 3]", "depth = [3]").replace("timeout_seconds = 20",
                                                                                           "timeout_seconds = 0.3"))
    first = sweep(short, out, fake_cell, jobs=4)
    assert first.failed == 4
    assert all("timed out after 0.3 s" in r["error"] for r in read_rows(out))
    monkeypatch.delenv("FAKE_CELL_HANG")
    longer = make_spec(tmp_path, SPEC.replace("depth = [1, 2, 3]", "depth = [3]"), "longer.toml")
    outcome = sweep(longer, out, fake_cell, jobs=4, retry_failed=True)
    assert (outcome.ok, outcome.failed, outcome.exit_status) == (4, 0, 0)
    assert "run.timeout_seconds 0.3 -> 20.0" in outcome.changes
    assert {r["status"] for r in assert_one_row_per_cell_and_repeat(longer, out)} == {"ok"}


# --- extend ------------------------------------------------------------------------------------------------

def test_a_grid_that_gained_values_runs_only_the_new_cells(tmp_path, fake_cell, monkeypatch):
    out = tmp_path / "out"
    sweep(make_spec(tmp_path), out, fake_cell)
    before = read_rows(out)
    log = tmp_path / "cells.log"
    monkeypatch.setenv("FAKE_CELL_LOG", str(log))
    wider = make_spec(tmp_path, SPEC.replace("depth = [1, 2, 3]", "depth = [1, 2, 3, 5]").replace(
        "width = 8", "width = 8\nactivation = [\"relu\", \"tanh\"]"), "wider.toml")
    outcome = sweep(wider, out, fake_cell)
    assert (outcome.cells, outcome.resumed, outcome.ok) == (32, 12, 20)
    assert "grid.depth gained 5" in outcome.changes and any(c.startswith("grid.activation") for c in outcome.changes)
    ran = {cell_id(c["config"]) for c in logged(log)}
    assert len(ran) == 20 and not ran & {r["cell"] for r in before}
    rows = assert_one_row_per_cell_and_repeat(wider, out)
    assert rows[: len(before)] == before  # the old rows stay as they were, first
    env = json.loads((out / "env.json").read_text())
    assert env["spec"]["hash"] == wider.hash and env["spec"]["cells"] == 32
    assert env["sessions"][-1]["changes"] == outcome.changes


def test_more_repeats_run_only_the_missing_repeats(tmp_path, fake_cell, monkeypatch):
    out = tmp_path / "out"
    sweep(make_spec(tmp_path), out, fake_cell)
    log = tmp_path / "cells.log"
    monkeypatch.setenv("FAKE_CELL_LOG", str(log))
    more = make_spec(tmp_path, SPEC.replace("repeats = 2", "repeats = 4"), "more.toml")
    outcome = sweep(more, out, fake_cell)
    assert (outcome.resumed, outcome.ok) == (0, 12)
    assert "run.repeats 2 -> 4" in outcome.changes
    assert [c["repeats"] for c in logged(log)] == [2] * 12  # each cell ran its two missing repeats once
    rows = assert_one_row_per_cell_and_repeat(more, out)
    assert {r["repeat"] for r in rows} == {"0", "1", "2", "3"}
    fewer = make_spec(tmp_path, SPEC.replace("repeats = 2", "repeats = 1"), "fewer.toml")
    assert sweep(fewer, out, fake_cell).resumed == 12  # fewer repeats: done, the extra rows stay
    assert len(read_rows(out)) == 12 * 4


def test_a_larger_budget_runs_the_cells_a_smaller_one_skipped(tmp_path, fake_cell):
    out = tmp_path / "out"

    def predictor(config):
        return {"predicted_peak_bytes": config["depth"] << 30}

    small = make_spec(tmp_path, SPEC.replace('budget = "1GiB"', 'budget = "2.5GiB"'))
    first = sweep(small, out, fake_cell, predictor=predictor)
    assert (first.ok, first.skipped, first.exit_status) == (8, 4, 0)  # skipped is not a failure
    assert sweep(small, out, fake_cell, predictor=predictor).resumed == 12  # still over: stays skipped
    large = make_spec(tmp_path, SPEC.replace('budget = "1GiB"', 'budget = "4GiB"'), "large.toml")
    outcome = sweep(large, out, fake_cell, predictor=predictor)
    assert (outcome.resumed, outcome.ok, outcome.skipped) == (8, 4, 0)
    assert {r["status"] for r in assert_one_row_per_cell_and_repeat(large, out)} == {"ok"}


# --- refuse, naming the field --------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    (("depth = [1, 2, 3]", "depth = [1, 3]"), "grid.depth"),
    (("width = 8", "width = 16"), "grid.width"),
    (('name = "fake"', 'name = "other"'), "study.name"),
])
def test_a_spec_that_would_reinterpret_the_rows_is_refused_naming_the_field(tmp_path, fake_cell, change, field):
    out = tmp_path / "out"
    sweep(make_spec(tmp_path), out, fake_cell)
    before = (out / "runs.csv").read_bytes()
    changed = make_spec(tmp_path, SPEC.replace(*change), "changed.toml")
    with pytest.raises(SweepError, match=rf"^{field}: "):
        sweep(changed, out, fake_cell)
    assert (out / "runs.csv").read_bytes() == before


COMMITTED = sorted(p.name for p in (ROOT / "results").iterdir()
                   if (p / "runs.csv").exists() and (ROOT / "experiments" / f"{p.name}.toml").exists())


@pytest.mark.parametrize("study", COMMITTED)
def test_a_committed_study_resumes_with_nothing_to_run(tmp_path, fake_cell, monkeypatch, study):
    """Folders written by earlier memstudy versions (older columns, older env.json) resume as they are."""
    out = tmp_path / study
    shutil.copytree(ROOT / "results" / study, out)
    before = (out / "runs.csv").read_bytes()
    log = tmp_path / "cells.log"
    monkeypatch.setenv("FAKE_CELL_LOG", str(log))
    spec = load_spec(ROOT / "experiments" / f"{study}.toml")
    from memstudy.run.results.provenance import model_source

    recorded = {r["model_source_hash"] for r in read_rows(out) if r.get("model_source_hash")}
    today = {model_source(c["model"])["sha256"] for c in spec.cells()}
    if recorded - today:  # a family module edited since the study was regenerated: refused, naming the module
        with pytest.raises(SweepError, match=r"^model: memstudy/nn/models/\w+\.py changed since"):
            sweep(spec, out, fake_cell, predictor=None)
        assert (out / "runs.csv").read_bytes() == before
        return
    outcome = sweep(spec, out, fake_cell, predictor=None)
    assert (outcome.resumed, outcome.ok, outcome.skipped, outcome.failed) == (len(spec.cells()), 0, 0, 0)
    assert logged(log) == []
    assert (out / "runs.csv").read_bytes() == before


# --- the model's source (issue 21, item 3) -----------------------------------------------------------------------

def source_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


USER_SPEC = SPEC.replace("width = 8", 'width = 8\nmodel = "models/mine.py:ResidualFamily"')


def user_model_folder(tmp_path: Path) -> Path:
    """A study folder with its own model file beside the spec (models/mine.py: the README's residual example)."""
    studies = tmp_path / "studies"
    (studies / "models").mkdir(parents=True)
    (studies / "models" / "mine.py").write_text((ROOT / "examples" / "residual.py").read_text())
    return studies


def test_rows_and_sessions_record_the_models_source(tmp_path, fake_cell):
    studies = user_model_folder(tmp_path)
    spec = make_spec(studies, USER_SPEC)
    out = tmp_path / "out"
    sweep(spec, out, fake_cell)
    model_file = studies / "models" / "mine.py"
    rows = read_rows(out)
    assert {r["model_source_hash"] for r in rows} == {source_hash(model_file)}
    session = json.loads((out / "env.json").read_text())["sessions"][-1]
    (record,) = session["model_sources"].values()
    assert record == {"path": str(model_file.resolve()), "sha256": source_hash(model_file)}
    builtin = tmp_path / "builtin"
    sweep(make_spec(tmp_path), builtin, fake_cell)  # a built-in family: its module is the source
    module = ROOT / "memstudy" / "nn" / "models" / "mlp.py"
    assert {r["model_source_hash"] for r in read_rows(builtin)} == {source_hash(module)}
    sources = json.loads((builtin / "env.json").read_text())["sessions"][-1]["model_sources"]
    assert sources == {"mlp": {"path": "memstudy/nn/models/mlp.py", "sha256": source_hash(module)}}


@pytest.mark.parametrize("change", [  # the refusal is one check before any of the three: the others in `make test-all`
    None, pytest.param(("depth = [1, 2, 3]", "depth = [1, 2, 3, 4]"), marks=pytest.mark.slow),
    pytest.param(("repeats = 2", "repeats = 3"), marks=pytest.mark.slow)], ids=["resume", "extend the grid", "more repeats"])
def test_a_changed_model_file_is_refused_naming_the_file(tmp_path, fake_cell, change):
    studies = user_model_folder(tmp_path)
    out = tmp_path / "out"
    sweep(make_spec(studies, USER_SPEC), out, fake_cell)
    before = (out / "runs.csv").read_bytes()
    model_file = studies / "models" / "mine.py"
    model_file.write_text(model_file.read_text().replace("h ← h + relu(Linear(h))", "h ← h + relu(Linear(h)) (v2)"))
    spec = make_spec(studies, USER_SPEC.replace(*change) if change else USER_SPEC, "again.toml")
    with pytest.raises(SweepError) as info:
        sweep(spec, out, fake_cell)
    message = str(info.value)
    assert message.startswith("model: ") and str(model_file.resolve()) in message and "--fresh" in message, message
    assert "\n" not in message
    assert (out / "runs.csv").read_bytes() == before
    outcome = sweep(spec, out, fake_cell, fresh=True)  # the way on: start over (or another folder)
    assert outcome.ok == len(spec.cells())
    assert {r["model_source_hash"] for r in read_rows(out)} == {source_hash(model_file)}


def test_a_changed_model_file_is_one_line_exit_2_from_the_command(tmp_path):
    studies = user_model_folder(tmp_path)
    spec = studies / "spec.toml"
    spec.write_text(USER_SPEC.replace("depth = [1, 2, 3]", "depth = 1").replace('batch_size = [4, 8]', "batch_size = 4")
                    .replace('mode = ["train", "inference"]', 'mode = "inference"').replace("repeats = 2", "repeats = 1"))
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def memstudy(*args):  # from another folder: the model path is the spec's
        return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True, timeout=120,
                              cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(ROOT)})

    first = memstudy("sweep", str(spec), "--out", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr
    model_file = studies / "models" / "mine.py"
    model_file.write_text(model_file.read_text() + "\n# edited\n")
    again = memstudy("sweep", str(spec), "--out", str(out), "--no-progress")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.startswith(f"error: model: {model_file.resolve()} changed") and len(again.stderr.splitlines()) == 1


def test_a_runs_csv_from_before_the_source_column_resumes_extends_and_reports(tmp_path, fake_cell):
    from memstudy.report import write_report

    out = tmp_path / "out"
    sweep(make_spec(tmp_path), out, fake_cell)
    rows = read_rows(out)
    old_columns = [c for c in rows[0] if c != "model_source_hash"]
    with open(out / "runs.csv", "w", newline="") as fh:  # as an older memstudy wrote it
        writer = csv.DictWriter(fh, fieldnames=old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    env = json.loads((out / "env.json").read_text())
    for session in env["sessions"]:
        session.pop("model_sources")
    (out / "env.json").write_text(json.dumps(env))
    assert sweep(make_spec(tmp_path), out, fake_cell).resumed == 12  # nothing recorded: nothing to compare
    extended = make_spec(tmp_path, SPEC.replace("depth = [1, 2, 3]", "depth = [1, 2, 3, 4]"), "more.toml")
    outcome = sweep(extended, out, fake_cell)
    assert (outcome.resumed, outcome.ok) == (12, 4)
    hashes = [r["model_source_hash"] for r in read_rows(out)]
    assert hashes[:24] == [""] * 24 and set(hashes[24:]) == {source_hash(ROOT / "memstudy" / "nn" / "models" / "mlp.py")}
    written = write_report(out, figures=False)
    assert out / "report.md" in written


# --- torn files on resume ----------------------------------------------------------------------------------------

def test_a_torn_last_line_is_said_repaired_and_rerun(tmp_path, fake_cell):
    spec = make_spec(tmp_path)
    out = tmp_path / "out"
    sweep(spec, out, fake_cell)
    text = (out / "runs.csv").read_text()
    (out / "runs.csv").write_text(text[: len(text) - 40])  # cut inside the last row
    outcome = sweep(spec, out, fake_cell)
    assert any("cut off" in w and "repaired" in w for w in outcome.warnings), outcome.warnings
    assert (outcome.resumed, outcome.ok) == (11, 1)
    assert {r["status"] for r in assert_one_row_per_cell_and_repeat(spec, out)} == {"ok"}


def test_duplicate_rows_from_an_earlier_double_sweep_are_dropped_on_resume(tmp_path, fake_cell):
    spec = make_spec(tmp_path)
    out = tmp_path / "out"
    sweep(spec, out, fake_cell)
    lines = (out / "runs.csv").read_text().splitlines(keepends=True)
    (out / "runs.csv").write_text("".join(lines + lines[1:5]))
    outcome = sweep(spec, out, fake_cell)
    assert any("4 rows repeat" in w for w in outcome.warnings), outcome.warnings
    assert_one_row_per_cell_and_repeat(spec, out)


# --- exit status from the command line ---------------------------------------------------------------------------

FAILING_SPEC = """
[study]
name = "failing"
[grid]
model = "{family}:FailsAtDepthTwo"
depth = [1, 2]
width = 8
batch_size = 4
[run]
repeats = 1
budget = "1GiB"
"""


def test_sweep_exits_1_while_a_cell_has_failed(tmp_path):
    family = ROOT / "tests" / "families" / "failing.py"
    spec = tmp_path / "failing.toml"
    spec.write_text(FAILING_SPEC.format(family=family))
    out = tmp_path / "out"

    def memstudy(*args):
        return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)

    first = memstudy("sweep", str(spec), "--out", str(out), "--no-progress")
    assert first.returncode == 1, first.stderr
    assert "1 ok, 0 skipped, 1 failed" in first.stdout and "Traceback" not in first.stderr
    again = memstudy("sweep", str(spec), "--out", str(out), "--no-progress")
    assert again.returncode == 1 and "--retry-failed" in again.stdout
    assert "exit status" in memstudy("sweep", "--help").stdout
    ok_spec = tmp_path / "ok.toml"
    ok_spec.write_text(FAILING_SPEC.format(family=family).replace("depth = [1, 2]", "depth = 1"))
    done = memstudy("sweep", str(ok_spec), "--out", str(tmp_path / "ok"), "--no-progress")
    assert done.returncode == 0, done.stderr


def test_progress_counter_and_postfix_agree_in_every_frame(tmp_path, fake_cell, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CELL_RAISE", "depth=2")
    run_sweep(make_spec(tmp_path), tmp_path / "out", progress=True, cell_command=fake_cell, predictor=no_predictor)
    err = capsys.readouterr().err
    frames = re.findall(r"(\d+)/12 .*?ok=(\d+) skipped=(\d+) failed=(\d+)", err)
    assert len(frames) >= 12, err
    for done, ok, skipped, failed in frames:
        assert int(ok) + int(skipped) + int(failed) == int(done), (done, ok, skipped, failed)
    assert frames[-1] == ("12", "8", "0", "4")


def test_git_state_is_read_before_fresh_deletes_tracked_results(tmp_path):
    """A clean checkout whose results are committed records dirty: false after `study --fresh` (make study)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "memstudy", repo / "memstudy", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "experiments").mkdir()
    for name in ("one", "two"):
        (repo / "experiments" / f"{name}.toml").write_text(
            f'[study]\nname = "{name}"\n[grid]\ndepth = 1\nwidth = 8\nbatch_size = 4\n[run]\nrepeats = 1\n')
    env = {**os.environ, "PYTHONPATH": str(repo), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*args):
        done = subprocess.run(list(args), cwd=repo, capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr
        return done

    run(sys.executable, "-m", "memstudy", "study", "--all", "--no-progress")
    run("git", "init", "-q")
    run("git", "add", ".")
    run("git", "commit", "-q", "-m", "results")
    assert run("git", "status", "--porcelain", "--untracked-files=no").stdout == ""
    run(sys.executable, "-m", "memstudy", "study", "--all", "--fresh", "--no-progress")
    for name in ("one", "two"):
        recorded = json.loads((repo / "results" / name / "env.json").read_text())["git"]
        assert recorded["dirty"] is False and recorded["commit"], (name, recorded)


def test_git_state_names_the_changed_paths(tmp_path):
    """dirty says something changed; `changed` says what (a results-only change is not changed code)."""
    from memstudy.run.results.provenance import git_info

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, env=env)

    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.csv").write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    assert git_info(tmp_path)["dirty"] is False and git_info(tmp_path)["changed"] == []
    (tmp_path / "results" / "bench.csv").write_text("b\n")
    (tmp_path / "untracked.txt").write_text("not ours\n")
    state = git_info(tmp_path)
    assert state["dirty"] is True and state["changed"] == ["results/bench.csv"]
    (tmp_path / "code.py").write_text("x = 2\n")
    git("add", "code.py")  # staged counts too
    assert git_info(tmp_path)["changed"] == ["code.py", "results/bench.csv"]
    assert git_info(tmp_path / "nowhere")["commit"] is None

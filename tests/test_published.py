"""README's and docs/'s figures are rendered from the committed results (tools.published), and the check bites.

- Every `published` block the module renders is in README.md or one page of docs/, character for character.
- A small change to a committed-style runs.csv / env.json (in a copy) changes the rendered block, so a README
  that was not re-rendered after a study moved fails the first test.
- `--readme` rewrites only the blocks; bad use is one `error:` line and exit status 2.
- The sweep records each session's wall time in env.json (what the README's study --all time is read from).
"""
from __future__ import annotations

import re

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from tools import published
from tools.published import BLOCKS, Results, pages, render, render_all, run_command, update_pages

ROOT = Path(__file__).resolve().parents[1]
# every committed study (the blocks read them all): a study added to results/ is copied too
STUDIES = tuple(sorted(p.parent.name for p in (ROOT / "results").glob("*/runs.csv")))


@pytest.fixture(scope="module")
def committed() -> dict[str, str]:
    return render_all(Results(ROOT), slow=False)  # the slow blocks have their own (slow) test


@pytest.fixture()
def copy(tmp_path) -> Path:
    """The committed files the blocks read, copied into a project-like folder."""
    for name in STUDIES:
        for file in ("runs.csv", "env.json", "timeline.csv"):
            source = ROOT / "results" / name / file
            if source.is_file():
                (tmp_path / "results" / name).mkdir(parents=True, exist_ok=True)
                shutil.copy(source, tmp_path / "results" / name / file)
    extra = [path.relative_to(ROOT) for pattern in ("docs/*.md", "results/*/report.html", "results/_static/*")
             for path in ROOT.glob(pattern)]
    for relative in (published.BENCH_CSV, published.CELL_PROFILE_CSV, "results/bench/env.json", published.EXAMPLE_RUN, published.PROBE_TEST,
                     "README.md", *extra):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    return tmp_path


@pytest.fixture()
def cheap_blocks(monkeypatch) -> tuple:
    """The writer's tests exercise the rewriting, not every renderer (each block's content has its own test above):
    `main` and `update_pages` see only the blocks `make study` feeds and the width block, seconds instead of minutes."""
    blocks = tuple(b for b in BLOCKS if b.study or b.name == "width")
    monkeypatch.setattr(published, "BLOCKS", blocks)
    return blocks


def page_texts(root: Path = ROOT) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text(encoding="utf-8") for path in pages(root)}


def test_the_pages_hold_every_block_as_rendered_from_the_committed_results(committed):
    assert "README.md" in page_texts() and any(name.startswith("docs/") for name in page_texts())
    text = "\n".join(page_texts().values())
    for name, block in committed.items():
        assert block in text, (f"the published:{name} block of README.md or docs/ differs from what results/ say: run "
                                 "`make readme` (python -m tools.published --readme)")


def test_each_block_appears_once_and_no_unknown_block_is_left(committed):
    texts = page_texts()
    for block in BLOCKS:
        holders = [name for name, text in texts.items() if f"<!-- published:{block.name}:start" in text]
        assert len(holders) == 1, (block.name, holders)
        assert texts[holders[0]].count(f"<!-- published:{block.name}:start") == 1, block.name
        assert texts[holders[0]].count(published.end_marker(block)) == 1, block.name
    assert sum(text.count("<!-- published:") for text in texts.values()) == 2 * len(BLOCKS)


def _rewrite_runs(folder: Path, change) -> None:
    runs = pd.read_csv(folder / "runs.csv")
    change(runs)
    runs.to_csv(folder / "runs.csv", index=False)


def _scale_cell(column: str, factor: float, **where):
    def change(runs: pd.DataFrame) -> None:
        mask = pd.Series(True, index=runs.index)
        for key, value in where.items():
            mask &= runs[key] == value
        assert mask.any(), where
        runs.loc[mask, column] = (runs.loc[mask, column] * factor).round().astype("int64")
    return change


def _first_large_train_row(runs: pd.DataFrame) -> int:
    return runs[(runs["mode"] == "train") & (runs["step_peak_bytes"] >= 2**20)].index[0]


def _tracemalloc_off_by_a_tenth(runs: pd.DataFrame) -> None:
    row = _first_large_train_row(runs)
    runs.loc[row, "tracemalloc_step_peak_bytes"] = int(runs.loc[row, "step_peak_bytes"] * 1.1)


def _half_error_larger(runs: pd.DataFrame) -> None:
    half = runs["policy"] == "half"
    runs.loc[half, "grad_rel_error"] = runs.loc[half, "grad_rel_error"] * 100


@pytest.mark.parametrize("study, change, block, before, after", [
    # the deepest, largest training cell's peak doubles: the train ÷ inference range's top end doubles
    ("default", _scale_cell("peak_bytes", 2, depth=32, batch_size=1024, mode="train"), "study",
     "**3.90× (depth 32, batch 1024)**", "**7.80× (depth 32, batch 1024)**"),
    # one step's tracemalloc reading 10% high: the probes' bound moves
    # (the committed bound is a measurement, so it is matched by pattern, not typed)
    ("default", _tracemalloc_off_by_a_tenth, "probes", re.compile(r"within [0-4]\.\d\d% of the ledger"),
     "within 10.00% of the ledger"),
    # half's gradient error 100× larger: the remedies bullet says so
    ("policies", _half_error_larger, "remedies", "relative error of 1.6e-04", "relative error of 1.6e-02"),
])
def test_a_changed_runs_csv_changes_the_rendered_block(copy, committed, study, change, block, before, after):
    def holds(text: str) -> bool:
        return bool(before.search(text)) if isinstance(before, re.Pattern) else before in text

    assert holds(committed[block])  # the committed figure, as the README states it
    _rewrite_runs(copy / "results" / study, change)
    changed = render(next(b for b in BLOCKS if b.name == block), Results(copy))
    assert changed != committed[block]
    assert after in changed and not holds(changed), changed


def test_the_study_block_states_the_sweeps_wall_time_once_every_session_records_it(copy):
    block = next(b for b in BLOCKS if b.name == "study")
    walls = {}
    for number, name in enumerate(STUDIES, 1):
        path = copy / "results" / name / "env.json"
        env = json.loads(path.read_text())
        for session in env["sessions"]:
            session["wall_seconds"] = 10.0 * number
        walls[name] = 10.0 * number * len(env["sessions"])
        path.write_text(json.dumps(env))
    text = render(block, Results(copy))
    assert (f"took {walls['default']:.1f} s for this study and {sum(walls.values()):.1f} s for all {len(STUDIES)} "
            "studies") in text
    path = copy / "results" / "width" / "env.json"
    env = json.loads(path.read_text())
    del env["sessions"][0]["wall_seconds"]
    path.write_text(json.dumps(env))
    assert f"for {len(STUDIES) - 1} of the {len(STUDIES)} committed studies, so no total is given" in render(
        block, Results(copy))


def _stale(block: str) -> str:
    """The block (start marker to end marker) with a line inside it that no rendering writes."""
    start, rest = block.split("-->\n", 1)
    return f"{start}-->\nstale line\n{rest}"


def test_readme_option_rewrites_only_the_blocks(copy, committed, capsys, cheap_blocks):
    readme = copy / "README.md"
    original = readme.read_text(encoding="utf-8")
    stale = original.replace(committed["study"], _stale(committed["study"]))
    assert stale != original
    readme.write_text(stale, encoding="utf-8")
    assert published.main(["--readme", "--root", str(copy)]) == 0
    assert readme.read_text(encoding="utf-8") == original
    assert "updated" in capsys.readouterr().out


def test_study_option_rewrites_only_what_make_study_feeds(copy, committed, capsys):
    """`make study` re-renders the blocks its results feed, not the predictor's slow table nor another study's."""
    readme = copy / "README.md"
    original = readme.read_text(encoding="utf-8")
    width = next(path for path in pages(copy) if "<!-- published:width:end -->" in path.read_text(encoding="utf-8"))
    width_text = width.read_text(encoding="utf-8")
    stale_width = width_text.replace(committed["width"], _stale(committed["width"]))
    assert stale_width != width_text
    width.write_text(stale_width, encoding="utf-8")
    stale = readme.read_text(encoding="utf-8").replace(committed["study"], _stale(committed["study"]))
    assert stale != original
    readme.write_text(stale, encoding="utf-8")
    assert published.main(["--readme", "--study", "--root", str(copy)]) == 0
    assert committed["study"] in readme.read_text(encoding="utf-8")
    assert width.read_text(encoding="utf-8") == stale_width
    assert {b.name for b in published.BLOCKS if b.study} == {"one-step", "probes", "study", "timeline", "reports",
                                                              "pages"}
    assert "updated 6 published blocks" in capsys.readouterr().out


def test_a_page_without_a_block_is_refused_and_left_alone(copy, capsys, cheap_blocks):
    readme = next(path for path in pages(copy) if "<!-- published:width:end -->" in path.read_text(encoding="utf-8"))
    text = readme.read_text(encoding="utf-8").replace("<!-- published:width:end -->", "")
    readme.write_text(text, encoding="utf-8")
    assert update_pages(copy, Results(copy), cheap_blocks) == ["width"]
    assert published.main(["--readme", "--root", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "width" in err and err.count("\n") == 1
    assert readme.read_text(encoding="utf-8") == text


@pytest.mark.parametrize("argv, missing", [
    (["--root", "{tmp}"], None),  # no results/ at all
    (["--bogus"], None),
    (["--root", "{copy}"], published.EXAMPLE_RUN),  # a file a block quotes is gone
])
def test_bad_use_is_one_error_line_and_exit_2(copy, tmp_path_factory, capsys, argv, missing):
    empty = tmp_path_factory.mktemp("empty")
    if missing:
        (copy / missing).unlink()
    argv = [a.format(tmp=empty, copy=copy) for a in argv]
    assert published.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_the_example_command_line_parses_back_to_the_rows_configuration():
    from memstudy.cli import _config, build_parser
    from memstudy.config import normalize

    results = Results(ROOT)
    row = results.example_run["train"][0]
    config = published.step._row_config(row)
    command = run_command(config, list(results.example_run))
    assert command.startswith("memstudy run --depth ") and command.endswith("--mode both")
    args = build_parser().parse_args(command.split()[1:])
    from memstudy.nn.models.registry import get_family

    parsed = normalize({**_config(args, get_family("mlp")), "mode": "train"})
    assert parsed == normalize({**config, "mode": "train"})


TINY_SPEC = """
[study]
name = "tiny"
[grid]
depth = 1
width = 8
batch_size = 2
mode = "train"
[run]
repeats = 1
budget = "1GiB"
timeout_seconds = 120
"""


def test_the_sweep_records_each_sessions_wall_seconds(tmp_path):
    from memstudy.run.spec import load_spec
    from memstudy.run.sweep import run_sweep

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC)
    spec = load_spec(path)
    for sessions in (1, 2):  # the second run resumes: nothing to do, but it is a session too
        started = time.monotonic()
        run_sweep(spec, tmp_path / "out", progress=False)
        elapsed = time.monotonic() - started
        env = json.loads((tmp_path / "out" / "env.json").read_text())
        assert len(env["sessions"]) == sessions
        assert 0 < env["sessions"][-1]["wall_seconds"] <= elapsed


# --- timings say the load they were taken under (issue 21, item 6) -------------------------------------------

def _set_load(runs: pd.DataFrame, cores: float = 0.9) -> None:
    runs["foreign_cores"] = cores


def test_every_published_timing_states_its_load(committed):
    assert "other cores busy meanwhile" in committed["one-step"]  # the run table's row beside the step time
    for block, figure in (("remedies", "as long in this run"), ("remedies", "minimal's"), ("study", "Wall time")):
        sentence = next(s for s in committed[block].split(". ") if figure in s)
        assert "others' load" in sentence or "busy" in sentence, sentence


def test_a_timing_taken_under_load_is_flagged(copy, committed):
    run = copy / published.EXAMPLE_RUN
    rows = [json.loads(line) for line in run.read_text().splitlines()]
    for row in rows:
        row["foreign_cores"], row["step_seconds"] = 1.3, 0.367
    run.write_text("".join(json.dumps(row) + "\n" for row in rows))
    step = render(next(b for b in BLOCKS if b.name == "one-step"), Results(copy))
    assert "367.00 ms (loaded)" in step and "1.30 cores" in step
    assert "loaded" not in committed["remedies"].split("Saved-tensor")[0]
    _rewrite_runs(copy / "results" / "checkpointing", _set_load)
    remedies = render(next(b for b in BLOCKS if b.name == "remedies"), Results(copy))
    checkpointing = remedies.split("Saved-tensor")[0]
    assert "under load" in checkpointing and "0.90 cores" in checkpointing, checkpointing


def test_a_stale_block_in_docs_is_rewritten_in_its_page(copy, committed):
    page = copy / "docs" / "attention.md"
    original = page.read_text(encoding="utf-8")
    assert committed["gpt2"] in original
    stale = original.replace(committed["gpt2"], published.start_marker(next(b for b in BLOCKS if b.name == "gpt2"))
                             + "\n\nold\n\n<!-- published:gpt2:end -->")
    page.write_text(stale, encoding="utf-8")
    assert update_pages(copy, Results(copy), tuple(b for b in BLOCKS if b.name == "gpt2")) == []
    assert page.read_text(encoding="utf-8") == original


def test_a_findings_block_is_the_reports_own_section(committed):
    """The docs quote a study's findings as its report.md states them (figures aside): the same renderer, the same
    rows, so the two cannot disagree."""
    for name in ("attention", "cnn"):
        report = (ROOT / "results" / name / "report.md").read_text(encoding="utf-8")
        body = committed[name].split("\n", 2)[2].rsplit("\n", 2)[0].strip()
        paragraphs = [p for p in body.split("\n\n") if p.strip()]
        assert len(paragraphs) > 5
        missing = [p for p in paragraphs if p not in report]
        assert not missing, missing[:1]

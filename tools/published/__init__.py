"""README's and docs/'s figures, rendered from the committed results: `python -m tools.published [--readme]`.

Every number README.md or a page of docs/ quotes from a study, the example run, the benchmark or the predictor sits
in a block between `<!-- published:NAME:start (...) -->` and `<!-- published:NAME:end -->`; this module renders
each block from the files under `results/` (runs.csv through the report's own loading, fits and section
functions, env.json, results/example/run.jsonl, results/bench/bench.csv) or from the predictor (the GPT-2 table).
Without `--readme` it prints the blocks; with it, it rewrites each block in place, in whichever of README.md and
docs/*.md holds its markers (each block is in exactly one). tests/test_published.py requires those files to hold
exactly what it renders, so a regenerated study that moves a figure fails the suite until `make readme` is run.

One module per kind of block: step.py (one step), probes.py (how the probes agree), study.py (the default and
width studies), remedies.py (what buys the memory back), reports.py (a finding's own section, the index of
reports, the pages' sizes), tools/worked.py (GPT-2 small, predicted), tools/llama_worked.py (Llama-3-8B fine-tuned,
predicted, beside tools/calculators.py's accelerate and llm-analysis), benchmarks/table.py (the benchmark);
results.py reads the committed files once. Wherever the report computes a figure, the block calls the same
function, so each fact has one place. This package is not installed: it reads the repository by path from its
root (`--root`, default the working directory).

Each sentence says what its figure is over (which study, which rows or cells); a claim that depends on the
numbers ("exactly", "within the bound") is only made when the numbers say so.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tools.published.korthikanti import strategies_block, table2_block, table3_block
from tools.published.llm_analysis import llm_analysis_block
from tools.published.probes import probes_block
from tools.published.remedies import remedies_block
from tools.published.reports import finding_block, flash_block, pages_block, reports_block
from tools.published.results import (BENCH_CSV, CELL_PROFILE_CSV, DEFAULT_STUDY, EXAMPLE_RUN, PROBE_TEST, PublishError,
                                     Results)
from tools.published.step import one_step_block, run_command
from tools.published.study import study_block, timeline_block, width_block

COMMAND = "python -m tools.published --readme"
PAGES = ("README.md", "docs/*.md")  # where the blocks may sit (relative to the root)


def gpt2_block(results: Results) -> list[str]:
    from tools import worked

    lines, _ = worked.all_lines()  # float32, bfloat16 with master weights, ZeRO's model states
    return lines


def bench_block(results: Results) -> list[str]:
    from benchmarks.table import read_csv, read_env, readme_lines

    path = results.path(BENCH_CSV)
    if not path.is_file():
        raise PublishError(f"{path}: not found (run `make bench`)")
    return readme_lines(read_csv(path), read_env(path.parent / "env.json"))


def cell_profile_block(results: Results) -> list[str]:
    from benchmarks.cell_profile import summary_lines, read, table_lines

    path = results.path(CELL_PROFILE_CSV)
    if not path.is_file():
        raise PublishError(f"{path}: not found (run `python -m benchmarks.cell_profile`)")
    rows = read(path)
    return table_lines(rows) + [""] + summary_lines(rows)


def zero_table_block(results: Results) -> list[str]:
    from tools import zero_tables

    return zero_tables.all_lines()


def will_it_fit_block(results: Results) -> list[str]:
    from tools.published.plan import will_it_fit_block as block

    return block(results)


def generation_block(results: Results) -> list[str]:
    from tools import generation_table

    return generation_table.lines(generation_table.DTYPE, generation_table.BUDGET)


def llama_8b_block(results: Results) -> list[str]:
    from tools import llama_worked

    return llama_worked.lines()


@dataclass(frozen=True)
class Block:
    name: str
    sources: str  # what the marker says the block is generated from
    render: Callable[[Results], list[str]]
    slow: bool = False  # tens of seconds to render: the fast tests check a few of its cells, the slow ones all
    study: bool = False  # fed by what `make study` measures (results/default, results/example): `--study` renders it


BLOCKS: tuple[Block, ...] = (
    Block("one-step", f"{EXAMPLE_RUN}, {BENCH_CSV} and the engine", one_step_block, study=True),
    Block("probes", f"results/*/runs.csv, {EXAMPLE_RUN}, {PROBE_TEST}", probes_block, study=True),
    Block("study", f"results/{DEFAULT_STUDY}/, results/*/env.json, {BENCH_CSV}", study_block, study=True),
    Block("timeline", f"results/{DEFAULT_STUDY}/timeline.csv", timeline_block, study=True),
    Block("width", "results/width/runs.csv", width_block),
    Block("remedies", "results/{checkpointing,policies,optimizers,dtypes}/runs.csv", remedies_block),
    Block("reports", "results/*/env.json", reports_block, study=True),
    Block("pages", "results/*/report.html, results/_static/", pages_block, study=True),
    Block("attention", "results/attention/runs.csv through memstudy.findings.attention",
          finding_block("attention", "attention")),
    Block("flash", "results/flash/runs.csv through memstudy.findings.attention", flash_block),
    Block("cnn", "results/cnn/runs.csv through memstudy.findings.cnn", finding_block("cnn", "cnn")),
    Block("gpt2", "the predictor (tools/worked.py)", gpt2_block),
    Block("bench", f"{BENCH_CSV} (benchmarks/table.py)", bench_block),
    Block("cell-profile", f"{CELL_PROFILE_CSV} (benchmarks/cell_profile.py)", cell_profile_block),
    Block("generation-table", "the predictor (tools/generation_table.py)", generation_block, slow=True),
    Block("llama-8b", "the predictor and tools/calculators.py (tools/llama_worked.py)", llama_8b_block, slow=True),
    Block("zero-tables", "the predictor (tools/zero_tables.py)", zero_table_block, slow=True),
    Block("korthikanti-table2", "the predictor (memstudy.findings.korthikanti, tools/published/korthikanti.py)",
          table2_block),
    Block("korthikanti-table3", "the predictor (memstudy.findings.korthikanti, tools/published/korthikanti.py)",
          table3_block, slow=True),
    Block("parallel-strategies", "the predictor (memstudy.findings.parallel, tools/published/korthikanti.py)",
          strategies_block, slow=True),
    Block("will-it-fit", "memstudy plan (tools/published/plan.py)", will_it_fit_block, slow=True),
    Block("llm-analysis-parallel", "the predictor and tools/calculators.py (tools/published/llm_analysis.py)",
          llm_analysis_block),
)


def start_marker(block: Block) -> str:
    return f"<!-- published:{block.name}:start (generated from {block.sources} by {COMMAND}) -->"


def end_marker(block: Block) -> str:
    return f"<!-- published:{block.name}:end -->"


def render(block: Block, results: Results) -> str:
    """The block as the README holds it, markers included."""
    body = "\n".join(block.render(results)).strip("\n")
    return "\n".join([start_marker(block), "", body, "", end_marker(block)])


def render_all(results: Results, slow: bool = True) -> dict[str, str]:
    """Every block rendered (without the slow ones when `slow` is false)."""
    return {block.name: render(block, results) for block in BLOCKS if slow or not block.slow}


def pages(root: Path) -> list[Path]:
    """README.md and docs/*.md under `root`: the files that may hold blocks."""
    return sorted({path for pattern in PAGES for path in root.glob(pattern) if path.is_file()})


def replace_block(text: str, name: str, rendered: str) -> str | None:
    """`text` with the block `name` (markers included) replaced by `rendered`; None when its markers are not there.
    The one marker-block writer: every generated block of README.md and docs/ goes through it."""
    start, end_text = text.find(f"<!-- published:{name}:start"), f"<!-- published:{name}:end -->"
    end = text.find(end_text, start)
    if start < 0 or end < 0:
        return None
    return text[:start] + rendered + text[end + len(end_text):]


def update_pages(root: Path, results: Results, blocks: tuple[Block, ...] = BLOCKS) -> list[str]:
    """Rewrite every block in the page that holds it; returns the names of blocks no page holds whole, both markers
    (then nothing is written)."""
    texts = {path: path.read_text(encoding="utf-8") for path in pages(root)}
    missing = []
    for block in blocks:
        holders = [path for path, text in texts.items() if f"<!-- published:{block.name}:start" in text]
        rendered = render(block, results) if holders else ""
        replaced = {path: replace_block(texts[path], block.name, rendered) for path in holders}
        if not holders or None in replaced.values():  # no start marker, or a start without its end
            missing.append(block.name)
            continue
        texts.update(replaced)
    if missing:
        return missing
    for path, text in texts.items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return []


USAGE = ("usage: python -m tools.published [--readme] [--study] [--root DIR]  (--readme: rewrite README.md's and docs/'s "
         "blocks; --study: only those fed by what `make study` measures, the default study and the example)")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    readme, study, root = False, False, Path(".")
    while args:
        arg = args.pop(0)
        if arg == "--readme":
            readme = True
        elif arg == "--study":
            study = True
        elif arg == "--root" and args:
            root = Path(args.pop(0))
        elif arg in ("-h", "--help"):
            print(USAGE)
            return 0
        else:
            sys.stderr.write(f"error: unknown argument {arg!r} ({USAGE})\n")
            return 2
    if not (root / "results" / DEFAULT_STUDY / "runs.csv").is_file():
        sys.stderr.write(f"error: no results/{DEFAULT_STUDY}/runs.csv under {root} (run from the project's folder)\n")
        return 2
    results = Results(root)
    try:
        if not readme:
            print("\n\n".join(render_all(results).values()))
            return 0
        if not (root / "README.md").is_file():
            sys.stderr.write(f"error: {root / 'README.md'} not found\n")
            return 2
        blocks = tuple(b for b in BLOCKS if b.study) if study else BLOCKS  # `make study`: not the 2-minute table
        missing = update_pages(root, results, blocks)
    except PublishError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if missing:
        sys.stderr.write(f"error: neither README.md nor docs/*.md under {root} has the published block "
                         f"{', '.join(missing)} (<!-- published:NAME:start ... --> ... <!-- published:NAME:end -->); "
                         "nothing changed\n")
        return 2
    print(f"updated {len(blocks)} published blocks in README.md and docs/")
    return 0


__all__ = ["BENCH_CSV", "BLOCKS", "CELL_PROFILE_CSV", "DEFAULT_STUDY", "EXAMPLE_RUN", "PROBE_TEST", "Block", "PublishError", "Results",
           "end_marker", "main", "pages", "render", "render_all", "replace_block", "run_command", "start_marker",
           "update_pages"]

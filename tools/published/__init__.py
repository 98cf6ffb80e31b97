"""The README's figures, rendered from the committed results: `python -m tools.published [--readme]`.

Every number the README quotes from a study, the example run or the benchmark sits in a block between
`<!-- published:NAME:start (...) -->` and `<!-- published:NAME:end -->`; this module renders each block from
the files under `results/` (runs.csv through the report's own loading, fits and section functions, env.json,
results/example/run.jsonl, results/bench/bench.csv). Without `--readme` it prints the blocks; with it, it
rewrites them in README.md in place. tests/test_published.py requires the README to hold exactly what it
renders, so a regenerated study that moves a figure fails the suite until `make readme` is run.

One module per README section: step.py (What one step holds), probes.py (How the probes agree), study.py (What the
study shows), remedies.py (what buys the memory back); results.py reads the committed files once. Wherever the
report computes a figure, the block calls the same function (report.py, remedies.py), so each fact has one place.

Each sentence says what its figure is over (which study, which rows or cells); a claim that depends on the
numbers ("exactly", "within the bound") is only made when the numbers say so.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tools.published.probes import probes_block
from tools.published.remedies import remedies_block
from tools.published.results import BENCH_CSV, DEFAULT_STUDY, EXAMPLE_RUN, PROBE_TEST, PublishError, Results
from tools.published.step import _row_config, one_step_block, run_command
from tools.published.study import study_block, timeline_block, width_block

COMMAND = "python -m tools.published --readme"


@dataclass(frozen=True)
class Block:
    name: str
    sources: str  # what the marker says the block is generated from
    render: Callable[[Results], list[str]]


BLOCKS: tuple[Block, ...] = (
    Block("one-step", f"{EXAMPLE_RUN}, {BENCH_CSV} and the engine", one_step_block),
    Block("probes", f"results/*/runs.csv, {EXAMPLE_RUN}, {PROBE_TEST}", probes_block),
    Block("study", f"results/{DEFAULT_STUDY}/, results/*/env.json, {BENCH_CSV}", study_block),
    Block("timeline", f"results/{DEFAULT_STUDY}/timeline.csv", timeline_block),
    Block("width", "results/width/runs.csv", width_block),
    Block("remedies", "results/{checkpointing,policies,optimizers,dtypes}/runs.csv", remedies_block),
)


def start_marker(block: Block) -> str:
    return f"<!-- published:{block.name}:start (generated from {block.sources} by {COMMAND}) -->"


def end_marker(block: Block) -> str:
    return f"<!-- published:{block.name}:end -->"


def render(block: Block, results: Results) -> str:
    """The block as the README holds it, markers included."""
    body = "\n".join(block.render(results)).strip("\n")
    return "\n".join([start_marker(block), "", body, "", end_marker(block)])


def render_all(results: Results) -> dict[str, str]:
    return {block.name: render(block, results) for block in BLOCKS}


def update_readme(readme: Path, results: Results) -> list[str]:
    """Rewrite every block between its markers; returns the names of blocks whose markers are missing (the file is
    then left unchanged)."""
    text = readme.read_text(encoding="utf-8")
    missing = []
    for block in BLOCKS:
        prefix = f"<!-- published:{block.name}:start"
        start, end = text.find(prefix), text.find(end_marker(block))
        if start < 0 or end < start:
            missing.append(block.name)
            continue
        text = text[:start] + render(block, results) + text[end + len(end_marker(block)):]
    if not missing:
        readme.write_text(text, encoding="utf-8")
    return missing


USAGE = "usage: python -m tools.published [--readme] [--root DIR]"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    readme, root = False, Path(".")
    while args:
        arg = args.pop(0)
        if arg == "--readme":
            readme = True
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
        path = root / "README.md"
        if not path.is_file():
            sys.stderr.write(f"error: {path} not found\n")
            return 2
        missing = update_readme(path, results)
    except PublishError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if missing:
        sys.stderr.write(f"error: {path} has no published block {', '.join(missing)} "
                         "(<!-- published:NAME:start ... --> ... <!-- published:NAME:end -->); nothing changed\n")
        return 2
    print(f"updated {len(BLOCKS)} published blocks in {path}")
    return 0


__all__ = ["BENCH_CSV", "BLOCKS", "DEFAULT_STUDY", "EXAMPLE_RUN", "PROBE_TEST", "Block", "PublishError", "Results",
           "end_marker", "main", "render", "render_all", "run_command", "start_marker", "update_readme"]

"""`memstudy sweep` and `memstudy study`: a spec's sweep into its results folder, and the project's studies.

A study is run from the project's folder: its specs are `experiments/*.toml` and each one's results go to
`results/<spec name>`, both relative to `root` (the working directory unless given). A study is a sweep and
then a report; the report is the caller's (`report`: a callable taking the results folder), so that this
package, which the cells and the Dask workers import, stays free of the report's data frames.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .results.folder import results_folder
from .results.provenance import git_info
from .results.resume import SweepError
from .spec import SpecError, load_spec
from .sweep import SweepOutcome, run_sweep

STUDIES_DIR = "experiments"
DEFAULT_SPEC = f"{STUDIES_DIR}/default.toml"
RESULTS_DIR = "results"


class StudyError(ValueError):
    """Bad input (a spec, a flag, a folder): one line for the user."""


def summary_line(name: str, outcome: SweepOutcome) -> str:
    """What a finished sweep prints: its cells by outcome, and the file they went to."""
    changed = (f"; extended ({'; '.join(outcome.changes)})"
               if outcome.changes and outcome.resumed + outcome.done else "")
    earlier = (f"; {outcome.failed_before} cells failed in an earlier run (--retry-failed reruns them)"
               if outcome.failed_before else "")
    return (f"{name}: {outcome.cells} cells ({outcome.resumed} already done): {outcome.ok} ok, "
            f"{outcome.skipped} skipped, {outcome.failed} failed{earlier}{changed} -> {outcome.runs_csv}")


def sweep_spec(spec_path: str | os.PathLike, out: str | os.PathLike | None = None, *, jobs: int | None = None,
               cluster: str | None = None, fresh: bool = False, retry_failed: bool = False, progress: bool = True,
               hf_config: str | None = None, git: dict[str, Any] | None = None, root: Path = Path("."),
               warn: Callable[[str], None] = lambda message: None,
               say: Callable[[str], None] = print) -> tuple[Path, int]:
    """Sweep one spec into `out` (default: results/<its name> under `root`); its results folder and exit status
    (0, or 1 when a cell failed). StudyError for bad input."""
    spec_path = Path(spec_path)
    if not spec_path.is_file():
        raise StudyError(f"spec file {spec_path} not found")
    if cluster is not None and jobs is not None:
        raise StudyError("--jobs and --cluster: choose one (on a cluster each worker runs one cell at a time)")
    try:
        spec = load_spec(spec_path, hf_config=hf_config)
        if out is None:  # the default results/<name>: results/ is part of what was asked for
            out = results_folder(root / RESULTS_DIR, "results folder") / spec.name
        outcome = run_sweep(spec, out, jobs=jobs, fresh=fresh, progress=progress, retry_failed=retry_failed,
                            git=git, cluster=cluster)
    except (SpecError, SweepError) as exc:
        raise StudyError(str(exc)) from None
    for warning in outcome.warnings:
        warn(warning)
    say(summary_line(spec.name, outcome))
    return Path(out), outcome.exit_status


def study_specs(root: Path = Path(".")) -> list[Path]:
    """Every study of the project: experiments/*.toml under `root`, by name."""
    specs = sorted((root / STUDIES_DIR).glob("*.toml"))
    if not specs:
        raise StudyError(f"no {root / STUDIES_DIR}/*.toml here (run from the project's folder)")
    return specs


def run_studies(report: Callable[[Path], None], *, every: bool = False, spec: str | None = None,
                out: str | None = None, root: Path = Path("."), **sweep: Any) -> int:
    """`memstudy study`: the default spec (or `spec`) swept and reported; with `every`, each of the project's
    studies in turn. The worst exit status of the sweeps."""
    if not every:
        folder, status = sweep_spec(spec or root / DEFAULT_SPEC, out, root=root, **sweep)
        report(folder)
        return status
    if spec or out:
        raise StudyError(f"--all runs every {STUDIES_DIR}/*.toml into {RESULTS_DIR}/<name>: it takes no --spec or "
                         "--out")
    specs = study_specs(root)
    git = git_info()  # once, before the first study rewrites tracked result files
    worst = 0
    for path in specs:
        folder, status = sweep_spec(path, root=root, git=git, **sweep)
        report(folder)
        worst = max(worst, status)
    return worst


__all__ = ["DEFAULT_SPEC", "RESULTS_DIR", "STUDIES_DIR", "StudyError", "run_studies", "study_specs", "summary_line",
           "sweep_spec"]

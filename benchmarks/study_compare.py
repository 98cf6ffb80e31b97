"""`python -m benchmarks.study_compare`: studies with today's code and with this checkout, side by side in one run
(issue 28 item 1: `memstudy study --all` in at most 0.5x today's wall time, measuring the same).

The baseline is another commit's tree (`--baseline REF`, default: where this branch left main, `git merge-base HEAD
main`, or on main itself the commit before the speed work, `SPEED_BASELINE`), unpacked by `git archive` into a
temporary folder and run from there (its own memstudy on PYTHONPATH), or this checkout with every cell started the
old way (`--baseline exec`: MEMSTUDY_LAUNCHER=exec). Each study's sweep runs once each way, alternating which goes
first, into temporary folders (results/ is never written). Both ways run the baseline's own experiments/NAME.toml:
the same grid measured twice (a study that gained a field since, such as cnn.toml's conv_algo, would be refused by
the old code and would not be the same work). Then:

- wall seconds of each sweep (`memstudy sweep SPEC --out DIR`, the process's wall time), summed over the studies
  that ran both ways (a study that failed either way is named in the errors and left out of both sums);
- every column of every (cell, repeat) row compared, except the measurements that differ from run to run (the
  probes, the clock, the load, the host, the process's absolute peaks) and provenance (`MEASURED`): the ledger's
  and the predictor's columns must be identical;
- each probe's agreement with the ledger (median and largest |probe − ledger step peak| ÷ ledger step peak over the
  rows of at least 1 MiB, as the reports state it, memstudy.report.sections.agreement) both ways.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Callable

from .load import ForeignLoad

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("default", "dtypes", "policies", "optimizers", "cnn")  # a subset of --all: ~240 s today on a quiet machine
# columns that are measurements of this run (or provenance), not the ledger's or the predictor's
MEASURED = frozenset((
    "tracemalloc_step_peak_bytes", "rss_step_peak_bytes", "mprof_step_peak_bytes", "rss_method", "hwm_bytes",
    "vm_peak_bytes", "step_seconds", "foreign_cores", "host", "worker", "blas_threads", "free_cores",
    "mem_limit_bytes", "model_source_hash",
))
PROBES = (("tracemalloc", "tracemalloc_step_peak_bytes"), ("RSS", "rss_step_peak_bytes"),
          ("memory_profiler", "mprof_step_peak_bytes"))
LARGE_STEP_BYTES = 1 << 20  # memstudy.report.sections: probes are compared on steps of at least 1 MiB
TARGET_RATIO = 0.5


def _read(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {(r["cell"], r["repeat"]): r for r in csv.DictReader(fh)}


def _baseline_tree(ref: str, into: Path) -> Path:
    """`git archive REF` of this checkout, unpacked into `into`."""
    data = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def _sweep(tree: Path, spec: Path, out: Path, env: dict[str, str]) -> tuple[float, str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "memstudy", "sweep", str(spec), "--out", str(out), "--no-progress"],
                          cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    error = "" if done.returncode == 0 else \
        f"exited {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"
    return seconds, error


def _agreement(rows: list[dict[str, str]]) -> dict[str, tuple[float, float, int]]:
    """Per probe: (median |rel|, max |rel|, rows) against the ledger's step peak, steps of at least 1 MiB."""
    out = {}
    for name, column in PROBES:
        rel = []
        for r in rows:
            if r.get("status") != "ok" or not r.get(column) or not r.get("step_peak_bytes"):
                continue
            ledger = float(r["step_peak_bytes"])
            if ledger >= LARGE_STEP_BYTES:
                rel.append(abs(float(r[column]) - ledger) / ledger)
        out[name] = (statistics.median(rel), max(rel), len(rel)) if rel else (float("nan"), float("nan"), 0)
    return out


# main just before issue 28's speed work landed (the merge of the speed branch, 0651dec, has it as first parent): the
# baseline when this checkout is main itself, where the merge base is HEAD and would compare the code with itself
SPEED_BASELINE = "6f5ed1837f11c767871a4dfa09cd7faab6415a80"


def default_baseline() -> str:
    """Where this branch left main (`git merge-base HEAD main`), or SPEED_BASELINE on main itself."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    base = git("merge-base", "HEAD", "main")
    return SPEED_BASELINE if base == git("rev-parse", "HEAD") else base


def compare(studies: tuple[str, ...] = STUDIES, baseline: str | None = None,
            log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Run each study both ways; seconds, differing columns and the probes' agreement."""
    tmp = Path(tempfile.mkdtemp(prefix="memstudy-bench-compare-"))
    # each way's own PYTHONPATH; bytecode cached as on a user's checkout (benchmarks/run.py says why), also when this
    # module runs on its own
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    try:
        if baseline is None:
            baseline = default_baseline()
        if baseline == "exec":
            old_tree, old_env, label = ROOT, {**env, "MEMSTUDY_LAUNCHER": "exec"}, "this checkout, MEMSTUDY_LAUNCHER=exec"
        else:
            old_tree = _baseline_tree(baseline, tmp / "baseline")
            old_env, label = {**env, "PYTHONPATH": str(old_tree)}, f"commit {baseline[:10]}"
        new_env = {**env, "PYTHONPATH": str(ROOT)}
        new_env.pop("MEMSTUDY_LAUNCHER", None)
        seconds = {"old": {}, "new": {}}
        errors: list[str] = []
        differing: dict[str, int] = {}
        rows = {"old": [], "new": []}
        compared = 0
        timed: list[str] = []  # the studies that ran both ways without an error: the ones the sums cover
        load = ForeignLoad().start()
        for index, study in enumerate(studies):
            spec = old_tree / "experiments" / f"{study}.toml"  # the baseline's grid, run both ways
            if not spec.is_file():
                errors.append(f"{study}: the baseline has no experiments/{study}.toml")
                continue
            order = ("old", "new") if index % 2 == 0 else ("new", "old")
            failed = False
            for way in order:
                tree, way_env = (old_tree, old_env) if way == "old" else (ROOT, new_env)
                log(f"  compare: {study} ({way}: {label if way == 'old' else 'this checkout'})")
                wall, error = _sweep(tree, spec, tmp / way / study, way_env)
                seconds[way][study] = wall
                if error:
                    errors.append(f"{study} ({way}) {error}")
                    failed = True
            if not failed:
                timed.append(study)  # both sweeps ran; rows that do not match (below) take it out again
            if any(not (tmp / way / study / "runs.csv").is_file() for way in ("old", "new")):
                continue  # the error says why
            old, new = _read(tmp / "old" / study / "runs.csv"), _read(tmp / "new" / study / "runs.csv")
            if old.keys() != new.keys():
                errors.append(f"{study}: the two runs have different (cell, repeat) rows")
                if not failed:
                    timed.remove(study)
            for key in old.keys() & new.keys():
                compared += 1
                for column, value in old[key].items():
                    if column not in MEASURED and new[key].get(column) != value:
                        differing[column] = differing.get(column, 0) + 1
            rows["old"] += list(old.values())
            rows["new"] += list(new.values())
        foreign = load.cores()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    old_total, new_total = sum(seconds["old"][s] for s in timed), sum(seconds["new"][s] for s in timed)
    return {"baseline": label, "studies": studies, "timed": tuple(timed), "seconds": seconds, "old_seconds": old_total,
            "new_seconds": new_total, "ratio": new_total / old_total if old_total else float("nan"),
            "rows_compared": compared,
            "differing_columns": differing, "agreement": {w: _agreement(rows[w]) for w in rows},
            "foreign_cores": foreign, "errors": errors}


def agreement_no_worse(result: dict[str, Any]) -> bool:
    """Each probe's median |error| against the ledger, this checkout's at most the baseline's (+0.5 percentage point:
    the run-to-run spread of the sampled probes)."""
    old, new = result["agreement"]["old"], result["agreement"]["new"]
    return all(new[p][0] <= old[p][0] + 0.005 for p, _ in PROBES if old[p][2] and new[p][2])


def rows(make_row: Callable[..., dict[str, Any]], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """benchmarks.run's rows: the wall-time ratio (target <= 0.5), with what was compared in its note."""
    result = compare(log=log)
    return [make_row("study_seconds_new_vs_old", result["ratio"], "ratio", measured=result["new_seconds"],
                     reference=result["old_seconds"], measured_label="this checkout's sweeps s",
                     reference_label=f"{result['baseline']} sweeps s", foreign_cores=result["foreign_cores"],
                     status="failed" if result["errors"] else "ok", note=summary(result))]


def summary(result: dict[str, Any]) -> str:
    same = ("every ledger and predicted column identical" if not result["differing_columns"]
            else "columns differing: " + ", ".join(f"{c} ({n} rows)" for c, n in result["differing_columns"].items()))
    agree = "; ".join(
        f"{p} median |error| {result['agreement']['old'][p][0]:.2%} -> {result['agreement']['new'][p][0]:.2%}"
        for p, _ in PROBES)
    verdict = "no worse" if agreement_no_worse(result) else "WORSE"
    return (f"{len(result['timed'])} studies timed both ways ({', '.join(result['timed'])}; each the baseline's "
            f"experiments/NAME.toml), {result['rows_compared']} rows, "
            f"side by side; {same}; probes vs ledger (steps >= 1 MiB): {agree} ({verdict})"
            + (f"; errors: {' | '.join(result['errors'])}" if result["errors"] else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=None, help="a commit (default: git merge-base HEAD main, or on main "
                        "SPEED_BASELINE), or exec")
    parser.add_argument("--studies", default=",".join(STUDIES), help=f"experiments/NAME.toml to run ({','.join(STUDIES)})")
    args = parser.parse_args(argv)
    studies = tuple(s.strip() for s in args.studies.split(",") if s.strip())
    result = compare(studies, args.baseline, log=lambda message: print(message, file=sys.stderr, flush=True))
    for study in result["timed"]:
        print(f"{study}: {result['seconds']['old'][study]:.1f} s -> {result['seconds']['new'][study]:.1f} s")
    print(f"study_seconds_new_vs_old: {result['ratio']:.3f} ({result['new_seconds']:.1f} s / "
          f"{result['old_seconds']:.1f} s; target <= {TARGET_RATIO}; baseline {result['baseline']}; others' load "
          f"{result['foreign_cores'] if result['foreign_cores'] is None else round(result['foreign_cores'], 2)} cores)")
    print(summary(result))
    return 1 if result["errors"] or result["differing_columns"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

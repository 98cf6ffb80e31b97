"""`python -m benchmarks.study_speed`: the first command a newcomer runs, `make study`, on a fresh clone, install
included (issue 28 item 6: at most 90 s).

The committed tree (HEAD of this checkout, `git clone`d into a temporary folder: uncommitted changes are not
timed) gets `make .venv/.installed` (a fresh venv and `pip install -e .`), then `make study` (the default study
measured afresh, the example step, the README's figures), each timed; the row's value is their sum, what a
single `make study` on the fresh clone takes. pip takes its wheels from its cache and this machine's indexes as
it is set up here: a first install that downloads them takes longer.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .load import ForeignLoad

ROOT = Path(__file__).resolve().parents[1]
FIGURE = "make_study_fresh_clone_seconds"
TARGET_SECONDS = 90.0


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of `command`, and '' or its failure in one line."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return seconds, ""
    last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1]
    return seconds, f"`{' '.join(command)}` exited {done.returncode}: {last}"


def measure(root: Path = ROOT, python: str = sys.executable, log: Callable[[str], None] = lambda m: None) \
        -> dict[str, Any]:
    """Clone `root`, then time the install and the study there; the clone is removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="memstudy-bench-clone-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    # the venv is made by the Python that runs the benchmark, as a newcomer's `python3` would (PYTHON ?= python3)
    base = Path(getattr(sys, "_base_executable", python) or python)
    try:
        clone = tmp / "memstudy"
        subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True, capture_output=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True).stdout.strip()
        load = ForeignLoad().start()
        log(f"  newcomer: make .venv/.installed in a fresh clone of {commit} ({clone})")
        install_seconds, error = _run(["make", ".venv/.installed", f"PYTHON={base}"], clone, env)
        study_seconds = 0.0
        if not error:
            log("  newcomer: make study")
            study_seconds, error = _run(["make", "study", f"PYTHON={base}"], clone, env)
        foreign = load.cores()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"install_seconds": install_seconds, "study_seconds": study_seconds, "commit": commit,
            "seconds": install_seconds + study_seconds, "foreign_cores": foreign, "error": error}


def rows(make_row: Callable[..., dict[str, Any]], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The benchmark's row (benchmarks.run's `make_row`)."""
    result = measure(log=log)
    missed = "" if result["seconds"] <= TARGET_SECONDS else \
        f"; {result['seconds'] - TARGET_SECONDS:.1f} s over the target"
    return [make_row(FIGURE, result["seconds"], "s", measured=result["install_seconds"],
                     reference=result["study_seconds"], measured_label="make .venv/.installed s",
                     reference_label="make study s", foreign_cores=result["foreign_cores"],
                     status="failed" if result["error"] else "ok",
                     note=f"git clone of {result['commit']}, then make study (pip install -e ., the default study, "
                          f"the example, the README's figures); pip's wheels from its cache{missed}"
                          + (f"; {result['error']}" if result["error"] else ""))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study_speed", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    result = measure(log=lambda message: print(message, file=sys.stderr, flush=True))
    print(f"{FIGURE}: {result['seconds']:.1f} s (install {result['install_seconds']:.1f} s + make study "
          f"{result['study_seconds']:.1f} s; target {TARGET_SECONDS:g} s; others' load "
          f"{result['foreign_cores'] if result['foreign_cores'] is None else round(result['foreign_cores'], 2)} cores)"
          + (f"; FAILED: {result['error']}" if result["error"] else ""))
    return 1 if result["error"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

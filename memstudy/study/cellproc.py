"""Run one cell in a fresh Python process and collect its rows.

A fresh process per cell gives every measurement a clean baseline and an honest VmHWM. The child gets
MALLOC_MMAP_THRESHOLD_=65536 unless the caller set it: glibc then serves every buffer of 64 KiB or more
with its own mmap and returns it on free, so RSS follows live memory instead of glibc's adaptive
threshold (which rises after a large free and keeps later buffers resident).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
MMAP_THRESHOLD_BYTES = "65536"
CELL_COMMAND = (sys.executable, "-m", "memstudy.study.cell")


@dataclass
class CellResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""  # empty when the cell succeeded


def cell_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a cell process gets: ours, plus the allocator setting, plus memstudy importable."""
    from .provenance import project_root

    env = dict(os.environ if base is None else base)
    env.setdefault(MMAP_THRESHOLD_ENV, MMAP_THRESHOLD_BYTES)
    root = str(project_root())
    paths = env.get("PYTHONPATH", "")
    if root not in paths.split(os.pathsep):
        env["PYTHONPATH"] = root + (os.pathsep + paths if paths else "")
    return env


def run_cell(request: dict[str, Any], timeout_seconds: float | None = None,
             command: tuple[str, ...] | list[str] | None = None) -> CellResult:
    """Send `request` (config + repeats [+ timeline_path, by_layer]) to a cell process; rows or a reason."""
    try:
        done = subprocess.run(
            list(command or CELL_COMMAND), input=json.dumps(request), capture_output=True, text=True,
            env=cell_environment(), timeout=timeout_seconds,
        )
    except subprocess.TimeoutExpired:
        return CellResult(error=f"timed out after {timeout_seconds:g} s")
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        if done.returncode < 0:
            reason = f"killed by signal {-done.returncode}"
        else:
            reason = lines[-1] if lines else f"exit status {done.returncode}"
        return CellResult(error=reason)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return CellResult(rows=rows)

"""Where a result came from: versions, machine, BLAS, git commit, spec hash, measurement-relevant env vars.

`collect_env` imports neither pandas nor matplotlib (their versions are read from package metadata).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Environment variables that change what a cell measures (allocator behaviour, thread pools).
ENV_PREFIXES = ("MALLOC_",)
ENV_NAMES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS", "PYTHONMALLOC", "PYTHONTRACEMALLOC", "LD_PRELOAD",
)

PACKAGES = ("numpy", "psutil", "memory_profiler", "tqdm", "pandas", "matplotlib", "threadpoolctl")


def measurement_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The subset of `environ` (default os.environ) that changes measurements, sorted by name."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(environ) if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}


def project_root() -> Path:
    """The folder that holds the memstudy package (the checkout, for an editable install)."""
    return Path(__file__).resolve().parents[len(__name__.split(".")) - 1]  # memstudy/run/results/provenance.py


GIT_CHANGED_LIMIT = 50  # paths kept in env.json: enough to see what kind of change it was


def git_info(root: Path | None = None) -> dict[str, Any]:
    """Commit, dirty flag and the changed paths (tracked files only, at most GIT_CHANGED_LIMIT) of the checkout
    memstudy is imported from, if any. The paths tell a results-only change (a run that wrote into the tree before
    another read it, as `make bench` does) from changed code."""
    root = project_root() if root is None else root

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "changed": None}
    changed = run("diff", "--name-only", "HEAD")  # tracked files, staged or not, against the commit
    if changed is None:
        return {"commit": commit, "dirty": None, "changed": None}
    paths = changed.splitlines()
    return {"commit": commit, "dirty": bool(paths), "changed": paths[:GIT_CHANGED_LIMIT]}


def usable_cores() -> int | None:
    """Cores this process may run on (its CPU affinity), or None where the OS has no affinity."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return None


def blas_info() -> dict[str, Any]:
    """BLAS/LAPACK in use: threadpoolctl's runtime view if installed, else numpy's build configuration."""
    try:
        import threadpoolctl

        return {"source": "threadpoolctl", "libraries": threadpoolctl.threadpool_info()}
    except ImportError:
        pass
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.25 has no mode="dicts"
        return {"source": "unavailable", "libraries": []}
    deps = (config or {}).get("Build Dependencies", {})
    return {"source": "numpy.show_config", "libraries": {k: v for k, v in deps.items() if k in ("blas", "lapack")}}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def model_source(model: str | None) -> dict[str, str] | None:
    """The file a model family's code comes from, and its hash (sha256 of the bytes, the first 16 hex digits): the
    user's file a `path/to/file.py:Class` model names, or a built-in family's module (its path shown from the
    project's root). None when `model` names no such file (a notebook's model, a family that cannot load).

    Only that one file: what it imports (memstudy itself, or the user's other modules) is the git commit's and the
    user's business."""
    from ...nn.models.registry import DEFAULT_FAMILY, ConfigError, get_family

    name = model or DEFAULT_FAMILY
    path_text = name.rpartition(":")[0]
    if path_text.endswith(".py"):
        path = shown = Path(path_text)
    else:
        try:
            family = get_family(name)
        except ConfigError:
            return None
        file = getattr(sys.modules.get(type(family).__module__), "__file__", None)
        if file is None:
            return None
        path = Path(file).resolve()
        root = project_root()
        shown = path.relative_to(root) if path.is_relative_to(root) else path
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None
    return {"path": str(shown), "sha256": digest}


def spec_record(spec: Any) -> dict[str, Any]:
    """The spec as env.json records it (the resume check reads `name` and `grid` back)."""
    return {
        "name": spec.name, "description": spec.description, "path": str(spec.path) if spec.path else None,
        "hash": spec.hash, "grid": {k: list(v) for k, v in spec.grid.items()}, "repeats": spec.repeats,
        "budget": spec.budget, "timeout_seconds": spec.timeout_seconds, "cells": len(spec.cells()),
        "measure": getattr(spec, "measure", True),
    }


def collect_env(spec: Any = None, *, cell_environment: dict[str, str] | None = None,
                extra: dict[str, Any] | None = None, git: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a reader needs to know where the numbers came from (JSON-serialisable).

    `git`: the checkout's state read earlier (`git_info()`), e.g. before a `--fresh` sweep deleted tracked
    result files, which would otherwise read as uncommitted changes."""
    import numpy as np
    import psutil

    from ...version import __version__

    affinity = usable_cores()
    memory = psutil.virtual_memory()
    env: dict[str, Any] = {
        "memstudy_version": __version__,
        "git": git if git is not None else git_info(),
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": {name: _version(name) for name in PACKAGES},
        "numpy": {"version": np.__version__, "blas": blas_info()},
        "machine": {
            "cpu_model": cpu_model(), "architecture": platform.machine(),
            "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "usable_cores": affinity, "total_memory_bytes": memory.total,
            "available_memory_bytes": memory.available,
        },
        "os": {"system": platform.system(), "release": platform.release(), "platform": platform.platform()},
        "environment": measurement_env(),
        "cell_environment": measurement_env(cell_environment) if cell_environment is not None else None,
    }
    if spec is not None:
        env["spec"] = spec_record(spec)
    if extra:
        env.update(extra)
    return env


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), pretty and stable for diffs."""
    from .folder import write_text_atomically

    return write_text_atomically(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_env(results_dir: Path) -> dict[str, Any] | None:
    path = Path(results_dir) / "env.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None

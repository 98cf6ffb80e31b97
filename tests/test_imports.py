"""The engine, models and optimisers import without pandas or matplotlib (cell processes start fast)."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "matplotlib")


def modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_engine_nn_optim_do_not_import_pandas_or_matplotlib():
    modules = modules_after("import memstudy.autograd, memstudy.nn, memstudy.optim")
    assert "memstudy.autograd" in modules and "memstudy.nn" in modules and "memstudy.optim" in modules
    assert heavy(modules) == []


def test_the_check_can_see_a_heavy_import():
    # the probe works: importing pandas does show up (skipped where pandas is not installed)
    modules = modules_after("import memstudy.autograd\ntry:\n    import pandas\nexcept ImportError:\n    pass")
    try:
        import importlib.util
        has_pandas = importlib.util.find_spec("pandas") is not None
    except ValueError:
        has_pandas = False
    if has_pandas:
        assert "pandas" in heavy(modules)


def test_the_runs_text_and_page_do_not_import_pandas_or_matplotlib():
    # `memstudy run` prints its tables and writes its page without the report's data-frame half
    modules = modules_after("import memstudy.report.terminal, memstudy.report.run_page")
    assert "memstudy.report.terminal" in modules and heavy(modules) == []

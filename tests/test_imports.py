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


def third_party(modules: list[str]) -> list[str]:
    """Top-level packages that are neither the standard library nor memstudy."""
    return sorted({m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"memstudy", "__main__"})


def test_import_memstudy_loads_numpy_only():
    modules = modules_after("import memstudy")
    assert "memstudy.autograd" in modules
    at_start = third_party(modules_after("pass"))  # what site-packages' .pth files load in every interpreter
    assert [m for m in third_party(modules) if m not in at_start] == ["numpy"]


def test_a_cell_process_and_the_run_package_import_no_pandas_or_matplotlib():
    # what a cell process imports (python -m memstudy.measure.cell) and every module of the orchestration; the
    # Dask executor's own module loads dask, which is the worker's business, but nothing of ours on top of it
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = sorted(".".join(p.relative_to(root).with_suffix("").parts) for p in (root / "memstudy" / "run").rglob("*.py")
                 if p.name != "__init__.py" and p.stem != "dask")
    modules = modules_after("import memstudy.measure.cell\n" + "\n".join(f"import {m}" for m in run))
    assert "memstudy.measure.cell" in modules and "memstudy.run.sweep" in modules
    assert heavy(modules) == []


def test_no_module_under_run_or_measure_names_pandas_or_matplotlib():
    # read, not imported: an import inside a function would only show when that function runs
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "memstudy"
    found = []
    for path in [*(root / "run").rglob("*.py"), *(root / "measure").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert found == []

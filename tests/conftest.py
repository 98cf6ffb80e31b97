"""Suite-wide: keep the garbage collector's full collections cheap.

`Workload.reset` runs gc.collect() before every measured step, as a cell does. A full collection scans every
tracked object, and a test process that has imported torch, transformers, pandas and hypothesis and run a few
hundred tests holds millions: each collection then took ~0.3 s instead of ~8 ms, and test_predict's 620 cases
took 199 s in the suite against 38 s alone. What is alive once the tests are collected, and what a module leaves
alive when it ends (module-level caches, imports), stays alive: frozen (gc.freeze), the collections skip it, as
the cell does with its imports (memstudy/measure/cell.py). Frozen objects are still freed by reference counting;
only a reference cycle among them would be kept until the process ends.
"""
from __future__ import annotations

import gc

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="module")
def _freeze_what_the_module_leaves():
    yield
    gc.collect()
    gc.freeze()

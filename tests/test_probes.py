"""Tests of memstudy.measure.probes.

Measurements run in a fresh subprocess started with MALLOC_MMAP_THRESHOLD_=65536, so that RSS
follows live memory. Each subprocess runs a small script that prints one JSON object.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from pathlib import Path

import pytest

from memstudy.measure import probes

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBES_PATH = REPO_ROOT / "memstudy" / "measure" / "probes.py"
ARRAY_BYTES = 8 * 1024 * 1024  # np.ones(1 << 20) of float64

# Prelude of every measuring script: an 8 MiB step (np.ones touches every page), held, then freed.
PRELUDE = """
import json, sys, time, warnings
import numpy as np
from memstudy.measure import probes

def alloc_step(hold_seconds=0.05):
    a = np.ones(1 << 20)
    time.sleep(hold_seconds)
    del a

def nothing_step():
    pass

def emit(**fields):
    print(json.dumps(fields))
"""


def run_fresh(body: str, timeout_seconds: float = 30) -> dict:
    """Run PRELUDE + body in a fresh interpreter under MALLOC_MMAP_THRESHOLD_=65536; return its JSON."""
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def within(value: float, expected: float, rel: float) -> bool:
    return abs(value - expected) <= rel * expected


# --- measurements of an 8 MiB step, each in a fresh process ----------------------------------------

def test_tracemalloc_matches_array_bytes():
    out = run_fresh("""
        emit(peak=probes.tracemalloc_step_peak_bytes(alloc_step))
    """)
    assert within(out["peak"], ARRAY_BYTES, 0.02), out


def test_rss_vmhwm_matches_array_bytes():
    out = run_fresh("""
        if not probes.vmhwm_resettable():
            emit(skip=True)
        else:
            peak, method = probes.rss_step_peak_bytes(alloc_step)
            emit(skip=False, peak=peak, method=method)
    """)
    if out["skip"]:
        pytest.skip("/proc/self/clear_refs is not writable here: no VmHWM reset")
    assert out["method"] == "vmhwm"
    assert within(out["peak"], ARRAY_BYTES, 0.15), out


def test_rss_sampled_fallback_matches_array_bytes():
    out = run_fresh("""
        probes.vmhwm_resettable = lambda: False
        peak, method = probes.rss_step_peak_bytes(alloc_step)
        emit(peak=peak, method=method)
    """)
    assert out["method"] == "sampled"
    assert within(out["peak"], ARRAY_BYTES, 0.15), out


def test_mprof_matches_array_bytes():
    out = run_fresh("""
        calls = []
        def counted_step():
            calls.append(1)
            alloc_step(0.2)
        emit(peak=probes.mprof_step_peak_bytes(counted_step), calls=len(calls))
    """)
    assert out["calls"] == 1, out
    assert within(out["peak"], ARRAY_BYTES, 0.30), out


def test_nothing_step_measures_near_zero():
    out = run_fresh("""
        traced = probes.tracemalloc_step_peak_bytes(nothing_step)
        rss, method = probes.rss_step_peak_bytes(nothing_step)
        calls = []
        mprof = probes.mprof_step_peak_bytes(lambda: calls.append(1))
        emit(traced=traced, rss=rss, method=method, mprof=mprof, mprof_calls=len(calls))
    """)
    assert 0 <= out["traced"] < 64 * 1024, out
    assert out["rss"] is not None and abs(out["rss"]) < 1024 * 1024, out
    assert 0 <= out["mprof"] < 1024 * 1024, out
    assert out["mprof_calls"] == 1, out  # memory_profiler would rerun a short step without max_iterations


# --- state is restored when step raises ----------------------------------------------------------

def test_raising_step_propagates_and_restores_state():
    out = run_fresh("""
        import threading, tracemalloc, psutil

        class Boom(Exception):
            pass

        def boom():
            _ = np.ones(1 << 16)
            raise Boom("step failed")

        results = {}
        threads_before = threading.active_count()
        for name, probe in [
            ("tracemalloc", probes.tracemalloc_step_peak_bytes),
            ("rss", probes.rss_step_peak_bytes),
            ("mprof", probes.mprof_step_peak_bytes),
        ]:
            try:
                probe(boom)
                results[name] = "no exception"
            except Boom:
                results[name] = "propagated"
        probes.vmhwm_resettable = lambda: False
        try:
            probes.rss_step_peak_bytes(boom)
            results["rss_sampled"] = "no exception"
        except Boom:
            results["rss_sampled"] = "propagated"

        # tracemalloc already tracing: the probe must leave it tracing.
        tracemalloc.start()
        try:
            probes.tracemalloc_step_peak_bytes(boom)
        except Boom:
            pass
        still_tracing = tracemalloc.is_tracing()
        tracemalloc.stop()

        time.sleep(0.05)
        import multiprocessing
        multiprocessing.active_children()
        emit(
            results=results,
            tracing_after=tracemalloc.is_tracing(),
            still_tracing=still_tracing,
            threads_before=threads_before,
            threads_after=threading.active_count(),
            live_children=[c.pid for c in psutil.Process().children(recursive=True) if c.status() != "zombie"],
        )
    """)
    assert out["results"] == {
        "tracemalloc": "propagated",
        "rss": "propagated",
        "mprof": "propagated",
        "rss_sampled": "propagated",
    }, out
    assert out["tracing_after"] is False
    assert out["still_tracing"] is True
    assert out["threads_after"] == out["threads_before"], out
    assert out["live_children"] == [], out


# --- in-process checks: no measuring, so no fresh process needed ------------------------------------

def test_module_imports_no_pandas_matplotlib_or_memory_profiler():
    # Load probes.py by path, without memstudy's package __init__, so that only this module is judged.
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("probes_alone", {str(PROBES_PATH)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(json.dumps([m for m in ("pandas", "matplotlib", "memory_profiler") if m in sys.modules]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_readings():
    rss = probes.rss_bytes()
    assert isinstance(rss, int) and rss > 0
    hwm = probes.hwm_bytes()
    assert isinstance(probes.vmhwm_resettable(), bool)
    if sys.platform.startswith("linux"):
        assert isinstance(hwm, int) and hwm >= rss // 2  # both approximate; HWM ~>= RSS
    else:
        assert hwm is None
    assert issubclass(probes.ProbeUnavailable, UserWarning)


def test_mprof_unavailable_warns(monkeypatch):
    monkeypatch.setitem(sys.modules, "memory_profiler", None)  # makes `import memory_profiler` fail
    calls = []
    with pytest.warns(probes.ProbeUnavailable):
        assert probes.mprof_step_peak_bytes(lambda: calls.append(1)) is None
    assert calls == []


def test_tracemalloc_unavailable_warns(monkeypatch):
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in the test process")

    def refuse(*args, **kwargs):
        raise RuntimeError("no tracemalloc here")

    monkeypatch.setattr(probes.tracemalloc, "start", refuse)
    with pytest.warns(probes.ProbeUnavailable):
        assert probes.tracemalloc_step_peak_bytes(lambda: None) is None


def test_rss_unavailable_warns(monkeypatch):
    def no_psutil():
        raise ImportError("no psutil here")

    monkeypatch.setattr(probes, "vmhwm_resettable", lambda: False)
    monkeypatch.setattr(probes, "_psutil_process", no_psutil)
    calls = []
    with pytest.warns(probes.ProbeUnavailable):
        assert probes.rss_step_peak_bytes(lambda: calls.append(1)) == (None, "unavailable")
    assert calls == []


def test_no_warning_when_available():
    with warnings.catch_warnings():
        warnings.simplefilter("error", probes.ProbeUnavailable)
        assert probes.tracemalloc_step_peak_bytes(lambda: None) is not None

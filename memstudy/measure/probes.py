"""Independent probes of the memory peak of one call ``step()``.

Each probe runs a zero-argument callable once and reports how far memory rose above a baseline taken
just before the call (the README's "How the probes agree"). The probes are independent of the
ledger, and of each other:

- :func:`tracemalloc_step_peak_bytes`: Python's allocation tracer. numpy reports its array buffers to
  tracemalloc, so this peak matches the ``nbytes`` of live arrays closely (~100 B per array). No
  page rounding, and allocator caching plays no part.
- :func:`rss_step_peak_bytes`: the operating system's view (resident set size). On Linux it resets
  the kernel's RSS high-water mark (VmHWM) and reads it back after the step. This is not sampled,
  so no spike is missed, but it can read a few hundred KB low (see :func:`rss_step_peak_bytes`).
  Elsewhere it falls back to a psutil thread that samples RSS about every millisecond.
  RSS is page-granular, and the allocator may keep freed memory resident. Under glibc, set
  ``MALLOC_MMAP_THRESHOLD_=65536`` in the environment before the process starts, so that RSS
  follows live memory.
- :func:`mprof_step_peak_bytes`: ``memory_profiler.memory_usage``, which samples RSS from a
  separate (forked) process and misses spikes shorter than its interval.

When a probe can't run here, it warns with :class:`ProbeUnavailable` and returns ``None``. Every
probe leaves state as it found it, even if ``step`` raises; the exception is then re-raised. State
here means tracemalloc tracing status, sampler threads and monitor processes.

This module imports neither pandas nor matplotlib. It imports ``memory_profiler`` only inside
:func:`mprof_step_peak_bytes`.
"""
from __future__ import annotations

import inspect
import os
import re
import threading
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

__all__ = [
    "ProbeUnavailable",
    "tracemalloc_step_peak_bytes",
    "rss_step_peak_bytes",
    "mprof_step_peak_bytes",
    "rss_and_mprof_step_peak_bytes",
    "hwm_bytes",
    "vm_peak_bytes",
    "rss_bytes",
    "vmhwm_resettable",
]

_PROC_STATUS = "/proc/self/status"
_PROC_CLEAR_REFS = "/proc/self/clear_refs"
#: Writing this to /proc/self/clear_refs resets the process's VmHWM to its current RSS (Linux >= 4.0).
_CLEAR_REFS_RESET_HWM = "5"
_MIB_BYTES = 1 << 20
_SAMPLE_INTERVAL_SECONDS = 0.001

Step = Callable[[], Any]


class ProbeUnavailable(UserWarning):
    """Warning: this probe can't measure in this environment, so its result is None ("unavailable")."""


def _warn(message: str) -> None:
    warnings.warn(message, ProbeUnavailable, stacklevel=3)


# --------------------------------------------------------------------------------------------------
# Plain readings
# --------------------------------------------------------------------------------------------------

def _status_field_bytes(field: str) -> int | None:
    """Return a ``kB`` field of /proc/self/status (such as "VmHWM" or "VmRSS") in bytes.

    Returns None if the file or the field isn't there.
    """
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s*(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _psutil_process():
    """Return a ``psutil.Process`` for this process. ImportError if psutil is missing."""
    import psutil  # declared dependency; imported here so a missing psutil fails only this probe

    return psutil.Process(os.getpid())


def vm_peak_bytes() -> int | None:
    """Return the process's address-space high-water mark (VmPeak), in bytes: what an RLIMIT_AS is compared
    against. It counts every mapping (libraries, thread stacks, allocator arenas), resident or not.

    Returns None where /proc/self/status has no VmPeak (not Linux).
    """
    return _status_field_bytes("VmPeak")


def hwm_bytes() -> int | None:
    """Return the process's current RSS high-water mark (VmHWM), in bytes.

    Returns None if /proc/self/status or its VmHWM field is unavailable, as on non-Linux systems.

    Note: :func:`rss_step_peak_bytes` resets VmHWM. On Linux that also resets ``ru_maxrss`` of
    ``getrusage(RUSAGE_SELF)``, and the ``ru_maxrss`` a parent later sees for this child. To keep
    the high-water mark of the whole process lifetime, read it before the first RSS probe.
    """
    return _status_field_bytes("VmHWM")


def rss_bytes() -> int:
    """Return the process's current resident set size, in bytes.

    Uses psutil, or VmRSS from /proc/self/status if psutil is missing. Raises OSError if neither
    can be read.
    """
    try:
        return int(_psutil_process().memory_info().rss)
    except Exception:  # psutil missing, or access denied
        value = _status_field_bytes("VmRSS")
        if value is None:
            raise OSError("cannot read the resident set size (no psutil, no /proc/self/status)")
        return value


def vmhwm_resettable() -> bool:
    """Return whether the exact RSS peak (method "vmhwm") can be used here.

    That needs /proc/self/status to have a VmHWM field and /proc/self/clear_refs to be writable.
    The check opens clear_refs for writing but writes nothing, so it has no side effect.
    """
    if _status_field_bytes("VmHWM") is None:
        return False
    try:
        with open(_PROC_CLEAR_REFS, "w"):
            pass
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# tracemalloc
# --------------------------------------------------------------------------------------------------

def tracemalloc_step_peak_bytes(step: Step) -> int | None:
    """Return how far traced memory peaked during ``step()`` above its value just before, in bytes.

    If tracemalloc is not tracing yet, this function starts it and stops it afterwards. If it is
    already tracing, tracing continues, but its peak is reset: a caller's
    ``tracemalloc.get_traced_memory()[1]`` then covers only the time since this call. Only
    allocations made while tracing count, so a step that frees memory allocated before tracing
    began doesn't lower the baseline.

    Returns None and warns with :class:`ProbeUnavailable` if tracemalloc can't be started.
    Exceptions from ``step`` propagate, and tracemalloc is left as it was found.
    """
    started_here = False
    if not tracemalloc.is_tracing():
        try:
            tracemalloc.start()
        except Exception as exc:  # e.g. a runtime without tracemalloc support
            _warn(f"tracemalloc probe unavailable: {exc!r}")
            return None
        started_here = True
    try:
        tracemalloc.reset_peak()
        baseline_bytes, _ = tracemalloc.get_traced_memory()
        step()
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        if started_here:
            tracemalloc.stop()
    return peak_bytes - baseline_bytes


# --------------------------------------------------------------------------------------------------
# RSS: exact (VmHWM reset) or sampled
# --------------------------------------------------------------------------------------------------

def _reset_vmhwm() -> bool:
    try:
        with open(_PROC_CLEAR_REFS, "w") as f:
            f.write(_CLEAR_REFS_RESET_HWM)
    except OSError:
        return False
    return True


class _RssSampler:
    """Thread that records the maximum RSS (bytes), read every ``interval_seconds``."""

    def __init__(self, interval_seconds: float = _SAMPLE_INTERVAL_SECONDS) -> None:
        self._process = _psutil_process()  # raises if psutil is unavailable
        self._interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._first_sample = threading.Event()
        self.max_bytes = self.sample()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="memstudy-rss-sampler", daemon=True)

    def sample(self) -> int:
        return int(self._process.memory_info().rss)

    def _run(self) -> None:
        try:
            while True:
                self.max_bytes = max(self.max_bytes, self.sample())
                self._first_sample.set()
                if self._stop.wait(self._interval_seconds):
                    break
        except BaseException as exc:  # surfaced by the probe, never silently lost
            self.error = exc
        finally:
            self._first_sample.set()

    def start(self) -> None:
        self._thread.start()
        self._first_sample.wait()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _rss_sampled(step: Step) -> int | None:
    try:
        sampler = _RssSampler()
    except Exception as exc:
        _warn(f"sampled RSS probe unavailable: {exc!r}")
        return None
    sampler.start()
    try:
        # Baseline after the thread runs, so that its stack pages aren't counted as the step's.
        baseline_bytes = sampler.sample()
        step()
    finally:
        sampler.stop()
    if sampler.error is not None:
        _warn(f"sampled RSS probe failed: {sampler.error!r}")
        return None
    peak_bytes = max(sampler.max_bytes, sampler.sample())
    return peak_bytes - baseline_bytes


def rss_step_peak_bytes(step: Step) -> tuple[int | None, str]:
    """Return ``(how far RSS peaked during step() above its value just before, in bytes, method)``.

    Methods:

    - ``"vmhwm"`` (Linux, when :func:`vmhwm_resettable` is true): baseline = VmRSS from
      /proc/self/status; then ``5`` is written to /proc/self/clear_refs, which resets VmHWM to the
      current RSS; then ``step()`` runs; then peak = VmHWM. There is no sampling, so no spike is
      missed. But the kernel updates the high-water mark from its batched per-CPU RSS counters,
      so it can read low by a bounded number of pages. Measured on Linux 6.18 with 2 CPUs: 8 MiB
      read as 8.11-8.31 MB, 1-3 % low, while VmRSS read during the step was exact. Side effect: this process's lifetime VmHWM is lost, and with it ``ru_maxrss``
      (RUSAGE_SELF, and what a parent sees for this child after it exits). Read :func:`hwm_bytes`
      first if you need it.
    - ``"sampled"``: baseline = RSS just before the step; a psutil thread reads RSS about every
      millisecond during ``step()``; result = maximum sample minus baseline. This can miss
      spikes shorter than the interval. The sampler needs the GIL, so it also misses spikes inside
      long stretches of pure-Python code.
    - ``"unavailable"``: neither method works. Result is None, with a :class:`ProbeUnavailable`
      warning.

    RSS is page-granular and includes the allocator's cache: under glibc, the process must run
    with ``MALLOC_MMAP_THRESHOLD_=65536`` for freed buffers to leave RSS. The result can be
    negative if ``step()`` releases memory that was resident before it ran.

    Exceptions from ``step`` propagate; the sampler thread, if any, is stopped first.
    """
    if vmhwm_resettable():
        baseline_bytes = _status_field_bytes("VmRSS")
        if baseline_bytes is not None and _reset_vmhwm():
            step()
            peak_bytes = _status_field_bytes("VmHWM")
            if peak_bytes is not None:
                return peak_bytes - baseline_bytes, "vmhwm"
            # VmHWM vanished after the step: unlikely, and the step has already run, so report none.
            _warn("VmHWM could not be read after the step")
            return None, "unavailable"
    result = _rss_sampled(step)
    if result is None:
        return None, "unavailable"
    return result, "sampled"


# --------------------------------------------------------------------------------------------------
# memory_profiler
# --------------------------------------------------------------------------------------------------

def _max_usage_mib(value: Any) -> float:
    """Return memory_usage(max_usage=True) as one number in MiB.

    memory_profiler 0.61 returns a float; some older versions return a one-element list.
    """
    if isinstance(value, (list, tuple)):
        numbers = [v for v in value if isinstance(v, (int, float))]
        if not numbers:
            raise TypeError(f"unexpected memory_usage result: {value!r}")
        return float(max(numbers))
    return float(value)


def mprof_step_peak_bytes(step: Step, interval_seconds: float = 0.001) -> int | None:
    """Return how far memory_profiler saw RSS peak during ``step()`` above RSS just before, in bytes.

    Calls ``memory_profiler.memory_usage((step, (), {}), max_usage=True, interval=interval_seconds,
    max_iterations=1)``. memory_profiler forks a monitor process that samples this process's RSS
    (psutil) every ``interval_seconds``, so spikes shorter than that can be missed. Its maximum
    includes a reading taken just before ``step`` starts. The result is clamped at 0: a step that
    frees memory reads as 0, never as a negative number. memory_profiler reports MiB (a float);
    the result is converted to bytes.

    The first call in a process also runs memory_usage once on a no-op, before the baseline, so
    that memory_profiler's own first-use imports (about 1.2 MB) aren't counted.

    ``max_iterations=1`` is passed, where supported, so that ``step`` runs exactly once. Without
    it, memory_profiler reruns a function with a ten times shorter interval whenever it collected
    4 or fewer samples.

    Returns None and warns with :class:`ProbeUnavailable` if memory_profiler can't be imported or
    run. Exceptions from ``step`` are held back from memory_profiler, so that its monitor process
    stops normally and its error path, which SIGKILLs every child process of this process, is never
    taken. They are re-raised once memory_profiler has returned.
    """
    try:
        import memory_profiler
    except Exception as exc:
        _warn(f"memory_profiler probe unavailable: {exc!r}")
        return None

    raised: list[BaseException] = []

    def guarded_step() -> None:
        try:
            step()
        except BaseException as exc:
            raised.append(exc)

    kwargs = _mprof_kwargs(memory_profiler, interval_seconds)
    _warm_up_mprof(memory_profiler, kwargs)
    baseline_bytes = rss_bytes()
    try:
        usage = memory_profiler.memory_usage((guarded_step, (), {}), **kwargs)
    except Exception as exc:
        if raised:
            raise raised[0] from None
        _warn(f"memory_profiler probe failed: {exc!r}")
        return None
    finally:
        _reap_finished_children()
    if raised:
        raise raised[0]
    peak_bytes = int(round(_max_usage_mib(usage) * _MIB_BYTES))
    return max(peak_bytes - baseline_bytes, 0)


def rss_and_mprof_step_peak_bytes(step: Step, reset: Callable[[], Any] = lambda: None) \
        -> tuple[int | None, str, int | None]:
    """Return ``(rss bytes, rss method, memory_profiler bytes)`` of one ``step()`` that both probes watch.

    Where the exact RSS peak is available (method "vmhwm": the kernel's high-water mark, no thread of ours), the
    VmHWM window of :func:`rss_step_peak_bytes` is opened around :func:`mprof_step_peak_bytes`: memory_profiler's
    monitor is another process that only reads our RSS, so neither probe disturbs the other, and one step serves
    both. memory_profiler's one-time warm-up runs first, outside the window. What memory_profiler itself allocates
    in this process to start and stop its monitor (a pipe, a Process object: a few KB) falls inside the window.
    Elsewhere (the sampled RSS probe is a thread of ours) each probe gets its own step, as before, with
    ``reset()`` (back to the baseline) between them.
    """
    if not vmhwm_resettable():
        rss, method = rss_step_peak_bytes(step)
        reset()
        return rss, method, mprof_step_peak_bytes(step)
    try:
        import memory_profiler

        _warm_up_mprof(memory_profiler, _mprof_kwargs(memory_profiler, 0.001))
    except Exception:  # the probe below reports it
        pass
    seen: list[int | None] = []
    rss, method = rss_step_peak_bytes(lambda: seen.append(mprof_step_peak_bytes(step)))
    return rss, method, seen[0] if seen else None


def _mprof_kwargs(memory_profiler: Any, interval_seconds: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_usage": True, "interval": interval_seconds}
    try:
        if "max_iterations" in inspect.signature(memory_profiler.memory_usage).parameters:
            kwargs["max_iterations"] = 1
    except (TypeError, ValueError):
        pass
    return kwargs


_mprof_warmed_up_pid: int | None = None


def _warm_up_mprof(memory_profiler: Any, kwargs: dict[str, Any]) -> None:
    """Run memory_usage once on a no-op, once per process, before any baseline is taken.

    The first memory_usage call imports multiprocessing.connection, multiprocessing.popen_fork,
    tempfile, bz2, lzma and other modules (measured: about 1.2 MB of RSS). Without the warm-up, that
    would be counted as part of the first step measured.
    """
    global _mprof_warmed_up_pid
    if _mprof_warmed_up_pid == os.getpid():
        return
    try:
        memory_profiler.memory_usage((_no_op, (), {}), **kwargs)
    except Exception:
        return  # the real call will report the failure
    finally:
        _reap_finished_children()
    _mprof_warmed_up_pid = os.getpid()


def _no_op() -> None:
    return None


def _reap_finished_children() -> None:
    """Join monitor processes that memory_profiler started and that have finished.

    memory_profiler waits only ``5 * interval`` for its monitor to exit.
    """
    try:
        import multiprocessing

        multiprocessing.active_children()
    except Exception:
        pass

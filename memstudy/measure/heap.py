"""glibc's heap put in its steady state, once per process, before the first training step a harness runs.

glibc's malloc serves large buffers with mmap until the process frees one large mmapped buffer; then it raises
its mmap threshold to that buffer's size (and its trim threshold to twice that) and from then on keeps freed
memory in its heap. Until that first large free, every training step's large buffers are fresh mmaps, freed
back to the kernel and faulted in again at the next step: one minor page fault per 4 KiB, measured at up to a
fifth of a step here. A process that imported PyTorch is already past that point (its import freed large
buffers); a numpy process is not. So before the first backward pass the engine allocates one
`WARMUP_BYTES` buffer (never written, so no page is touched) and frees it, as any long-running training
process eventually does.

Not done when the allocator was configured explicitly: `MALLOC_MMAP_THRESHOLD_` (or a glibc tunable setting
it) turns glibc's dynamic threshold off anyway, and memstudy's measured cells set it so that RSS follows live
memory. Opt out with `MEMSTUDY_HEAP_WARMUP=0` in the environment, or `heap.disable()` before training.
"""
from __future__ import annotations

import os
import platform
import sys

import numpy as np

# below glibc's DEFAULT_MMAP_THRESHOLD_MAX (32 MiB on 64-bit): a larger free would not move the thresholds
WARMUP_BYTES = 24 << 20
OPT_OUT_ENV = "MEMSTUDY_HEAP_WARMUP"
_ALLOCATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_")


class _Heap:
    settled = False  # the warm-up ran, or was decided against, in this process


HEAP = _Heap()


def disable() -> None:
    """No warm-up in this process (call before the first backward pass)."""
    HEAP.settled = True


def _explicit_allocator_setting() -> bool:
    if any(name in os.environ for name in _ALLOCATOR_SETTINGS):
        return True
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables


def should_warm_up() -> bool:
    """Linux with glibc, no explicit allocator setting, no opt-out."""
    if os.environ.get(OPT_OUT_ENV, "1").strip() == "0" or _explicit_allocator_setting():
        return False
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def settle() -> bool:
    """Warm the heap once per process; True if this call did it. Call it before the first training step."""
    if HEAP.settled:
        return False
    HEAP.settled = True
    if not should_warm_up():
        return False
    buffer = np.empty(WARMUP_BYTES, dtype=np.uint8)  # mmapped (above the default threshold), never touched
    del buffer
    return True

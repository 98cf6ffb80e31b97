"""One allocator state for every timing process, and the page faults each variant takes.

glibc's malloc serves large buffers with mmap until a large buffer is freed; then it raises its mmap
threshold to that buffer's size and its trim threshold to twice that, and from then on serves buffers of
that size from the heap and keeps up to the trim threshold of freed heap memory instead of handing it back
to the kernel. Which buffers a process has freed before a benchmark therefore decides whether every step
gets its buffers from the heap (no page faults) or from fresh pages (a minor page fault per 4 KiB: a
quarter of memstudy's step time at (4, 512, 256) on this machine). A process that imported torch has
already freed large buffers; a numpy process may not have. Timing both as they come would measure their
import history, not their engines.

So every timing process (memstudy and the numpy floor in this one, PyTorch in its worker) first allocates
and frees one `HEAP_WARMUP_BYTES` buffer, the state any long-running training process reaches after its
first large free; `--heap default` skips that (to measure the difference). The minor page faults per step
of every variant are recorded next to its time, so the state is visible in bench.csv.
"""
from __future__ import annotations

import resource
from typing import Callable

# below glibc's DEFAULT_MMAP_THRESHOLD_MAX (32 MiB on 64-bit): a larger free would not move the thresholds
HEAP_WARMUP_BYTES = 24 << 20
HEAP_MODES = ("warm", "default")


def warm_up_heap(allocate: Callable[[int], object]) -> None:
    """Allocate (untouched, so no page is faulted in) and free one HEAP_WARMUP_BYTES buffer."""
    buffer = allocate(HEAP_WARMUP_BYTES)
    del buffer


def minor_faults() -> int:
    """Minor page faults this process has taken so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

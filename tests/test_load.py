"""Timing honesty: the cores other processes keep busy while a cell is timed, measured and recorded."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from memstudy.memory.load import ForeignLoad, machine_busy_seconds

pytestmark = pytest.mark.skipif(machine_busy_seconds() is None, reason="needs Linux /proc/stat")

SPIN = "import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end: pass\n"


def spin_here(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_another_process_counts_and_our_own_work_does_not():
    own = ForeignLoad().start()
    spin_here(0.6)
    own_cores = own.cores()
    other = ForeignLoad().start()
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=0.8)])
    time.sleep(0.6)
    other_cores = other.cores()  # read before the spinner is reaped: it is another process's work
    proc.wait()
    assert other_cores - own_cores > 0.3, (own_cores, other_cores)


def test_each_cell_row_records_the_load_while_it_was_timed():
    request = {"depth": 1, "width": 16, "batch_size": 4, "repeats": 1}
    done = subprocess.run([sys.executable, "-m", "memstudy.study.cell"], input=json.dumps(request), text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.splitlines()[0])
    assert isinstance(row["foreign_cores"], float) and 0 <= row["foreign_cores"] < 64

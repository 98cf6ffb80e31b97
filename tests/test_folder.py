"""One writer per results folder (two real processes), and every bad path, permission or file is one line and
exit 2 from every command, nothing creates a folder it was not asked to, no half-written file is left."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memstudy.run.results.folder import LOCK_NAME, FolderLock, PathError, replace_atomically, write_text_atomically
from sweep_helpers import SPEC, SWEEP_SCRIPT, clean_env, fake_cell  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--depth", "1", "--width", "8", "--batch", "4"]


def memstudy(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "memstudy", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env=env)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@contextlib.contextmanager
def read_only(folder: Path):
    """Make `folder` (with what is in it) unwritable for this user: chmod for a normal user; root ignores modes,
    so for root a read-only tmpfs is mounted over it, holding a copy of its files."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield folder
        finally:
            os.chmod(folder, 0o755)
        return
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root without permission to mount a read-only folder")
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# --- the lock ----------------------------------------------------------------------------------------------

def start_holding_sweep(tmp_path: Path, fake_cell: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    """A real sweep process into tmp_path/out whose train cells hang: it holds the folder's lock."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC)
    out = tmp_path / "out"
    env = {**os.environ, "FAKE_CELL_HANG": "mode=train", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(spec_path), str(out), *fake_cell], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not ((out / "runs.csv").exists() and (out / LOCK_NAME).exists()
               and str(proc.pid) in (out / LOCK_NAME).read_text()):
        if time.monotonic() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the first sweep did not start")
        time.sleep(0.02)
    return proc, spec_path, out


def test_a_second_sweep_or_report_into_a_busy_folder_is_refused_naming_the_holder(tmp_path, fake_cell):
    proc, spec_path, out = start_holding_sweep(tmp_path, fake_cell)
    try:
        rows_before = (out / "runs.csv").read_bytes()
        second = memstudy("sweep", str(spec_path), "--out", str(out), "--no-progress")
        line = one_error_line(second)
        assert f"pid {proc.pid}" in line and "sweep" in line, line
        report = memstudy("report", str(out), "--no-figures")
        assert f"pid {proc.pid}" in one_error_line(report)
        assert not (out / "summary.csv").exists()
        assert (out / "runs.csv").read_bytes().startswith(rows_before)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its hanging cells
        proc.wait()
    # the kernel dropped the lock with the process: no stale lock, the next sweep resumes
    again = memstudy("sweep", str(spec_path), "--out", str(out), "--no-progress")
    assert again.returncode != 2 and "in use" not in again.stderr, again.stderr


def test_the_lock_is_exclusive_between_open_files_and_released():
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"memstudy-lock-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    with FolderLock(folder, "sweep"):
        with pytest.raises(PathError, match=rf"in use by a memstudy sweep \(pid {os.getpid()}"):
            FolderLock(folder, "report").acquire()
    with FolderLock(folder, "report"):  # released on exit
        pass


# --- paths, from every command -----------------------------------------------------------------------------------

SPEC_TEXT = '[study]\nname = "tiny"\n[grid]\ndepth = 1\nwidth = 8\nbatch_size = 4\n[run]\nrepeats = 1\n'


@pytest.fixture()
def place(tmp_path: Path) -> Path:
    (tmp_path / "spec.toml").write_text(SPEC_TEXT)
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "folder").mkdir()
    return tmp_path


BAD_PATHS = {
    "sweep --out empty": ["sweep", "{p}/spec.toml", "--out", ""],
    "sweep --out a file": ["sweep", "{p}/spec.toml", "--out", "{p}/a_file"],
    "sweep --out missing parent": ["sweep", "{p}/spec.toml", "--out", "{p}/missing/deeper"],
    "sweep --out under a file": ["sweep", "{p}/spec.toml", "--out", "{p}/a_file/out"],
    "report empty": ["report", ""],
    "report a file": ["report", "{p}/a_file"],
    "report missing": ["report", "{p}/missing"],
    "report summary.csv is a folder": ["report", "{p}/with_runs", "--no-figures"],
    "run --timeline empty": ["run", *TINY, "--timeline", ""],
    "run --timeline a folder": ["run", *TINY, "--timeline", "{p}/folder"],
    "run --timeline missing parent": ["run", *TINY, "--timeline", "{p}/missing/t.csv"],
    "run --timeline under a file": ["run", *TINY, "--timeline", "{p}/a_file/t.csv"],
    "run --html empty": ["run", *TINY, "--html", ""],
    "run --html a folder": ["run", *TINY, "--html", "{p}/folder"],
    "run --html missing parent": ["run", *TINY, "--html", "{p}/missing/r.html"],
    "graph --out empty": ["graph", *TINY, "--out", ""],
    "graph --out a folder": ["graph", *TINY, "--out", "{p}/folder"],
    "graph --out missing parent": ["graph", *TINY, "--out", "{p}/missing/deeper/g.dot"],
    "graph --out ending in a slash": ["graph", *TINY, "--out", "{p}/newname/"],
}


@pytest.mark.parametrize("args", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_a_bad_path_is_one_line_exit_2_and_creates_nothing(args, place):
    if "with_runs" in " ".join(args):
        ok = memstudy("sweep", str(place / "spec.toml"), "--out", str(place / "with_runs"), "--no-progress")
        assert ok.returncode == 0, ok.stderr
        (place / "with_runs" / "summary.csv").mkdir()
    before = sorted(p.relative_to(place) for p in place.rglob("*"))
    done = memstudy(*[a.replace("{p}", str(place)) for a in args], cwd=place)
    one_error_line(done)
    assert done.stdout == ""
    after = sorted(p.relative_to(place) for p in place.rglob("*") if not p.name.endswith(".lock"))
    assert after == [p for p in before if not p.name.endswith(".lock")]  # no folder, no file, no temporary


def test_read_only_folders_are_one_line_exit_2_from_every_command(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC_TEXT)
    results = tmp_path / "results"
    ok = memstudy("sweep", str(spec), "--out", str(results), "--no-progress")
    assert ok.returncode == 0, ok.stderr
    with read_only(results):
        assert "results" in one_error_line(memstudy("sweep", str(spec), "--out", str(results), "--no-progress"))
        assert "results" in one_error_line(memstudy("report", str(results)))
        assert "permission" in one_error_line(memstudy("run", *TINY, "--timeline", str(results / "t.csv")))
        one_error_line(memstudy("graph", *TINY, "--out", str(results / "g.dot")))
        one_error_line(memstudy("run", *TINY, "--html", str(results / "r.html")))
        fresh = memstudy("sweep", str(spec), "--out", str(results / "new"), "--no-progress")
        one_error_line(fresh)


@pytest.mark.parametrize("size", [["--depth", "4", "--width", "65536", "--batch", "65536"],  # the step's activations
                                  ["--depth", "1000000", "--width", "4096"]])  # a million layers of 64 MiB each
def test_graph_checks_its_size_against_the_budget_before_building(size):
    start = time.monotonic()
    done = memstudy("graph", *size, "--out", "/tmp/never.dot")
    assert "exceed" in one_error_line(done) and "the budget" in done.stderr
    assert time.monotonic() - start < 20  # the refusal does not build, nor predict, a million layers
    assert not Path("/tmp/never.dot").exists()


def test_graph_does_not_create_missing_folders(tmp_path):
    done = memstudy("graph", *TINY, "--out", str(tmp_path / "a" / "b" / "g.dot"))
    one_error_line(done)
    assert not (tmp_path / "a").exists()
    done = memstudy("graph", *TINY, "--out", str(tmp_path / "g.dot"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g.dot").read_text().startswith("digraph")


# --- whole files or none ---------------------------------------------------------------------------------------

def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with replace_atomically(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]
    write_text_atomically(target, "new\n")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]


def test_run_timeline_is_renamed_into_place_only_when_the_cell_succeeded(tmp_path):
    target = tmp_path / "t.csv"
    done = memstudy("run", *TINY, "--timeline", str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_text().startswith("event,") and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]

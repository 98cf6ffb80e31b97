"""runs.csv, the one results file of a sweep: its columns, appending rows crash-safely, and reading it back.

One row per (cell, repeat), one line per row (newlines inside values are folded into spaces). A sweep
appends each cell's rows in one write of complete lines, then fsyncs, so a crash leaves whole rows and
at worst one torn last line. `read_runs` is the only reader (the sweep's resume and the report): it
goes by column name (older files lack the newest columns), and it says what it left out and why: a torn
last line, a line with the wrong number of fields, a row without a status, a repeated (cell, repeat).
The sweep then repairs the file (`rewrite_runs`: a temporary file renamed over it); the report only
reads.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .fields import ROW_FIELDS

CSV_COLUMNS: tuple[str, ...] = ("experiment", "cell") + ROW_FIELDS
STATUSES = ("ok", "failed", "skipped")
REQUIRED_COLUMNS = ("cell", "repeat", "status")


class RunsFileError(ValueError):
    """runs.csv cannot be read as a memstudy results file; one-line message."""


@dataclass
class RunsFile:
    """What `read_runs` found: the file's own columns, its usable rows and what it left out."""

    path: Path
    columns: tuple[str, ...]  # the header as written (older files lack the newest columns; a user family's
    # own fields come after the standard columns)
    rows: list[dict[str, str]] = field(default_factory=list)  # usable rows, file order, keyed by `columns`
    problems: list[str] = field(default_factory=list)  # one sentence per kind of line left out
    damaged: bool = False  # lines were left out: the file on disk is not `columns` + `rows`

    def text(self) -> str:
        """The usable part as CSV text in the file's own columns (what the report parses)."""
        return format_rows(self.rows, self.columns, header=True)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split()) if ("\n" in value or "\r" in value) else value
    return value


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS, header: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(col)) for col in columns])
    return buf.getvalue()


def header_line(columns: Sequence[str] = CSV_COLUMNS) -> str:
    return ",".join(columns) + "\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def append_rows(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Append complete lines in one write call, then fsync: a crash leaves whole rows or a torn last line.
    The caller has made sure the file's header is `columns`."""
    data = format_rows(rows, columns).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rewrite_runs(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Replace the file by the header `columns` and `rows`: written to a temporary name, fsynced, renamed over
    the old file (a crash leaves the old file or the new one, never half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(format_rows(rows, columns, header=True))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def read_runs(path: Path) -> RunsFile:
    """The usable rows of a runs.csv, and a sentence for each kind of line left out (see the module docstring).

    Raises RunsFileError when the file is unreadable or its header is not a memstudy runs.csv header."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RunsFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    problems: list[str] = []
    if raw and not raw.endswith(b"\n"):  # every row is written with its newline: this one was cut off
        cut = raw.rfind(b"\n") + 1
        problems.append(f"its last line is cut off ({len(raw) - cut} bytes without an end of line: the sweep writing "
                        "it was stopped mid-write); that row was left out")
        raw = raw[:cut]
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        if problems:  # nothing but a torn header
            return RunsFile(path, CSV_COLUMNS, [], problems, damaged=True)
        raise RunsFileError(f"{path}: empty (no header line)")
    try:
        columns = tuple(next(csv.reader([lines[0]])))
    except csv.Error:
        columns = ()
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]  # other columns: a user family's own fields
    if missing or len(set(columns)) != len(columns):
        what = f"missing column {missing[0]!r}" if missing else "a repeated column"
        raise RunsFileError(f"{path}: not a runs.csv this memstudy can read ({what})")
    malformed = blank = repeated = 0
    seen: set[tuple[str, str]] = set()
    rows: list[dict[str, str]] = []
    for line in lines[1:]:
        try:
            values = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            values = []
        if len(values) != len(columns):
            malformed += 1
            continue
        row = dict(zip(columns, values))
        if row["status"] not in STATUSES:
            blank += 1
            continue
        key = (row["cell"], row["repeat"])
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        rows.append(row)
    if malformed:
        problems.append(f"{_plural(malformed, 'line has', 'lines have')} the wrong number of fields for its header "
                        "and " + ("was" if malformed == 1 else "were") + " left out")
    if blank:
        problems.append(f"{_plural(blank, 'row has', 'rows have')} no status (ok, failed or skipped) and "
                        + ("was" if blank == 1 else "were") + " left out")
    if repeated:
        problems.append(f"{_plural(repeated, 'row repeats', 'rows repeat')} a (cell, repeat) already in the file "
                        "(two sweeps wrote into one folder?); the first of each was kept")
    return RunsFile(path, columns, rows, problems, damaged=bool(problems))


__all__ = ["CSV_COLUMNS", "RunsFile", "RunsFileError", "append_rows", "format_rows", "header_line", "read_runs",
           "rewrite_runs"]

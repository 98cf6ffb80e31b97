"""Run a spec's cells, each in a fresh Python process, into `DIR/runs.csv`; resumable and crash-safe.

- A cell is `python -m memstudy.study.cell` fed one JSON config on stdin; it prints one JSON row per
  repeat. Its environment gets MALLOC_MMAP_THRESHOLD_=65536 unless the variable is already set.
- A cell whose predicted total peak exceeds the budget is not started (`skipped`); one that raises, is
  killed or passes its timeout is `failed` with the reason in `error`. Either way the cell gets one row
  per repeat, and the sweep goes on.
- A cell's rows are appended in one write of complete lines, then flushed and fsynced. On the next run
  a torn trailing line or an incomplete cell is dropped, and cells already in runs.csv are not rerun.
- `DIR/env.json` records the provenance and the spec's hash; a different spec in the same DIR is refused
  unless `fresh=True`.

Cells may run concurrently (`jobs`): a thread pool in which each thread waits on its subprocess. Cells
only start while the sum of running cells' predicted peaks stays within the budget.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import datetime
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..units import format_bytes
from .launcher import CELL_COMMAND, CellRequest, CellResult, LocalExecutor, cell_environment
from .fields import ROW_FIELDS
from .provenance import collect_env, read_env, write_json
from .select import nearest_batch
from .spec import Spec, cell_id

CSV_COLUMNS: tuple[str, ...] = ("experiment", "cell") + ROW_FIELDS


def csv_columns(spec: Spec) -> tuple[str, ...]:
    """runs.csv's columns for a spec: the standard ones, then any field a user's own family declares."""
    extra: list[str] = []
    for config in spec.cells():
        extra += [k for k in config if k not in CSV_COLUMNS and k not in extra]
    return CSV_COLUMNS + tuple(extra)
PREDICTED_KEYS = ("predicted_peak_bytes", "predicted_step_peak_bytes", "predicted_activation_bytes")
SWEEP_FILES = ("runs.csv", "env.json", "spec.toml", "timeline.csv", "timeline.csv.tmp")
MAX_ERROR_CHARS = 400


class SweepError(RuntimeError):
    """The sweep refuses to start (e.g. DIR holds results of a different spec); one-line message."""


@dataclass
class SweepOutcome:
    out_dir: Path
    runs_csv: Path
    env_json: Path
    cells: int  # in the spec
    resumed: int  # already in runs.csv before this run
    ok: int = 0  # cells run now whose every repeat is ok
    skipped: int = 0
    failed: int = 0
    timeline: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.resumed + self.ok + self.skipped + self.failed


@dataclass
class _CellResult:
    cid: str
    rows: list[dict[str, Any]]
    status: str  # ok | skipped | failed (failed if any repeat failed)


# --- runs.csv --------------------------------------------------------------------------------------

def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split()) if ("\n" in value or "\r" in value) else value
    return value


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([_csv_value(row.get(col)) for col in columns])
    return buf.getvalue()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def append_rows(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Append complete lines in one write call, then fsync: a crash leaves whole rows or a torn last line."""
    data = format_rows(rows, columns).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
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


def _rewrite(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def header_line(columns: Sequence[str] = CSV_COLUMNS) -> str:
    return ",".join(columns) + "\n"


def load_done(path: Path, repeats: int, columns: Sequence[str] = CSV_COLUMNS) -> dict[str, list[dict[str, str]]]:
    """Cells complete in runs.csv (cell id -> its rows), repairing the file first.

    A torn trailing line is cut; a cell without exactly one row per repeat is removed (only the last
    cell written can be incomplete, and only after a crash), and so is any duplicate row.
    """
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if not lines:
        _rewrite(path, header_line(columns))
        return {}
    if lines[0] != header_line(columns):
        raise SweepError(f"{path}: its columns differ from this memstudy's runs.csv columns; use --fresh")
    by_cell: dict[str, list[tuple[str, dict[str, str]]]] = {}
    order: list[str] = []
    for line in lines[1:]:
        try:
            values = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            continue
        if len(values) != len(columns):
            continue
        row = dict(zip(columns, values))
        if row["cell"] not in by_cell:
            by_cell[row["cell"]] = []
            order.append(row["cell"])
        by_cell[row["cell"]].append((line, row))
    done: dict[str, list[dict[str, str]]] = {}
    kept: list[str] = []
    changed = len(lines) - 1 != sum(len(v) for v in by_cell.values()) or len(raw) != path.stat().st_size
    for cid in order:
        entries, seen, unique = by_cell[cid], set(), []
        for line, row in entries:
            if row["repeat"] not in seen:
                seen.add(row["repeat"])
                unique.append((line, row))
        if seen == {str(r) for r in range(repeats)}:
            done[cid] = [row for _, row in unique]
            kept.extend(line for line, _ in unique)
            changed |= len(unique) != len(entries)
        else:
            changed = True
    if changed:
        _rewrite(path, header_line(columns) + "".join(kept))
    return done


# --- one cell ---------------------------------------------------------------------------------------

def _config_row(spec: Spec, cid: str, config: dict[str, Any], repeat: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS)
    row.update(config)  # every field the family declares (a user family's own too)
    row.update(experiment=spec.name, cell=cid, repeat=repeat)
    return row


def _placeholder_rows(spec, cid, config, repeats, status, error, predicted=None) -> list[dict[str, Any]]:
    rows = []
    for repeat in repeats:
        row = _config_row(spec, cid, config, repeat)
        for key in PREDICTED_KEYS:
            if predicted and key in predicted:
                row[key] = predicted[key]
        row.update(status=status, error=_one_line(error))
        rows.append(row)
    return rows


def _cell_rows(spec: Spec, cid: str, config: dict[str, Any], result: CellResult,
               predicted: dict[str, Any] | None) -> _CellResult:
    """The launcher's result as runs.csv rows: the cell's rows with the config, then a failed row for each
    repeat it did not deliver."""
    rows: list[dict[str, Any]] = []
    for obj in result.rows:
        row = _config_row(spec, cid, config, len(rows))
        row.update({k: v for k, v in obj.items() if k in ROW_FIELDS})
        row.update(experiment=spec.name, cell=cid, repeat=len(rows))
        row["status"] = row.get("status") or "ok"
        rows.append(row)
    if result.error:
        rows += _placeholder_rows(spec, cid, config, range(len(rows), spec.repeats), "failed", result.error,
                                  predicted)
    status = "ok" if all(r["status"] == "ok" for r in rows) else "failed"
    return _CellResult(cid, rows, status)


# --- the sweep --------------------------------------------------------------------------------------

def _postfix(outcome: SweepOutcome) -> str:
    resumed = f"resumed={outcome.resumed} " if outcome.resumed else ""
    return f"{resumed}ok={outcome.ok} skipped={outcome.skipped} failed={outcome.failed}"


def choose_timeline_cell(cells: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A training cell of the middle depth and the batch nearest 256 (the report's timeline); sqrt checkpointing
    if the grid has it."""
    train = [c for c in cells if c["mode"] == "train"]
    if not train:
        return None
    depths = sorted({c["depth"] for c in train})
    depth = depths[len(depths) // 2]
    at_depth = [c for c in train if c["depth"] == depth]
    batch = nearest_batch({c["batch_size"] for c in at_depth})
    candidates = [c for c in at_depth if c["batch_size"] == batch]
    # a checkpointing study shows its recompute: prefer the sqrt strategy's step when there is one
    return next((c for c in candidates if c.get("checkpoint") == "sqrt"), candidates[0])


def _default_predictor() -> Callable[[dict], dict] | None:
    try:
        from ..memory.predict import predict
    except ImportError:
        return None
    return predict


_DEFAULT = object()


def run_sweep(spec: Spec, out_dir: str | Path, jobs: int | None = None, fresh: bool = False, progress: bool = True,
              cell_command: Sequence[str] | None = None, predictor: Any = _DEFAULT,
              available_bytes: int | None = None) -> SweepOutcome:
    """Run every cell of `spec` not yet in `out_dir/runs.csv`; see the module docstring.

    `cell_command` (default: this Python, `-m memstudy.study.cell`) and `predictor` (default:
    memstudy.memory.predict.predict; None disables the budget check) are injectable for tests.
    Raises SweepError when `out_dir` holds results of a different spec (unless `fresh`).
    """
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.csv"
    env_path = out / "env.json"
    jobs = spec.jobs if jobs is None else jobs
    if jobs < 1:
        raise SweepError(f"jobs must be at least 1, got {jobs}")
    if fresh:
        for name in SWEEP_FILES:
            (out / name).unlink(missing_ok=True)

    previous_env = read_env(out)
    if runs.exists() and runs.stat().st_size > 0:
        stored = (previous_env or {}).get("spec", {}).get("hash")
        if stored is None:
            raise SweepError(f"{out} holds a runs.csv but no readable env.json with a spec hash; use --fresh or "
                             "another --out")
        if stored != spec.hash:
            raise SweepError(f"{out} holds results of a different spec (hash {stored}, this spec {spec.hash}); "
                             "use --fresh to start over or choose another --out")
    else:
        previous_env = None

    warnings: list[str] = []
    predict = _default_predictor() if predictor is _DEFAULT else predictor
    if predict is None:
        warnings.append("budget not checked: no predictor (memstudy.memory.predict) available")
    budget = spec.budget_bytes(available_bytes)
    cell_env = cell_environment()
    command = list(cell_command) if cell_command is not None else list(CELL_COMMAND)

    columns = csv_columns(spec)
    done = load_done(runs, spec.repeats, columns) if runs.exists() and runs.stat().st_size > 0 else {}

    cells = [(cell_id(c), c) for c in spec.cells()]
    pending = [(cid, c) for cid, c in cells if cid not in done]
    outcome = SweepOutcome(out, runs, env_path, cells=len(cells), resumed=len(cells) - len(pending),
                           warnings=warnings)

    # budget check first: skipped cells cost nothing and must not distort the ETA
    to_run: list[tuple[str, dict, dict | None]] = []
    finished: list[_CellResult] = []
    for cid, config in pending:
        predicted = None
        if predict is not None:
            try:
                predicted = predict(config)
            except Exception as exc:  # a predictor bug must not stop the sweep, nor run an unchecked cell
                finished.append(_CellResult(cid, _placeholder_rows(
                    spec, cid, config, range(spec.repeats), "failed", f"prediction failed: {type(exc).__name__}: {exc}"), "failed"))
                continue
            peak = predicted.get("predicted_peak_bytes")
            if peak is not None and peak > budget:
                reason = (f"predicted peak {format_bytes(peak)} exceeds the budget {format_bytes(budget)} "
                          f"(budget {spec.budget!r})")
                finished.append(_CellResult(cid, _placeholder_rows(
                    spec, cid, config, range(spec.repeats), "skipped", reason, predicted), "skipped"))
                continue
        to_run.append((cid, config, predicted))

    timeline_final = out / "timeline.csv"
    timeline_tmp = out / "timeline.csv.tmp"
    timeline_cid = None
    if not timeline_final.exists():
        chosen = choose_timeline_cell([c for _, c, _ in to_run])
        timeline_cid = cell_id(chosen) if chosen is not None else None

    session = {"jobs": jobs, "budget_bytes": budget, "cell_command": command, "timeline_cell": timeline_cid}
    env = collect_env(spec, cell_environment=cell_env, extra={"sweep": session})
    if previous_env is None:
        env["sessions"] = []
    else:  # a resume keeps the first record and notes what this session ran with
        env = {**previous_env, "sessions": list(previous_env.get("sessions", []))}
    env["sessions"].append({
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "resumed": previous_env is not None, **session,
    })
    write_json(env_path, env)
    if spec.text:
        (out / "spec.toml").write_text(spec.text, encoding="utf-8")
    if not runs.exists() or runs.stat().st_size == 0:  # only now: runs.csv without env.json is refused
        _rewrite(runs, header_line(columns))

    from tqdm import tqdm

    bar = tqdm(total=len(cells), initial=outcome.resumed, desc=spec.name, unit="cell", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, postfix=_postfix(outcome))

    def record(result: _CellResult) -> None:
        append_rows(runs, result.rows, columns)
        setattr(outcome, result.status, getattr(outcome, result.status) + 1)
        bar.update(1)
        bar.set_postfix_str(_postfix(outcome), refresh=False)

    executor = LocalExecutor(jobs, command=command, env=cell_env, budget_bytes=budget)
    submitted: dict[cf.Future, tuple[str, dict, dict | None, bool]] = {}
    try:
        for result in finished:
            record(result)
        for cid, config, predicted in to_run:
            with_timeline = cid == timeline_cid
            request = CellRequest(config, spec.repeats, str(timeline_tmp) if with_timeline else None,
                                  timeout_seconds=spec.timeout_seconds)
            need = int((predicted or {}).get("predicted_peak_bytes") or 0)
            submitted[executor.submit(request, reserve_bytes=need)] = (cid, config, predicted, with_timeline)
        for future in cf.as_completed(submitted):
            cid, config, predicted, with_timeline = submitted[future]
            result = future.result()
            if result is None:  # interrupted before it started
                continue
            if with_timeline:
                if not result.error and timeline_tmp.exists():
                    os.replace(timeline_tmp, timeline_final)
                else:
                    timeline_tmp.unlink(missing_ok=True)
            record(_cell_rows(spec, cid, config, result, predicted))
    except BaseException:  # KeyboardInterrupt, or a failure writing runs.csv: stop every cell we started
        executor.stop()
        raise
    finally:
        executor.shutdown()
        bar.close()
    # the session's wall time, start to last row, so that a README can quote what a study took
    env["sessions"][-1]["wall_seconds"] = round(time.monotonic() - started, 3)
    write_json(env_path, env)
    if timeline_final.exists():
        outcome.timeline = timeline_final
    return outcome


__all__ = ["CSV_COLUMNS", "SweepError", "SweepOutcome", "append_rows", "cell_environment", "choose_timeline_cell",
           "load_done", "run_sweep"]

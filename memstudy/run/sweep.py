"""Run a spec's cells, each in a fresh Python process, into `DIR/runs.csv`; resumable, extendable, crash-safe.

- One writer per folder: the sweep holds DIR's lock (folder.FolderLock) from start to end.
- A cell is `python -m memstudy.measure.cell` fed one JSON config on stdin (launcher.launch); it prints one JSON
  row per repeat. Its environment gets MALLOC_MMAP_THRESHOLD_=65536 unless the variable is already set.
- A cell whose need (its predicted total peak, its own overhead and the process baseline: budget.py)
  exceeds the budget is not started (`skipped`); one that raises, is killed, passes its timeout or runs
  out of its address-space limit (RLIMIT_AS, budget.py) is `failed` with the reason in `error`. Either way
  the cell gets one row per repeat, and the sweep goes on.
- A cell's rows are appended in one write of complete lines, then fsynced (runs.py).
- Resume: a (cell, repeat) already in runs.csv is not run again, except a failed one under `retry_failed`
  and a skipped one that the current budget admits; missing repeats (a torn last line, a larger `repeats`)
  and new cells (a grid that gained values) are run. A spec that would reinterpret the rows is refused
  (resume.py); `fresh=True` deletes the folder's results first.
- A shape-only spec (`[run] measure = false`) starts no process: each cell's rows are its prediction
  (`_predicted_cell`: the step, or the rank's graph, run on shape-only arrays under the ledger), the predicted columns
  filled, `shape_only` true, the ledger's, the probes' and the clock's columns empty; no budget applies (no array is
  allocated), and a cell whose prediction fails is `failed` with the reason.
- `DIR/layers.csv` holds, per cell and repeat, the bytes each op saved per layer (the ledger's `by_op`), for
  reports that break a step down by layer; a cell's entries are written just before its runs.csv rows, and a
  reader keeps the last entry of a (cell, repeat, layer, op) that a resumed sweep wrote twice.
- `DIR/env.json` records the provenance, the current spec, and one entry per session (what changed, the git
  state, the settings it ran with, each model's source file and hash). The git state is read before anything
  is deleted. Every row records its model's source hash (`model_source_hash`); a folder whose rows were made
  from another version of a model's source is refused (resume.check_model_sources).

Cells run through an executor with the `concurrent.futures` shape, `submit(request, reserve_bytes)`:
`jobs` local processes (executors.local.LocalExecutor: a thread pool in which each thread waits on its subprocess,
starting cells only while the running cells' needs fit the budget together), or a Dask cluster
(`cluster`, executors.dask.DaskExecutor: one cell per worker, each worker's budget of its own memory).
Either way only this process writes runs.csv, a cell's rows as its future completes.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..measure.agreement import Tally
from ..nn.models.registry import DEFAULT_FAMILY
from .budget import DEFAULT_PREDICTOR, BudgetCheck, Verdict, explain_memory_failure
from . import forkserver
from .executors.local import LocalExecutor
from .launcher import (CELL_COMMAND, CellLost, CellRequest, CellResult, blas_policy, cell_environment,
                       process_baseline)
from .results.fields import ROW_FIELDS
from .results.folder import FolderLock, results_folder, write_text_atomically
from .results.provenance import collect_env, git_info, model_source, read_env, spec_record, write_json
from .results.resume import SweepError, check_compatible, check_model_sources
from .results.runs import (CSV_COLUMNS, RunsFile, RunsFileError, append_rows, format_rows, header_line, read_runs,
                           rewrite_runs)
from .select import nearest_batch
from .spec import Spec, cell_id


def csv_columns(spec: Spec, existing: Sequence[str] = ()) -> tuple[str, ...]:
    """runs.csv's columns for a spec: the standard ones, then any field a user's own family declares (and any
    such column a folder's runs.csv already has)."""
    extra: list[str] = []
    for config in spec.cells():
        extra += [k for k in config if k not in CSV_COLUMNS and k not in extra]
    extra += [k for k in existing if k not in CSV_COLUMNS and k not in extra]
    return CSV_COLUMNS + tuple(extra)


PREDICTED_KEYS = ("predicted_peak_bytes", "predicted_step_peak_bytes", "predicted_activation_bytes")
SWEEP_FILES = ("runs.csv", "runs.csv.tmp", "layers.csv", "env.json", "spec.toml", "timeline.csv", "timeline.csv.tmp")
LAYERS_CSV = "layers.csv"
LAYER_COLUMNS = ("experiment", "cell", "repeat", "layer", "op", "activation_bytes", "input_bytes")
MAX_ERROR_CHARS = 400
# exit statuses of `memstudy sweep` / `study` (cli.py): bad input is 2
EXIT_OK = 0  # every cell ok or skipped by the budget
EXIT_CELLS_FAILED = 1  # at least one cell of the spec has a failed repeat in runs.csv


@dataclass
class SweepOutcome:
    out_dir: Path
    runs_csv: Path
    env_json: Path
    cells: int  # in the spec
    resumed: int  # complete in runs.csv before this run: nothing left to run
    ok: int = 0  # cells run now (some or all repeats) whose every repeat is ok
    skipped: int = 0
    failed: int = 0
    failed_before: int = 0  # resumed cells with a failed repeat (`retry_failed` reruns them)
    retried: int = 0  # cells whose failed rows this run dropped to rerun them
    changes: list[str] = field(default_factory=list)  # how the spec differs from the one in env.json
    timeline: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.resumed + self.ok + self.skipped + self.failed

    @property
    def exit_status(self) -> int:
        return EXIT_CELLS_FAILED if self.failed or self.failed_before else EXIT_OK


@dataclass
class _CellResult:
    cid: str
    rows: list[dict[str, Any]]
    status: str  # ok | skipped | failed (failed if any repeat failed)
    layers: list[dict[str, Any]] = field(default_factory=list)  # layers.csv rows (LAYER_COLUMNS)


@dataclass
class _Pending:
    cid: str
    config: dict[str, Any]
    repeats: list[int]  # the repeat indexes to run
    verdict: Verdict | None = None  # the budget's (None: not checked yet)
    kept_status: set[str] = field(default_factory=set)  # statuses of the rows this cell keeps


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def append_layers(path: Path, layers: Sequence[dict[str, Any]]) -> None:
    """Append a cell's layers.csv rows (the header first when the file is new): one write, fsynced."""
    header = not path.exists() or path.stat().st_size == 0
    data = format_rows(layers, LAYER_COLUMNS, header=header).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _predicted_cell(spec: Spec, cell: _Pending) -> _CellResult:
    """A shape-only cell's rows (`[run] measure = false`): its prediction, nothing measured (module docstring)."""
    from ..measure.predict import predict, predicted_row
    from ..parallel import rank

    try:
        prediction = predict(cell.config)
    except Exception as exc:  # meta.Unsupported or a predictor bug: the cell failed, the sweep goes on
        rows = _placeholder_rows(spec, cell.cid, cell.config, cell.repeats, "failed",
                                 f"prediction failed: {type(exc).__name__}: {exc}")
        return _CellResult(cell.cid, rows, _status({"failed"} | cell.kept_status))
    rows = []
    for repeat in cell.repeats:
        row = _config_row(spec, cell.cid, cell.config, repeat)
        row.update(predicted_row(prediction), **rank.row_fields(cell.config, shape_only=True), status="ok", error="")
        rows.append(row)
    return _CellResult(cell.cid, rows, _status({"ok"} | cell.kept_status))


def _status(statuses: set[str]) -> str:
    return "failed" if "failed" in statuses else "skipped" if "skipped" in statuses else "ok"


def _cell_rows(spec: Spec, pending: _Pending, result: CellResult) -> _CellResult:
    """The launcher's result as runs.csv rows: the cell's rows (numbered by the repeats it was asked for) with
    the config, then a failed row for each repeat it did not deliver."""
    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    for obj, repeat in zip(result.rows, pending.repeats):
        layers += [{**entry, "experiment": spec.name, "cell": pending.cid, "repeat": repeat}
                   for entry in obj.get("by_op") or ()]
        row = _config_row(spec, pending.cid, pending.config, repeat)
        row.update({k: v for k, v in obj.items() if k in ROW_FIELDS})
        row.update(experiment=spec.name, cell=pending.cid, repeat=repeat, worker=result.worker or None)
        row["status"] = row.get("status") or "ok"
        rows.append(row)
    if result.error:
        rows += _placeholder_rows(spec, pending.cid, pending.config, pending.repeats[len(rows):], "failed",
                                  explain_memory_failure(result.error, result.memory_limit_bytes),
                                  pending.verdict.predicted)
        for row in rows[len(result.rows):]:
            row.update(host=result.host or None, worker=result.worker or None)
    return _CellResult(pending.cid, rows, _status({r["status"] for r in rows} | pending.kept_status), layers)


# --- the sweep --------------------------------------------------------------------------------------

def _postfix(outcome: SweepOutcome) -> str:
    resumed = f"resumed={outcome.resumed} " if outcome.resumed else ""
    return f"{resumed}ok={outcome.ok} skipped={outcome.skipped} failed={outcome.failed}"


def choose_timeline_cell(cells: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A training cell of the middle depth and the batch nearest 256 (the report's timeline); sqrt checkpointing
    if the grid has it. A grid with generation cells shows one of those instead: most decode steps, and the middle
    one in grid order of those left."""
    generate = [c for c in cells if c["mode"] == "generate"]
    if generate:
        most = max(c["new_tokens"] for c in generate)
        cells = [c for c in generate if c["new_tokens"] == most]
    train = [c for c in cells if c["mode"] in ("train", "generate")]
    if not train:
        return None
    depths = sorted({c["depth"] for c in train})
    depth = depths[len(depths) // 2]
    at_depth = [c for c in train if c["depth"] == depth]
    batch = nearest_batch({c["batch_size"] for c in at_depth})
    candidates = [c for c in at_depth if c["batch_size"] == batch]
    if generate:
        return candidates[len(candidates) // 2]
    # a checkpointing study shows its recompute: prefer the sqrt strategy's step when there is one
    return next((c for c in candidates if c.get("checkpoint") == "sqrt"), candidates[0])


_DEFAULT = DEFAULT_PREDICTOR


def run_sweep(spec: Spec, out_dir: str | Path, jobs: int | None = None, fresh: bool = False, progress: bool = True,
              cell_command: Sequence[str] | None = None, predictor: Any = _DEFAULT,
              available_bytes: int | None = None, retry_failed: bool = False,
              git: dict[str, Any] | None = None, cluster: str | None = None) -> SweepOutcome:
    """Run every (cell, repeat) of `spec` not yet in `out_dir/runs.csv`; see the module docstring.

    `cluster`: run the cells on a Dask cluster (`tcp://host:8786`, or `local:N` for N local worker processes,
    executors/dask.py) instead of `jobs` local processes. `cell_command` (default: the cell module under the
    Python of the machine that runs it) and `predictor` (default: memstudy.measure.predict.predict, stopped
    early by the budget; None disables the budget check) are injectable for tests. `git`: the checkout's state
    if the caller read it already (`study --all` reads it once, before any study writes).
    Raises SweepError when `out_dir` holds results this spec would reinterpret (unless `fresh`) or the cluster
    cannot be used, PathError when `out_dir` cannot be written or another process writes into it.
    """
    started = time.monotonic()
    if jobs is not None and jobs < 1:
        raise SweepError(f"jobs must be at least 1, got {jobs}")
    out = results_folder(out_dir, "results folder")
    git = git_info() if git is None else git  # before --fresh deletes tracked result files
    with FolderLock(out, "sweep"):
        run = _Run(spec, out, spec.jobs if jobs is None else jobs, cell_command, retry_failed, git, started)
        return run.go(fresh, progress, predictor, available_bytes, cluster)


def _read_existing(out: Path, runs: Path) -> tuple[dict[str, Any] | None, RunsFile | None]:
    """env.json and runs.csv as the folder holds them (None, None for a new folder)."""
    if not runs.exists() or runs.stat().st_size == 0:
        return None, None
    previous_env = read_env(out)
    if not (previous_env or {}).get("spec", {}).get("name"):
        raise SweepError(f"{out} holds a runs.csv but no readable env.json with its spec; use --fresh or another --out")
    try:
        return previous_env, read_runs(runs)
    except RunsFileError as exc:
        raise SweepError(f"{exc}; use --fresh or another --out") from None


def _open_cluster(address: str, command: Sequence[str] | None) -> Any:
    from .executors.dask import ClusterError, DaskExecutor

    try:
        return DaskExecutor(address, command)
    except ClusterError as exc:
        raise SweepError(str(exc)) from None


def _host_environment(env: dict[str, Any]) -> dict[str, Any]:
    """The per-host part of a collect_env() record (what env.json's `hosts` keeps for each machine)."""
    keys = ("memstudy_version", "git", "python", "packages", "numpy", "machine", "os", "environment",
            "cell_environment")
    return {k: env[k] for k in keys if k in env}


class _Run:
    """One sweep session in a locked folder: plan what is missing, check the budget, run, record."""

    def __init__(self, spec: Spec, out: Path, jobs: int, cell_command: Sequence[str] | None, retry_failed: bool,
                 git: dict[str, Any], started: float):
        self.spec, self.out, self.jobs, self.retry_failed, self.git, self.started = (
            spec, out, jobs, retry_failed, git, started)
        self.cell_command = list(cell_command) if cell_command is not None else None
        self.runs, self.env_path = out / "runs.csv", out / "env.json"
        self.cell_env = cell_environment(jobs=jobs)
        self.predicted: list[_Pending] = []  # a shape-only spec's cells, predicted as _execute records them

    def go(self, fresh: bool, progress: bool, predictor: Any, available_bytes: int | None,
           cluster: str | None) -> SweepOutcome:
        spec, out = self.spec, self.out
        if fresh:
            for name in SWEEP_FILES:
                (out / name).unlink(missing_ok=True)
        previous_env, existing = _read_existing(out, self.runs)
        changes = check_compatible(str(out), (previous_env or {}).get("spec"), existing, spec)
        self.sources = {m: model_source(m) for m in dict.fromkeys(c["model"] for c in spec.cells())}
        check_model_sources(str(out), existing, spec, self.sources)
        dask = _open_cluster(cluster, self.cell_command) if cluster else None  # before anything is written
        try:
            if dask is not None:  # each worker's budget is the spec's budget of that worker's memory
                dask.set_budgets(lambda memory: spec.budget_bytes(available_bytes or memory))
                budget, label = dask.largest_budget_bytes(), f"budget {spec.budget!r} of the largest worker's memory"
            else:
                budget, label = spec.budget_bytes(available_bytes), f"budget {spec.budget!r}"
            cell_env = self.cell_env
            checker = BudgetCheck(budget, label, predictor, lambda: process_baseline(cell_env),
                                  max_seconds=spec.timeout_seconds)
            outcome = SweepOutcome(out, self.runs, self.env_path, cells=len(spec.cells()), resumed=0, changes=changes)
            if existing is not None:
                outcome.warnings += [f"{self.runs}: {problem}; repaired" for problem in existing.problems]
            if not checker.enabled:
                outcome.warnings.append("budget not checked: no predictor")
            pending, dropped = self._plan(existing, checker, outcome)
            to_run, finished = self._check(pending, checker)
            outcome.warnings += checker.warnings
            columns = csv_columns(spec, existing.columns if existing is not None else ())
            timeline_cid = self._timeline_cell(to_run)
            env = self._record_session(previous_env, changes, budget, checker, to_run, timeline_cid, dask)
            if existing is None:  # only now: runs.csv without env.json is refused
                rewrite_runs(self.runs, [], columns)
            elif existing.damaged or dropped or (existing.columns != columns
                                                 and (to_run or finished or self.predicted)):
                rewrite_runs(self.runs, [r for r in existing.rows if id(r) not in dropped], columns)
            if dask is not None:
                executor = dask
            else:
                executor = LocalExecutor(self.jobs, command=self.cell_command, env=self.cell_env, budget_bytes=budget)
            dask = None  # the executor owns the cluster from here: _execute shuts it down
            self._execute(executor, outcome, columns, to_run, finished, timeline_cid, progress)
        finally:
            if dask is not None:
                dask.shutdown()
        # the session's wall time, start to last row, so that a README can quote what a study took
        env["sessions"][-1]["wall_seconds"] = round(time.monotonic() - self.started, 3)
        write_json(self.env_path, env)
        if (out / "timeline.csv").exists():
            outcome.timeline = out / "timeline.csv"
        return outcome

    def _plan(self, existing: RunsFile | None, checker: BudgetCheck,
              outcome: SweepOutcome) -> tuple[list[_Pending], set[int]]:
        """What each cell still needs: its missing repeats (failed ones too under retry_failed, skipped ones the
        budget now admits); the id() of the rows that leave runs.csv."""
        by_cell: dict[str, list[dict[str, str]]] = {}
        for row in existing.rows if existing is not None else []:
            by_cell.setdefault(row["cell"], []).append(row)
        dropped: set[int] = set()
        pending: list[_Pending] = []
        for config in self.spec.cells():
            cid = cell_id(config)
            rows = by_cell.get(cid, [])
            verdict = None
            if self.retry_failed and any(r["status"] == "failed" for r in rows):
                dropped.update(id(r) for r in rows if r["status"] == "failed")
                outcome.retried += 1
            if any(r["status"] == "skipped" for r in rows):
                verdict = checker.check(config)
                if checker.enabled and not verdict.skip_reason and not verdict.error:
                    dropped.update(id(r) for r in rows if r["status"] == "skipped")
            kept = [r for r in rows if id(r) not in dropped]
            have = {r["repeat"] for r in kept}
            missing = [r for r in range(self.spec.repeats) if str(r) not in have]
            statuses = {r["status"] for r in kept}
            if missing:
                pending.append(_Pending(cid, config, missing, verdict, statuses))
            else:
                outcome.resumed += 1
                outcome.failed_before += "failed" in statuses
        return pending, dropped

    def _check(self, pending: list[_Pending], checker: BudgetCheck) -> tuple[list[_Pending], list[_CellResult]]:
        """The budget first: skipped cells cost nothing and must not distort the ETA. A shape-only spec's cells have
        no budget and start no process: `_execute` predicts them one by one (`self.predicted`)."""
        to_run: list[_Pending] = []
        finished: list[_CellResult] = []
        if not self.spec.measure:
            self.predicted = pending
            return to_run, finished
        for cell in pending:
            verdict = cell.verdict = cell.verdict or checker.check(cell.config)
            if verdict.error or verdict.skip_reason:
                status = "failed" if verdict.error else "skipped"
                rows = _placeholder_rows(self.spec, cell.cid, cell.config, cell.repeats, status,
                                         verdict.error or verdict.skip_reason, verdict.predicted)
                finished.append(_CellResult(cell.cid, rows, _status({status} | cell.kept_status)))
                continue
            to_run.append(cell)
        return to_run, finished

    def _timeline_cell(self, to_run: list[_Pending]) -> str | None:
        if (self.out / "timeline.csv").exists():
            return None
        chosen = choose_timeline_cell([c.config for c in to_run])
        return cell_id(chosen) if chosen is not None else None

    def _record_session(self, previous_env: dict[str, Any] | None, changes: list[str], budget: int,
                        checker: BudgetCheck, to_run: list[_Pending], timeline_cid: str | None,
                        dask: Any) -> dict[str, Any]:
        """env.json: the first record (provenance of this host), the current spec, every host that measured,
        and this session (what changed, the git state, the settings and where the cells ran)."""
        spec = self.spec
        baseline = checker.baseline if checker.enabled and to_run and dask is None else None
        default_command = self.cell_command is None or self.cell_command == list(CELL_COMMAND)
        session = {"jobs": self.jobs, "budget_bytes": budget, "cell_command": self.cell_command or list(CELL_COMMAND),
                   # how a local cell starts: forked by the fork server, or a fresh interpreter (launcher.py)
                   "launcher": "fork server" if default_command and forkserver.wanted(self.cell_env) else "exec",
                   "timeline_cell": timeline_cid,
                   "cell_baseline": None if baseline is None else {"vm_peak_bytes": baseline.vm_peak_bytes,
                                                                   "hwm_bytes": baseline.hwm_bytes},
                   "executor": dask.address if dask is not None else "local"}
        if dask is not None:
            session["workers"] = dask.worker_hosts()
        else:  # a Dask worker's host records its own (env.json's hosts)
            session["blas_threads"] = blas_policy(self.cell_env)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if previous_env is None:
            env = collect_env(spec, cell_environment=self.cell_env, extra={"sweep": session}, git=self.git)
            env["sessions"] = []
        else:  # a resume keeps the first record, takes the current spec, and notes what this session ran with
            env = {**previous_env, "spec": spec_record(spec), "sessions": list(previous_env.get("sessions", []))}
        hosts = dict(env.get("hosts") or {})
        if dask is not None:
            for host, host_env in dask.host_environments().items():
                hosts[host] = host_env
        else:
            hosts[socket.gethostname()] = _host_environment(
                collect_env(cell_environment=self.cell_env, git=self.git) if previous_env is not None else env)
        env["hosts"] = hosts
        env["sessions"].append({
            "recorded_at": now, "resumed": previous_env is not None, **session, "spec_hash": spec.hash,
            "changes": changes, "retry_failed": self.retry_failed, "git": self.git, "model_sources": self.sources,
        })
        write_json(self.env_path, env)
        if spec.text:
            write_text_atomically(self.out / "spec.toml", spec.text)
        return env

    def _execute(self, executor: Any, outcome: SweepOutcome, columns: tuple[str, ...], to_run: list[_Pending],
                 finished: list[_CellResult], timeline_cid: str | None, progress: bool) -> None:
        """Submit every cell, append each cell's rows as its future completes (this process is the only
        writer), and stop every cell on an interrupt."""
        from tqdm import tqdm

        spec = self.spec
        bar = tqdm(total=outcome.cells, initial=outcome.resumed, desc=spec.name, unit="cell", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True, mininterval=0, postfix=_postfix(outcome))

        agreement = Tally()  # predictions that differ from their ledger, or are unavailable: warned at the end

        def record(result: _CellResult) -> None:
            for row in result.rows:  # a row the cell did not stamp (skipped, failed): this session's source
                if not row.get("model_source_hash"):
                    source = self.sources.get(row.get("model") or DEFAULT_FAMILY)
                    row["model_source_hash"] = source["sha256"] if source else None
            if result.layers:
                append_layers(self.out / LAYERS_CSV, result.layers)
            append_rows(self.runs, result.rows, columns)
            agreement.add(result.rows)
            setattr(outcome, result.status, getattr(outcome, result.status) + 1)
            bar.set_postfix_str(_postfix(outcome), refresh=False)  # before update, which redraws: no lag
            bar.update(1)

        submitted: dict[cf.Future, _Pending] = {}
        try:
            for result in finished:
                record(result)
            for cell in self.predicted:  # each shape-only cell's rows written as its prediction ends (crash-safe)
                record(_predicted_cell(spec, cell))
            for cell in to_run:
                need = cell.verdict.need
                request = CellRequest(cell.config, len(cell.repeats), by_layer=True,
                                      timeout_seconds=spec.timeout_seconds,
                                      memory_own_bytes=need.own_bytes if need is not None else None,
                                      return_timeline=cell.cid == timeline_cid)
                submitted[executor.submit(request, reserve_bytes=need.total_bytes if need else 0)] = cell
            lost: list[CellLost] = []
            for future in cf.as_completed(submitted):
                cell = submitted[future]
                try:
                    result = future.result()
                except CellLost as exc:  # the cluster's failure, not the cell's: no row, so that a resume runs it
                    lost.append(exc)
                    continue
                except Exception as exc:  # the executor gave up on the cell (Dask: it killed workers): a failed cell
                    result = CellResult(error=f"{type(exc).__name__}: {exc}")
                if result is None:  # interrupted before it started
                    continue
                if result.timeline_csv is not None:
                    write_text_atomically(self.out / "timeline.csv", result.timeline_csv)
                record(_cell_rows(spec, cell, result))
            if lost:
                raise SweepError(f"{lost[0]}; {len(lost)} cells not run (no row written): run the same command again "
                                 "to run them")
        except BaseException:  # KeyboardInterrupt, or a failure writing runs.csv: stop every cell we started
            executor.stop()
            raise
        finally:
            executor.shutdown()
            bar.close()
            outcome.warnings += agreement.warnings()


__all__ = ["CSV_COLUMNS", "EXIT_CELLS_FAILED", "EXIT_OK", "LAYER_COLUMNS", "SweepError", "SweepOutcome", "append_layers",
           "append_rows",
           "cell_environment", "choose_timeline_cell", "format_rows", "header_line", "run_sweep"]

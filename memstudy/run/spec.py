"""Experiment specs: a TOML file -> a checked grid of cells.

    [study]  name, description
    [grid]   `model` (a family's name or path/to/file.py:ClassName; default mlp) and any config field that
             family declares (its own fields and the shared ones, see nn/models/registry.py), each a value
             or a list of values; the cells are the cartesian product, in the order the keys appear;
             `precision` (names such as "bf16-mixed", registry.PRECISIONS) sets the four precision fields;
             `hf_config = "path/config.json"` (relative to the spec file) fills the fields the grid does not
             give from a Hugging Face config (and `model`, from its model_type)
    [run]    repeats, budget, timeout_seconds, jobs, skip_refused, measure (false: every cell shape-only, below)

TOML has no null: leave `in_features` out of the grid to mean "as many input features as `width`".
A relative model file path is the spec file's: it is resolved against the spec's folder, not the working
directory (the cells, and so the rows, carry the absolute path; `Spec.grid` keeps what the file says). A field
may be given by an alias it declares (`classes` for the MLP's `out_features`); the grid stores the field's name.

Every error is a `SpecError` whose one-line message names the offending key (e.g. `grid.depth`), with a
"did you mean" when the key or value looks like a typo of an allowed one.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..nn.models.hf_config import hf_config_fields
from ..nn.models.registry import DEFAULT_FAMILY, PRECISIONS, ConfigError, Family, did_you_mean, get_family, normalize, rename_aliases
from ..units import parse_bytes

TABLES = ("study", "grid", "run")
STUDY_KEYS = ("name", "description")
RUN_KEYS = ("repeats", "budget", "timeout_seconds", "jobs", "skip_refused", "measure")
# skip_refused: grid points whose combination a family refuses (tensor_parallel not dividing heads) are left out of
# the cells instead of refusing the spec, so a sweep can cross parallel fields with model shapes
# measure = false: no cell is measured; each one's rows are its prediction (the step, or a rank's graph, run on
# shape-only arrays: bytes exact for that graph, no timings, no probes), shape_only true (run/sweep.py)
RUN_DEFAULTS: dict[str, Any] = {"repeats": 3, "budget": "75%", "timeout_seconds": 600.0, "jobs": 1,
                                "skip_refused": False, "measure": True}



class SpecError(ValueError):
    """A spec is unreadable or refused; the message is one line and names the offending key."""


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    grid: dict[str, tuple]  # field -> its values (a scalar in the TOML becomes a 1-tuple), in file order
    repeats: int
    budget: str | int  # as written: bytes, "4GiB", "500MB" or "75%"
    timeout_seconds: float | None
    jobs: int
    path: Path | None = None
    text: str = ""  # the TOML source, copied next to the results
    hash: str = field(default="")
    skip_refused: bool = False  # refused combinations are not cells (RUN_DEFAULTS)
    measure: bool = True  # False: every cell predicted only, shape-only (RUN_DEFAULTS)

    def model(self, written: Any) -> Any:
        """The model a grid value names, a relative file path resolved against the spec's folder."""
        return resolve_model(written, self.path.parent if self.path is not None else None)

    def cells(self) -> list[dict[str, Any]]:
        """One normalised config per grid point (defaults filled in, in_features resolved), grid order. Grid points
        that differ only in fields that do not apply to their mode (generation's outside mode generate, which
        normalise to None) are one cell."""
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            raw = dict(zip(keys, values))
            if "model" in raw:
                raw["model"] = self.model(raw["model"])
            try:
                config = normalize(raw)
            except ConfigError as exc:  # values were checked one by one; this catches combinations
                if self.skip_refused:
                    continue
                raise SpecError(f"grid: {exc}") from None
            if any(config.get(k) is None for k in keys) and config in out:
                continue  # a field this mode ignores was all that told it from an earlier point
            out.append(config)
        return out

    def varying(self) -> list[str]:
        """The grid fields with more than one value."""
        return [k for k, v in self.grid.items() if len(v) > 1]

    def budget_bytes(self, available_bytes: int | None = None) -> int:
        """The budget in bytes; a percentage is of `available_bytes` (default: psutil's available memory)."""
        return parse_budget(self.budget, available_bytes)


def cell_id(config: dict[str, Any]) -> str:
    """A stable short name built from a normalised config's values, e.g. d8-w256-i256-o10-b64-relu-bias-...

    MLP cells keep the names of the first studies (so their results resume); every other family's cell is
    named by the family and each of its fields' values, in declaration order. An optional field (registry.Field)
    is named only when it is set.
    """
    model = config.get("model") or DEFAULT_FAMILY
    fields = get_family(model).all_fields()
    if model != "mlp":
        label = Path(model.split(":")[0]).stem + ":" + model.split(":")[1] if ":" in model else model
        return "-".join([label] + [f"{f.name}={_id_value(config[f.name])}" for f in fields
                                   if not (f.optional and config[f.name] == f.default)])
    in_features = config.get("in_features") or config["width"]
    optional = [f"{f.name}={_id_value(config[f.name])}" for f in fields
                if f.optional and config.get(f.name, f.default) != f.default]
    return "-".join([
        f"d{config['depth']}", f"w{config['width']}", f"i{in_features}", f"o{config['out_features']}",
        f"b{config['batch_size']}", str(config["activation"]), "bias" if config["bias"] else "nobias",
        str(config["dtype"]), str(config["mode"]), str(config["optimizer"]), str(config["checkpoint"]),
        str(config["policy"]), f"s{config['seed']}", *optional,
    ])


def _id_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve_model(written: Any, base: Path | None) -> Any:
    """`path/to/file.py:Class` with a relative path made absolute against `base` (the spec's folder); a
    built-in family's name, an absolute path or anything else unchanged (get_family judges it)."""
    if not isinstance(written, str) or base is None:
        return written
    path_text, _, class_name = written.rpartition(":")
    if not path_text.endswith(".py") or Path(path_text).is_absolute():
        return written
    return f"{(base / path_text).resolve()}:{class_name}"


def grid_fields(models: tuple) -> dict[str, Family]:
    """Every key a grid may use for these models: `model`, then each family's fields and their aliases (the first
    family that declares a field checks its values)."""
    allowed: dict[str, Family] = {}
    for name in models:
        family = get_family(name)
        for f in family.all_fields():
            for key in (f.name, *f.aliases):
                allowed.setdefault(key, family)
    return allowed


def parse_budget(budget: str | int, available_bytes: int | None = None) -> int:
    """Bytes from an int, "4GiB", "500MB", "1.5 GB" or "75%" (of `available_bytes`, default psutil's)."""
    try:
        return parse_bytes(budget, "run.budget", available_bytes)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _check_table(data: dict, table: str, allowed: tuple[str, ...]) -> dict:
    value = data.get(table, {})
    if not isinstance(value, dict):
        raise SpecError(f"{table}: must be a table [{table}], got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            hint = " (repeats go in [run])" if table == "grid" and key == "repeat" else did_you_mean(key, allowed)
            raise SpecError(f"{table}.{key}: unknown key{hint}; allowed: {', '.join(allowed)}")
    return value


def _canonical_grid(grid_raw: dict[str, Any], families: dict[str, Family]) -> dict[str, Any]:
    """The grid with each alias renamed to its field's name (in its place), so that a spec says `classes` or
    `out_features` and means the same cells, hash and rows."""
    aliases = {key: families[key].aliases()[key] for key in grid_raw if key in families
               and key in families[key].aliases()}
    try:
        return rename_aliases(grid_raw, aliases)
    except ConfigError as exc:  # "out_features is given twice, ..."
        raise SpecError(f"grid.{exc}") from None


def _check_grid_value(key: str, value: Any, family: Family) -> None:
    """One grid value against its field's own rules; rules between fields are checked on the cells, where the
    other fields have their grid values (kv_heads = 8 is fine beside heads = 32, not beside the default 4)."""
    try:
        family.check_field(next(f for f in family.all_fields() if f.name == key), value)
    except ConfigError as exc:
        raise SpecError(f"grid.{key}: {exc}") from None


def _with_hf_config(grid: dict[str, Any], spec_path: Path | None, cli_path: str | None) -> dict[str, Any]:
    """The grid with the fields a Hugging Face config fills (those the grid does not give) and its family as
    `model`; `cli_path` (--hf-config, relative to the working folder) replaces the grid's `hf_config` (relative to
    the spec file)."""
    grid = dict(grid)
    source = grid.pop("hf_config", None)
    if cli_path is not None:
        source = cli_path
    elif not isinstance(source, str) or not source:
        raise SpecError(f"grid.hf_config: the path of one config.json, got {source!r}")
    elif spec_path is not None and not Path(source).is_absolute():
        source = str(Path(spec_path).parent / source)
    model = grid.get("model")
    if model is not None and not isinstance(model, str):
        raise SpecError(f"grid.hf_config: one config describes one model, got model = {model!r}")
    try:
        family, fields = hf_config_fields(source, model)
    except ConfigError as exc:
        raise SpecError(f"grid.hf_config: {exc}") from None
    return {"model": family.name, **{k: v for k, v in grid.items() if k != "model"},
            **{k: v for k, v in fields.items() if k not in grid}}


def parse_spec(data: dict[str, Any], *, name: str = "study", path: Path | None = None, text: str = "",
               hf_config: str | None = None) -> Spec:
    """A checked Spec from parsed TOML (a dict); `name` is used when [study] has none; `hf_config` (a path) as
    --hf-config gives it."""
    for table in data:
        if table not in TABLES:
            guess = did_you_mean(table, TABLES)
            kind = f"unknown table; did you mean [{guess[len('; did you mean '):-1]}]?" if guess else \
                "unknown table or key"
            raise SpecError(f"{table}: {kind} A spec has [study], [grid] and [run]")
    study = _check_table(data, "study", STUDY_KEYS)
    grid_table = data.get("grid", {})
    if not isinstance(grid_table, dict):
        raise SpecError(f"grid: must be a table [grid], got {type(grid_table).__name__}")
    if "hf_config" in grid_table or hf_config is not None:
        grid_table = _with_hf_config(grid_table, path, hf_config)
        data = {**data, "grid": grid_table}
    models = grid_table.get("model", DEFAULT_FAMILY)
    models = tuple(models) if isinstance(models, list) else (models,)
    base = path.parent if path is not None else None
    try:
        families = grid_fields(tuple(resolve_model(m, base) for m in models))
    except ConfigError as exc:
        raise SpecError(f"grid.model: {exc}") from None
    grid_raw = _check_table(data, "grid", ("model", "precision", *families))
    grid_raw = _canonical_grid(grid_raw, families)
    run = {**RUN_DEFAULTS, **_check_table(data, "run", RUN_KEYS)}

    for key in STUDY_KEYS:
        if key in study and not isinstance(study[key], str):
            raise SpecError(f"study.{key} must be a string, got {study[key]!r}")
    study_name = study.get("name", name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study_name):
        raise SpecError(f"study.name must be a short name of letters, digits, '_', '-', '.', got {study_name!r}")

    if "grid" not in data or not grid_raw:
        raise SpecError("grid: empty; give at least one field, e.g. depth = [1, 2, 4]")
    grid: dict[str, tuple] = {}
    for key, value in grid_raw.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise SpecError(f"grid.{key}: empty list, the grid would have no cells")
        for v in values:
            if isinstance(v, (list, dict)):
                raise SpecError(f"grid.{key}: values must be plain numbers, strings or booleans, got {v!r}")
            if key == "precision":  # a name that sets the precision fields (registry.PRECISIONS)
                if v not in PRECISIONS:
                    raise SpecError(f"grid.precision: must be one of {', '.join(PRECISIONS)}, got {v!r}")
            elif key != "model":
                _check_grid_value(key, v, families[key])
        seen = []
        for v in values:
            if any(v == s and type(v) is type(s) for s in seen):
                raise SpecError(f"grid.{key}: duplicate value {v!r}")
            seen.append(v)
        grid[key] = tuple(values)

    repeats = run["repeats"]
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise SpecError(f"run.repeats must be an integer >= 1, got {repeats!r}")
    jobs = run["jobs"]
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SpecError(f"run.jobs must be an integer >= 1, got {jobs!r}")
    timeout = run["timeout_seconds"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SpecError(f"run.timeout_seconds must be a positive number of seconds, got {timeout!r}")
    budget = run["budget"]
    if isinstance(budget, float) and budget.is_integer():
        budget = int(budget)
    parse_budget(budget, available_bytes=1 << 30)  # checks the form now; a percentage is resolved at sweep time

    for key in ("skip_refused", "measure"):
        if not isinstance(run[key], bool):
            raise SpecError(f"run.{key} must be true or false, got {run[key]!r}")
    spec = Spec(
        name=study_name, description=study.get("description", ""), grid=grid, repeats=repeats,
        budget=budget, timeout_seconds=float(timeout), jobs=jobs, path=path, text=text,
        skip_refused=run["skip_refused"], measure=run["measure"],
    )
    cells = spec.cells()  # combinations are checked here, once
    if not cells:
        raise SpecError("grid: every combination is refused (run.skip_refused leaves none)")
    ids = [cell_id(c) for c in cells]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise SpecError(f"grid: two grid points make the same cell {duplicate}")
    return _with_hash(spec)


def spec_hash(spec: Spec) -> str:
    """Hash of what decides the rows (name, grid, repeats, budget, timeout); not jobs or description."""
    decides = {"name": spec.name, "grid": {k: list(v) for k, v in spec.grid.items()}, "repeats": spec.repeats,
               "budget": spec.budget, "timeout_seconds": spec.timeout_seconds}
    if spec.skip_refused:  # only when set: the specs written before it keep their hashes
        decides["skip_refused"] = True
    if not spec.measure:  # the same: only when set
        decides["measure"] = False
    canonical = json.dumps(decides, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _with_hash(spec: Spec) -> Spec:
    object.__setattr__(spec, "hash", spec_hash(spec))
    return spec


def load_spec(path: str | Path, hf_config: str | None = None) -> Spec:
    """Read and check a spec file; raises SpecError (one line, naming the key) on any problem. `hf_config`: a
    Hugging Face config.json that replaces the grid's `hf_config`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None
    return parse_spec(data, name=path.stem, path=path, text=text, hf_config=hf_config)


__all__ = ["Spec", "SpecError", "cell_id", "load_spec", "parse_budget", "parse_spec",
           "spec_hash"]

"""`memstudy plan`'s text from the CLI's parsed flags: sizes read, choices checked, the search run and rendered."""
from __future__ import annotations

import json
from typing import Any

from ..units import parse_bytes
from . import model_fields
from .output import json_lines, nothing_fits, plan_document
from .search import default_reserve_bytes, search
from .space import Choices, Machines, PlanError


def _size(text: str, flag: str) -> int:
    if "%" in str(text):
        raise PlanError(f"{flag} must be a size like 80GB or 24GiB (a percentage of this machine's memory says "
                        f"nothing about the devices), got {text!r}")
    try:
        return parse_bytes(text, flag)
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def _sets(sets: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise PlanError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            fields[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[name.strip()] = value  # a bare word: a string
    return fields


def run_plan(*, model: str | None, hf_config: str | None, sets: list[str], seq_len: int | None, global_batch: int,
             devices: int, device_memory: str, devices_per_node: int | None, reserve: str | None,
             choices: dict[str, Any], top: int, as_json: bool, progress: bool, argv: list[str] | None = None,
             jobs: int | None = None) -> str:
    """The plan as terminal text (or JSON Lines); PlanError (one line) for bad input or when nothing fits."""
    memory = _size(device_memory, "--device-memory")
    reserve_bytes = default_reserve_bytes(memory) if reserve is None else (
        0 if str(reserve).strip() in ("0", "0B") else _size(reserve, "--reserve"))
    machines = Machines(devices, memory, reserve_bytes, devices_per_node)
    family, base = model_fields(model, hf_config, seq_len)
    fixed = _sets(sets)
    for name in fixed:
        if name not in {f.name for f in family.all_fields()}:
            raise PlanError(f"--set {name}: model {family.name!r} has no field {name!r}")
    base.update(fixed)
    result = search(family, base, machines, global_batch, Choices(**choices), progress=progress, jobs=jobs)
    if as_json:
        return "\n".join(json_lines(result))
    if not result.ranked:
        raise nothing_fits(result)
    model_arg = f"--hf-config {hf_config}" if hf_config else f"--model {family.name}"
    flags = {f.name: f for f in family.all_fields()}
    for name, value in fixed.items():
        flag = flags[name].cli_flag
        model_arg += f" {flag if value else '--no-' + flag[2:]}" if isinstance(value, bool) else f" {flag} {value}"

    title = (f"memstudy plan: {family.name}, {', '.join(f'{k} {v}' for k, v in base.items() if k == 'seq_len')}"
             f"{', ' if 'seq_len' in base else ''}global batch {global_batch}, {devices} × {device_memory}")
    from ..report.terminal import render

    return render(plan_document(result, top or None, model_arg, title))


__all__ = ["run_plan"]

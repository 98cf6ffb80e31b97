"""Hugging Face config.json files: read one, find the family that reads its `model_type`, and the fields it fills.

Every family that can (`Family.hf_model_types`, `Family.from_hf_config`) maps its config's keys to its own fields
(llama from `LlamaConfig`, gpt from `GPT2Config`) and refuses, in one line naming the key, any key it cannot
honour; nothing is ignored silently except the keys a family lists as not changing what is computed. The CLI's
`--hf-config` and a spec's `hf_config` use `hf_config_fields`; fields given explicitly (flags, grid keys) override
the file's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .registry import ConfigError, Family, builtin_names, get_family


def read_hf_config(source: dict[str, Any] | str | Path) -> dict[str, Any]:
    """The config as a dict (a dict is returned as it is); ConfigError for a missing or unreadable file, invalid
    JSON, or JSON that is not an object."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"hf config {path}: no such file" if not path.exists() else f"hf config {path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"hf config {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"hf config {path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"hf config {path}: a config.json holds a JSON object, got {type(data).__name__}")
    return data


def family_for(hf: dict[str, Any], model: str | None = None) -> Family:
    """The family that reads this config: the one `model` names (which must read its model_type), else the
    built-in family whose `hf_model_types` has it."""
    model_type = hf.get("model_type")
    readers = {t: name for name in builtin_names() for t in get_family(name).hf_model_types}
    if model is not None:
        family = get_family(model)
        if not family.hf_model_types:
            raise ConfigError(f"model {family.name!r} reads no Hugging Face config (these do: "
                              f"{', '.join(sorted(set(readers.values())))})")
        if model_type is not None and model_type not in family.hf_model_types:
            raise ConfigError(f"hf config: model_type {model_type!r} is not a {family.name} config (model "
                              f"{family.name!r} reads {', '.join(family.hf_model_types)})")
        return family
    if model_type is None:
        raise ConfigError("hf config: no model_type; name the family with --model (or model in the grid)")
    if model_type not in readers:
        known = ", ".join(f"{t} ({n})" for t, n in sorted(readers.items()))
        raise ConfigError(f"hf config: model_type {model_type!r} is not one memstudy reads ({known})")
    return get_family(readers[model_type])


def hf_config_fields(source: dict[str, Any] | str | Path, model: str | None = None) -> tuple[Family, dict[str, Any]]:
    """(family, the fields the config fills) for a config path or dict; ConfigError in one line otherwise."""
    hf = read_hf_config(source)
    family = family_for(hf, model)
    return family, family.from_hf_config(hf)


__all__ = ["family_for", "hf_config_fields", "read_hf_config"]

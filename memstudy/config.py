"""One model-and-step configuration: defaults filled in, every field checked, one-line errors."""
from __future__ import annotations

from typing import Any

from .study.fields import CHOICES, CONFIG_DEFAULTS, CONFIG_FIELDS

INTEGER_FIELDS = ("depth", "width", "in_features", "out_features", "batch_size", "seed", "repeat")
# Smallest legal value of each integer field.
MINIMUM = {"depth": 1, "width": 1, "in_features": 1, "out_features": 1, "batch_size": 1, "seed": 0, "repeat": 0}


class ConfigError(ValueError):
    """A configuration field is missing, of the wrong type, or out of range (message names the field)."""


def normalize(raw: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in (in_features = width when absent or None), types and ranges checked."""
    unknown = [k for k in raw if k not in CONFIG_FIELDS]
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r}")
    config = {**CONFIG_DEFAULTS, **{k: v for k, v in raw.items() if k != "repeat"}}
    if config.get("in_features") is None:
        config["in_features"] = config["width"]
    for name in INTEGER_FIELDS:
        if name not in config:
            continue
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if value < MINIMUM[name]:
            raise ConfigError(f"{name} must be at least {MINIMUM[name]}, got {value}")
    if not isinstance(config["bias"], bool):
        raise ConfigError(f"bias must be true or false, got {config['bias']!r}")
    from .nn.modules import parse_checkpoint

    try:
        config["checkpoint"] = parse_checkpoint(config["checkpoint"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for name, allowed in CHOICES.items():
        if name == "checkpoint":
            continue
        if config[name] not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}, got {config[name]!r}")
    return {name: config[name] for name in CONFIG_FIELDS if name in config}

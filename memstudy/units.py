"""Bytes for humans, and byte sizes from humans ("4GiB", "500MB", "75%" of available memory)."""
from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}


def format_bytes(nbytes: float | int | None) -> str:
    """1536 -> '1.50 KiB'; None -> '—' (a probe that could not run)."""
    if nbytes is None:
        return "—"
    value = float(nbytes)
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def available_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def parse_bytes(text: str | int, what: str = "size", available_bytes: int | None = None) -> int:
    """'4GiB', '500MB', '1048576', 1048576 or '75%' (of `available_bytes`, default: available memory now)
    -> bytes; ValueError names `what`."""
    if isinstance(text, bool):
        raise ValueError(f"{what} must be a size like 4GiB, 500MB or 75%, got {text!r}")
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"{what} must be positive, got {text}")
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z%]*)\s*", str(text))
    if not match:
        raise ValueError(f"{what} must be a size like 4GiB, 500MB or 75%, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"{what} percentage must be in (0, 100], got {text!r}")
        base = available_memory_bytes() if available_bytes is None else available_bytes
        return int(base * number / 100)
    if unit not in _UNITS:
        raise ValueError(f"{what} has an unknown unit {match.group(2)!r} (use B, KB, MB, GB, KiB, MiB, GiB or %)")
    value = int(number * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {text!r}")
    return value

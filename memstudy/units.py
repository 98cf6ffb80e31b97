"""Bytes for humans, and byte sizes from humans ("4GiB", "500MB", "75%" of available memory)."""
from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50, "k": 2**10, "m": 2**20, "g": 2**30}
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def format_bytes(nbytes: float | int | None) -> str:
    """1536 -> '1.50 KiB', in the largest binary unit (up to YiB) below which the value stays: a predicted
    23 ZiB step reads as such, not as 23841857910156.25 GiB. None -> '—' (a probe that could not run)."""
    if nbytes is None:
        return "—"
    value = float(nbytes)
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in BINARY_UNITS:
        if value < 1024 or unit == BINARY_UNITS[-1]:
            # to 12 significant digits first: a byte count from a least-squares fit carries floating-point noise in
            # its last digits that differs between machines (33407.999999999105 here, 33408.000000001 there), and
            # 32.625 KiB must not print as 32.62 on one and 32.63 on the other
            value = float(f"{value:.12g}")
            if unit == "B":
                return f"{sign}{value:.0f} B"
            return f"{sign}{value:{',' if value >= 1024 else ''}.2f} {unit}"  # grouped only past the last unit
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
        raise ValueError(f"{what} has an unknown unit {match.group(2)!r} (use B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB or %)")
    value = int(number * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {text!r}")
    return value

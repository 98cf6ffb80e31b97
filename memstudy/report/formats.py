"""How the report writes a number: one function per kind of figure, used by every renderer.

A table cell (`document.Cell`) keeps its value and names one of these formats; Markdown, HTML and the terminal
all call `text(format, value, digits)`, so the same value reads the same everywhere and no renderer ever parses
a number back out of text. A missing value (None, NaN, pandas NA) is "—".
"""
from __future__ import annotations

import math
from typing import Any, Callable

from ..units import format_bytes

MISSING = "—"
from ..measure.load import LOADED_CORES  # the one threshold: a timing above it was taken under load


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN; pandas NA raises TypeError
    except TypeError:
        return True


def bytes_text(value: Any) -> str:
    """A byte count in binary units (`12.00 MiB`)."""
    if is_missing(value) or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return format_bytes(value)


def exact_bytes_text(value: Any) -> str:
    """'12.00 MiB = 12,582,912 B': the human figure and the exact count a CSV holds."""
    if is_missing(value) or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{format_bytes(value)} = {int(round(float(value))):,} B"


def short_bytes_text(value: float) -> str:
    """An axis tick: three significant digits in binary units (`1.5 MiB`), "0" at or below zero."""
    if value <= 0:
        return "0"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return str(value)  # pragma: no cover


def coef_text(value: Any) -> str:
    """A fitted coefficient in bytes: exact-looking below 1 KiB, human units above."""
    if is_missing(value) or not math.isfinite(float(value)):
        return MISSING
    value = round(float(value), 2) + 0.0  # no "-0.00 B", no "1024.00 KiB" for a slope of 1 MiB - 1e-6
    return f"{value:,.2f} B" if abs(value) < 1024 else format_bytes(value)


def percent_text(value: Any, signed: bool = True, digits: int = 2) -> str:
    """A fraction as a percentage: `+1.23%` (signed) or `1.23%`."""
    if is_missing(value) or not math.isfinite(float(value)):
        return MISSING
    return f"{float(value) * 100:+.{digits}f}%" if signed else f"{float(value) * 100:.{digits}f}%"


def ratio_text(value: Any, digits: int = 3) -> str:
    if is_missing(value) or not math.isfinite(float(value)):
        return MISSING
    return f"{float(value):.{digits}f}"


def _fixed(value: Any, digits: int) -> str:
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.000"


# name -> (text of a present value, default digits). Each format says what its number is; `digits` where the
# format has a precision.
FORMATS: dict[str, tuple[Callable[[Any, int], str], int]] = {
    "integer": (lambda v, d: str(int(v)), 0),  # 12
    "count": (lambda v, d: f"{int(v):,}", 0),  # 12,582,912
    "bytes": (lambda v, d: format_bytes(v), 0),  # 12.00 MiB
    "coef": (lambda v, d: coef_text(v), 0),  # 1,024.00 B
    "fixed": (_fixed, 3),  # 0.123
    "grouped": (lambda v, d: f"{float(v):,.{d}f}", 1),  # 1,024.0
    "sci": (lambda v, d: f"{float(v):.{d}e}", 2),  # 1.00e-04
    "percent": (lambda v, d: f"{float(v) * 100:.{d}f}%", 2),  # 12.34%
    "signed_percent": (lambda v, d: f"{float(v) * 100:+.{d}f}%", 2),  # +12.34%
    "times": (lambda v, d: f"{float(v):.{d}f}×", 2),  # 1.23×
    "ms": (lambda v, d: f"{1000 * float(v):.{d}f} ms", 1),  # seconds shown in ms
    # other processes' busy cores while a time was measured (`foreign_cores`), flagged above LOADED_CORES
    "load": (lambda v, d: f"{float(v):.{d}f}" + (" (loaded)" if float(v) > LOADED_CORES else ""), 2),
}


def load_note(*cores: Any) -> str:
    """' (timed under load: other processes kept 1.40 cores busy)' when any of the timings was loaded, else ''."""
    known = [float(c) for c in cores if not is_missing(c)]
    if not known or max(known) <= LOADED_CORES:
        return ""
    return f" (timed under load: other processes kept {max(known):.2f} cores busy)"


def text(kind: str, value: Any, digits: int | None = None) -> str:
    """`value` written as format `kind` (a key of FORMATS); MISSING for a missing or infinite value."""
    write, default = FORMATS[kind]
    if is_missing(value):
        return MISSING
    if isinstance(value, float) and not math.isfinite(value):
        return MISSING
    return write(value, default if digits is None else digits)

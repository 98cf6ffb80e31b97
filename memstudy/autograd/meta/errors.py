"""`Unsupported`: a call the shape-only arrays cannot follow, named with the line of code that made it.

A prediction runs the user's model on shape-only arrays. When the model calls a numpy function that has no shape
rule, or asks for something that depends on the values (a boolean mask's selection, the truth value of an array,
an `.item()`), the prediction cannot go on: `Unsupported` says which function and where it was called, the first
frame outside numpy and this package (the user's file and op: `model.py:42 in MyOp.forward`). Whoever predicts
(a cell, `measure_model`, a sweep's budget check) then measures the step anyway and records why the prediction is
unavailable. It is a TypeError, numpy's own error for an operand it cannot handle.
"""
from __future__ import annotations

import linecache
import os
import sys
from pathlib import Path

_NUMPY_DIR = str(Path(__import__("numpy").__file__).parent) + os.sep
_META_DIR = str(Path(__file__).parent) + os.sep


def _shown_path(filename: str) -> str:
    """A path relative to the working directory when it lies below it (shorter, and what the user typed)."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative


def caller(with_source: bool = False) -> str:
    """`file:line in function` of the innermost frame outside numpy and the shape-only arrays ("" if none);
    with `with_source`, followed by that line's code (it names the numpy call when numpy did not say which)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_NUMPY_DIR) or filename.startswith(_META_DIR)
                or filename.startswith("<frozen")):
            name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            where = f"{_shown_path(filename)}:{frame.f_lineno} in {name}"
            if with_source:
                code = linecache.getline(filename, frame.f_lineno).strip()
                if code:
                    where += f": `{code}`"
            return where
        frame = frame.f_back
    return ""


class Unsupported(TypeError):
    """A call the shape-only arrays cannot follow: `function` (e.g. "numpy.interp"), `reason`, and `where` the
    caller's frame (see the module docstring)."""

    def __init__(self, function: str, reason: str = "has no shape rule", where: str | None = None,
                 hint: str | None = None):
        self.function = function
        self.reason = reason
        self.where = caller() if where is None else where
        if hint is None and reason == "has no shape rule":
            hint = (f"register one with memstudy.autograd.meta.implements({function}) (README: When things go "
                    "wrong)")
        self.hint = hint or ""
        text = f"{function} {reason}"
        if self.where:
            text += f" (called at {self.where})"
        if self.hint:
            text += f"; {self.hint}"
        super().__init__(text)


class UnsupportedAttribute(Unsupported, AttributeError):
    """An ndarray attribute or method a MetaArray lacks; an AttributeError too, so `hasattr` and `getattr(x, name,
    default)` still answer "no"."""


__all__ = ["Unsupported", "UnsupportedAttribute", "caller"]

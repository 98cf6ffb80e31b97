"""Central finite-difference gradient checker for the memstudy engine (a helper module, not a test file).

`check_grad(fn, inputs)` compares the engine's gradients of the scalar

    f(x_1, ..., x_n) = sum(fn(x_1, ..., x_n) * w)

to central differences, where `w` is a fixed random weight of the output's shape (so every output
element sends a different upstream gradient, not the all-ones of a plain sum). The engine's side runs
`fn(...).backward(w)`, which is exactly the vector-Jacobian product with `w`.

An element passes when |analytic - numeric| <= atol + rtol * |numeric|; atol defaults to rtol, so
gradients near 0 are compared absolutely. With eps = 1e-6 in float64 the central difference has a
truncation error ~eps² f''' and a round-off error ~1e-16 |f| / eps, both far below 1e-6 for the
well-scaled inputs the tests use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from memstudy.autograd import Tensor, no_grad


class GradCheckError(AssertionError):
    """The engine's gradient disagrees with the finite-difference gradient."""


@dataclass
class GradCheckResult:
    ok: bool
    max_abs_error: float
    problems: list[str] = field(default_factory=list)
    analytic: list[np.ndarray | None] = field(default_factory=list)
    numeric: list[np.ndarray] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference over the largest expected magnitude (a normwise relative error)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected {expected.shape}")
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    diff = np.max(np.abs(actual - expected)) if expected.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def _scalar(fn: Callable, arrays: Sequence[np.ndarray], weight: np.ndarray) -> float:
    with no_grad():
        out = fn(*(Tensor(a) for a in arrays))
    return float(np.sum(np.asarray(out.data, dtype=np.float64) * weight))


def numeric_grad(fn: Callable, arrays: Sequence[np.ndarray], weight: np.ndarray, index: int,
                 eps: float) -> np.ndarray:
    """Central differences of sum(fn(...) * weight) with respect to arrays[index]."""
    work = [np.array(a, dtype=np.float64, copy=True) for a in arrays]
    target = work[index]
    grad = np.zeros_like(target)
    flat_target, flat_grad = target.reshape(-1), grad.reshape(-1)  # views: `work` arrays are contiguous
    for i in range(flat_target.size):
        original = flat_target[i]
        flat_target[i] = original + eps
        plus = _scalar(fn, work, weight)
        flat_target[i] = original - eps
        minus = _scalar(fn, work, weight)
        flat_target[i] = original
        flat_grad[i] = (plus - minus) / (2 * eps)
    return grad


def check_grad(fn: Callable[..., Tensor], inputs: Sequence[np.ndarray], eps: float = 1e-6, rtol: float = 1e-6,
               atol: float | None = None, seed: int = 0, raise_on_failure: bool = True) -> GradCheckResult:
    """Check the engine's gradient of `fn` (tensors in, one tensor out) against central differences.

    `inputs` are float64 arrays; each becomes a Tensor that requires grad. Constants (labels, inputs
    that should not require grad) belong in `fn`'s closure. Raises `GradCheckError` on a mismatch
    unless `raise_on_failure=False`, in which case the returned result has `ok == False`.
    """
    atol = rtol if atol is None else atol
    arrays = [np.array(a, dtype=np.float64, copy=True) for a in inputs]
    originals = [a.copy() for a in arrays]
    problems: list[str] = []

    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(f"fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        problems.append(f"output dtype is {out.dtype}, expected float64")
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 1.5, size=out.shape) * rng.choice([-1.0, 1.0], size=out.shape)
    weight = np.asarray(weight, dtype=np.float64)
    out.backward(weight.copy())
    analytic = [t.grad for t in tensors]
    for i, (a, before) in enumerate(zip(arrays, originals)):
        if not np.array_equal(a, before):
            problems.append(f"input {i} was modified in place by forward or backward")

    numeric = [numeric_grad(fn, originals, weight, i, eps) for i in range(len(originals))]
    max_abs_error = 0.0
    for i, (ana, num) in enumerate(zip(analytic, numeric)):
        if ana is None:
            problems.append(f"input {i}: no gradient reached it (numeric max |g| = {np.max(np.abs(num)):.3g})")
            continue
        if ana.shape != num.shape:
            problems.append(f"input {i}: gradient shape {ana.shape} != input shape {num.shape}")
            continue
        if ana.dtype != np.float64:
            problems.append(f"input {i}: gradient dtype {ana.dtype}, expected float64")
        err = np.abs(ana - num)
        max_abs_error = max(max_abs_error, float(np.max(err, initial=0.0)))
        bad = err > atol + rtol * np.abs(num)
        if np.any(bad) or not np.all(np.isfinite(ana)):
            where = tuple(int(k) for k in np.argwhere(bad | ~np.isfinite(ana))[0])
            problems.append(
                f"input {i}: {int(np.sum(bad))} of {num.size} elements differ, e.g. at {where}: "
                f"analytic {ana[where]!r} vs numeric {num[where]!r}"
            )
    result = GradCheckResult(not problems, max_abs_error, problems, analytic, numeric)
    if problems and raise_on_failure:
        raise GradCheckError("gradient check failed:\n  " + "\n  ".join(problems))
    return result

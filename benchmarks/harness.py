"""The one timing harness of the speed figures (MLP, GPT, CNN): `time_variants(...)`, then ratio rows.

What every speed figure shares:
- PyTorch's step, when the worker is there, is one more variant (its own process); a torch failure while
  setting up or timing drops that variant (by name) and the rest is timed again without it.
- Steps per block come from a short probe of memstudy's step (`steps_for`).
- Before each attempt the harness waits (up to `max_wait` s) for other processes to use at most `quiet_cores`
  cores; an attempt during which they used more is repeated (up to `retries` times) and the quietest attempt
  is kept. `foreign_cores` of that attempt goes into every row.
- A ratio row is variant ÷ variant, measured side by side (benchmarks.timing), with the round spread and the
  minor page faults per step of both.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable

from .heap import minor_faults
from .load import ForeignLoad, wait_until_quiet
from .timing import Timings, Variant, interleave, steps_for, timed

TORCH = "torch"  # the variant PyTorch's worker times
TORCH_ERRORS = (RuntimeError, OSError, ValueError)  # the worker's process broke or answered with an error


@dataclass
class Settings:
    """How long and how carefully to time (benchmarks.run's flags)."""

    rounds: int
    block_seconds: float
    min_steps: int
    max_steps: int
    log: Callable[[str], None]
    retries: int = 0
    quiet_cores: float = 0.15
    max_wait: float = 0.0


@dataclass
class Timed:
    """The kept attempt: its timings, the cores other processes used meanwhile, whether torch was timed."""

    timings: Timings
    foreign_cores: float | None
    torch_ok: bool
    samples: int  # timed steps per variant

    def ratio_row(self, make_row: Callable[..., dict[str, Any]], labels: dict[str, str], figure: str, measured: str,
                  reference: str, *, note: str = "", reference_label: str = "", **common: Any) -> dict[str, Any]:
        """`figure` = variant `measured` ÷ variant `reference`, side by side (see benchmarks.timing)."""
        t = self.timings
        ratio, low, high = t.ratio(measured, reference)
        return make_row(figure, ratio, "ratio", measured=t.median(measured), reference=t.median(reference),
                        measured_label=labels[measured], reference_label=reference_label or labels[reference],
                        round_min=low, round_max=high, measured_faults_per_step=t.faults_per_step(measured),
                        reference_faults_per_step=t.faults_per_step(reference), note=note,
                        samples=self.samples, foreign_cores=self.foreign_cores, **common)


def engine_variant(name: str, step: Callable[[], Any], **kwargs: Any) -> Variant:
    """A variant timed in this process, with this process's page faults."""
    return Variant(name, timed(step), faults=minor_faults, **kwargs)


def time_variants(what: str, variants: list[Variant], settings: Settings, probe: Callable[[], Any],
                  probe_steps: int, worker: Any = None, torch_setup: dict[str, Any] | None = None) -> Timed:
    """Time `variants` side by side (see the module docstring). `probe`: the step whose median over `probe_steps`
    sets the steps per block; `worker`: benchmarks.run's TorchWorker or None; `torch_setup`: what the worker builds
    (`key` and the config) for the `torch` variant."""
    variants = list(variants)
    torch_ok = worker is not None and worker.available and torch_setup is not None
    if torch_ok:
        try:
            worker.request(cmd="setup", **torch_setup)
        except TORCH_ERRORS as exc:
            worker.fail(exc)
            torch_ok = False
    if torch_ok:
        key = torch_setup["key"]
        variants.append(Variant(TORCH, lambda n: worker.request(cmd="time", key=key, steps=n)["seconds"],
                                external=True, faults=lambda: worker.minor_faults))
    steps = steps_for(statistics.median(timed(probe)(probe_steps)), settings.block_seconds, settings.min_steps,
                      settings.max_steps)
    log = settings.log
    best: tuple[float | None, Timings] | None = None  # the quietest attempt
    for attempt in range(1 + settings.retries):
        log(f"  timing {what}: {len(variants)} variants x {settings.rounds} rounds x {steps} steps"
            + (f" (attempt {attempt + 1})" if attempt else ""))
        if settings.max_wait > 0:
            wait_until_quiet(settings.quiet_cores, settings.max_wait, log=log)
        load = ForeignLoad(lambda: [worker.proc.pid] if torch_ok else []).start()
        try:
            t = interleave(variants, settings.rounds, steps)
        except TORCH_ERRORS as exc:
            if not torch_ok:
                raise
            worker.fail(exc)  # the torch process broke: time the rest without it
            torch_ok = False
            variants = [v for v in variants if v.name != TORCH]
            best = None
            continue
        foreign = load.cores()
        if best is None or (foreign is not None and best[0] is not None and foreign < best[0]):
            best = (foreign, t)
        if foreign is None or foreign <= settings.quiet_cores:
            break
        log(f"    other processes used {foreign:.2f} cores meanwhile (more than {settings.quiet_cores:g})")
    if best is None:  # the torch process broke on the last attempt
        best = (None, interleave(variants, settings.rounds, steps))
    return Timed(best[1], best[0], torch_ok, settings.rounds * steps)


def torch_missing_row(make_row: Callable[..., dict[str, Any]], timed_run: Timed, figure: str, measured_label: str,
                      worker: Any, note: str, **common: Any) -> dict[str, Any]:
    """The row of a torch figure that could not be timed: memstudy's step alone, and why."""
    status = "failed" if worker is not None and worker.failed else "skipped"
    return make_row(figure, None, "ratio", measured=timed_run.timings.median("memstudy"), measured_label=measured_label,
                    status=status, note=note, samples="", foreign_cores=timed_run.foreign_cores, **common)

"""A generation's figures from the ledger's account (mode generate): the KV cache after the prefill, its growth per
decode step and its bytes after the last step; the prefill's peak and the largest decode step's peak.

The phases are those `nn.generation.generate` names (`prefill`, `decode 1`, ...); the account's `by_phase` gives
each phase's peak of live bytes (baseline included, as `peak_bytes`) and the live bytes per category at its end, so
the cache after a step is the ledger's `kv_cache` bytes when that step's phase ends. An account with no prefill
phase (any other mode) has none of these figures.
"""
from __future__ import annotations

from typing import Any

from ..nn.generation import PREFILL, is_decode_phase
from .ledger import StepAccount

# a row's generation columns (None outside mode generate), in the order runs.csv appends them
GENERATION_COLUMNS = ("kv_cache_bytes", "kv_cache_prefill_bytes", "kv_cache_step_bytes", "prefill_peak_bytes",
                      "decode_peak_bytes")
PREDICTED_GENERATION_COLUMNS = ("predicted_kv_cache_bytes", "predicted_prefill_peak_bytes",
                                "predicted_decode_peak_bytes")


def generation_phases(account: StepAccount) -> list[dict[str, Any]]:
    """The prefill and each decode step, in order (`StepAccount.by_phase` entries); empty when no generation ran.
    A generation never repeats blocks (nn/kv_cache.py refuses to), so an account that did (a memoised prediction,
    `repeated`) is of another mode."""
    if account.repeated:
        if any(event[1] == PREFILL for event in account.raw_events):  # cannot happen: the cache refuses
            raise ValueError("a generation's account repeated blocks: its phases cannot be read")
        return []
    return [p for p in account.by_phase() if p["phase"] == PREFILL or is_decode_phase(p["phase"])]


def cache_bytes_after_each_step(account: StepAccount) -> list[int]:
    """The ledger's kv_cache bytes when the prefill ends, then when each decode step ends."""
    return [p["live_bytes"]["kv_cache"] for p in generation_phases(account)]


def generation_figures(account: StepAccount) -> dict[str, int | None]:
    """The row's generation columns (GENERATION_COLUMNS); every one None when the step was no generation.
    `kv_cache_step_bytes` is the growth from the prefill's end to the last step's end over the decode steps (a
    dynamic cache grows by the same bytes every step, a static one by none); None without a decode step."""
    phases = generation_phases(account)
    if not phases:
        return dict.fromkeys(GENERATION_COLUMNS)
    cache = [p["live_bytes"]["kv_cache"] for p in phases]
    steps = len(phases) - 1
    return {
        "kv_cache_bytes": cache[-1],
        "kv_cache_prefill_bytes": cache[0],
        "kv_cache_step_bytes": (cache[-1] - cache[0]) // steps if steps else None,
        "prefill_peak_bytes": phases[0]["peak_bytes"],
        "decode_peak_bytes": max(p["peak_bytes"] for p in phases[1:]) if steps else None,
    }


def predicted_generation_figures(account: StepAccount) -> dict[str, int | None]:
    """The same figures of a predicted account, named as the row's predicted columns."""
    figures = generation_figures(account)
    return {f"predicted_{name}": figures[name] for name in ("kv_cache_bytes", "prefill_peak_bytes",
                                                             "decode_peak_bytes")}


__all__ = ["GENERATION_COLUMNS", "PREDICTED_GENERATION_COLUMNS", "cache_bytes_after_each_step", "generation_figures",
           "generation_phases", "predicted_generation_figures"]

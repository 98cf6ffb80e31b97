"""The ledger: every buffer a step creates, saves or frees, counted once by its base buffer.

It is the engine's one instrument (`STATE.instrument`): `apply` reports each op's output and saved
arrays, `backward` reports new gradients, and a weakref on each base buffer reports its death the
moment CPython frees it. No op calls the ledger itself.

A buffer's category is decided from its whole life, when the step is over:
  parameter / optimizer_state / input  -- registered at the baseline
  gradient    -- became (part of) a leaf's .grad
  activation  -- saved by some op for backward (held for backward)
  output      -- still alive when the step ended
  temporary   -- created and freed within the step
and it counts in that category from the event that created it to the event that freed it.

Buffers born while a checkpoint recomputes its segment carry `phase = "recompute"`, and the account
counts the ops applied in that phase (`recomputed_ops`). Under the `half` policy, the float16 copies are
the saved buffers (activations); the float32 arrays they were made from, and the cast-back copies backward
reads (`unpack`), are temporaries, each seen by the ledger.

What the ledger cannot see: arrays an op allocates and drops inside its own forward or backward
(e.g. the row maxima in softmax) and the optimisers' chunk temporaries. tracemalloc sees them, so its
step peak sits slightly above the ledger's; the ops are written to keep them small.
"""
from __future__ import annotations

import csv
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..autograd.engine import STATE
from ..autograd.graph import base_buffer

CATEGORIES = ("parameter", "optimizer_state", "input", "gradient", "activation", "temporary", "output")
REGISTERED = ("parameter", "optimizer_state", "input")
_DTYPE_NAMES: dict[np.dtype, str] = {}


@dataclass
class Buffer:
    key: int
    nbytes: int
    shape: tuple[int, ...]
    dtype: str
    op: str  # the op (or registration) that created it
    role: str
    layer: int | None
    phase: str
    born: int  # event index
    died: int | None = None
    registered: str | None = None
    saved_by: str | None = None  # first op that saved it
    saved_layer: int | None = None
    gradient: bool = False
    category: str = "temporary"  # final, set by `finish`


@dataclass
class Event:
    index: int
    phase: str
    op: str
    layer: int | None
    key: int
    delta_bytes: int


@dataclass
class StepAccount:
    """What the ledger concluded about one step (bytes unless named otherwise)."""

    baseline_bytes: int
    peak_bytes: int
    step_peak_bytes: int
    peak_event: int
    peak_by_category: dict[str, int]
    max_by_category: dict[str, int]
    activation_bytes: int
    saved_tensors: int
    registered_bytes: dict[str, int]
    recomputed_ops: int
    buffers: list[Buffer] = field(repr=False)
    events: list[Event] = field(repr=False)

    def timeline_rows(self) -> list[dict[str, Any]]:
        """One row per event: what changed and the live bytes per category after it."""
        category_of = {b.key: b.category for b in self.buffers}
        live = dict.fromkeys(CATEGORIES, 0)
        rows = []
        for event in self.events:
            category = category_of[event.key]
            live[category] += event.delta_bytes
            row = {
                "event": event.index, "phase": event.phase, "op": event.op,
                "layer": "" if event.layer is None else event.layer, "category": category,
                "delta_bytes": event.delta_bytes, "live_bytes": sum(live.values()),
            }
            row.update({f"{c}_bytes": live[c] for c in CATEGORIES})
            rows.append(row)
        return rows

    def write_timeline(self, path: str) -> None:
        rows = self.timeline_rows()
        columns = ["event", "phase", "op", "layer", "category", "delta_bytes", "live_bytes"] + [
            f"{c}_bytes" for c in CATEGORIES
        ]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def by_layer(self) -> list[dict[str, Any]]:
        """Per layer: bytes held for backward (by the layer whose op first saved them), parameters, gradients."""
        table: dict[Any, dict[str, int]] = {}
        for b in self.buffers:
            if b.category == "activation":
                layer = b.saved_layer
                column = "activation_bytes"
            elif b.category in ("parameter", "gradient"):
                layer = b.layer
                column = f"{b.category}_bytes"
            else:
                continue
            row = table.setdefault(layer, {"activation_bytes": 0, "parameter_bytes": 0, "gradient_bytes": 0})
            row[column] += b.nbytes
        ordered = sorted(table, key=lambda k: (k is None, -1 if k is None else k))
        return [{"layer": "loss" if k is None else k, **table[k]} for k in ordered]


class Ledger:
    """Attach around one step: `register` the baseline, `start`, run the step, `finish`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.buffers: dict[int, Buffer] = {}
        self._key_of_id: dict[int, int] = {}  # id(base buffer) -> key, for live buffers only
        self._refs: dict[int, weakref.ref] = {}
        self._layer_of_leaf: dict[int, int | None] = {}  # id(leaf tensor) -> layer
        self.recomputed_ops = 0  # ops applied while a checkpoint recomputed its segment

    # --- registration and the engine's hooks ---------------------------------------------------
    def register(self, array: np.ndarray, category: str, layer: int | None = None, role: str = "",
                 leaf: Any = None) -> None:
        """Declare a buffer that exists at the baseline (parameter, optimizer_state or input)."""
        if category not in REGISTERED:
            raise ValueError(f"only {REGISTERED} are registered, got {category!r}")
        key = self._track(array, op="baseline", role=role or category, layer=layer, phase="baseline")
        self.buffers[key].registered = category
        if leaf is not None:
            self._layer_of_leaf[id(leaf)] = layer

    def register_model(self, params: Iterable[Any], layers: Iterable[int | None]) -> None:
        for p, layer in zip(params, layers):
            self.register(p.data, "parameter", layer=layer, role=p.name or "", leaf=p)

    def on_forward(self, ctx: Any, out: np.ndarray) -> None:
        name = ctx.fn.name
        if STATE.phase == "recompute":
            self.recomputed_ops += 1
        self._track(out, op=name, role="out", layer=ctx.layer)
        for role, array in zip(ctx.saved_roles, ctx.saved):
            if array is not None:
                key = self._track(array, op=name, role=role, layer=ctx.layer)
                buffer = self.buffers[key]
                if buffer.saved_by is None:
                    buffer.saved_by, buffer.saved_layer = name, ctx.layer

    def on_backward(self, node: Any, input_grads: tuple) -> None:
        op = node.fn.name + "_backward"
        for grad in input_grads:
            if grad is not None:
                self._track(grad, op=op, role="grad", layer=node.layer)

    def on_new(self, array: np.ndarray, op: str, layer: int | None) -> None:
        self._track(array, op=op, role="new", layer=layer)

    def on_leaf_grad(self, leaf: Any, grad: np.ndarray) -> None:
        layer = self._layer_of_leaf.get(id(leaf))
        key = self._track(grad, op="grad_accumulate", role="grad", layer=layer)
        buffer = self.buffers[key]
        if buffer.registered is None:
            buffer.gradient = True
            buffer.layer = layer

    # --- attach / detach ---------------------------------------------------------------------
    def start(self) -> "Ledger":
        if STATE.instrument is not None:
            raise RuntimeError("another instrument is attached to the engine")
        STATE.instrument = self
        return self

    def stop(self) -> None:
        if STATE.instrument is self:
            STATE.instrument = None

    def __enter__(self) -> "Ledger":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- bookkeeping ---------------------------------------------------------------------------
    def _track(self, array: np.ndarray, op: str, role: str, layer: int | None, phase: str | None = None) -> int:
        base = base_buffer(array)
        ident = id(base)
        key = self._key_of_id.get(ident)
        if key is not None:
            return key
        key = len(self.buffers)
        phase = phase or STATE.phase
        index = len(self.events)
        dtype_name = _DTYPE_NAMES.get(base.dtype)
        if dtype_name is None:  # str(dtype) runs Python code in numpy: ~2 µs, so name each dtype once
            dtype_name = _DTYPE_NAMES[base.dtype] = str(base.dtype)
        self.buffers[key] = Buffer(key, base.nbytes, base.shape, dtype_name, op, role, layer, phase, index)
        self.events.append(Event(index, phase, op, layer, key, base.nbytes))
        self._key_of_id[ident] = key
        self._refs[key] = weakref.ref(base, self._death_callback(key, ident))
        return key

    def _death_callback(self, key: int, ident: int):
        # The callback holds the ledger through a weak proxy: no cycle keeps a ledger (or buffers) alive.
        ledger_ref = weakref.ref(self)

        def died(_: weakref.ref) -> None:
            ledger = ledger_ref()
            if ledger is None or key not in ledger._refs:
                return
            buffer = ledger.buffers[key]
            index = len(ledger.events)
            buffer.died = index
            ledger.events.append(Event(index, STATE.phase, "free", buffer.layer, key, -buffer.nbytes))
            ledger._key_of_id.pop(ident, None)
            ledger._refs.pop(key, None)

        return died

    def finish(self) -> StepAccount:
        """Detach, decide each buffer's category, and compute peaks; the ledger stops recording deaths."""
        self.stop()
        self._refs.clear()  # later deaths are no longer this step's business
        for b in self.buffers.values():
            if b.registered is not None:
                b.category = b.registered
            elif b.gradient:
                b.category = "gradient"
            elif b.saved_by is not None:
                b.category = "activation"
            elif b.died is None:
                b.category = "output"
            else:
                b.category = "temporary"
        baseline = sum(b.nbytes for b in self.buffers.values() if b.phase == "baseline")
        live = dict.fromkeys(CATEGORIES, 0)
        maxima = dict.fromkeys(CATEGORIES, 0)
        peak_total, peak_event, peak_split = -1, -1, dict(live)
        total = 0
        for event in self.events:
            category = self.buffers[event.key].category
            live[category] += event.delta_bytes
            total += event.delta_bytes
            if live[category] > maxima[category]:
                maxima[category] = live[category]
            if total > peak_total:
                peak_total, peak_event, peak_split = total, event.index, dict(live)
        registered = dict.fromkeys(REGISTERED, 0)
        for b in self.buffers.values():
            if b.registered is not None:
                registered[b.registered] += b.nbytes
        buffers = list(self.buffers.values())
        return StepAccount(
            baseline_bytes=baseline,
            peak_bytes=peak_total,
            step_peak_bytes=peak_total - baseline,
            peak_event=peak_event,
            peak_by_category=peak_split,
            max_by_category=maxima,
            activation_bytes=maxima["activation"],
            saved_tensors=sum(1 for b in buffers if b.category == "activation"),
            registered_bytes=registered,
            recomputed_ops=self.recomputed_ops,
            buffers=buffers,
            events=list(self.events),
        )

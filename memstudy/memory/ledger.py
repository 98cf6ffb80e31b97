"""The ledger: every buffer a step creates, saves or frees, counted once by its base buffer.

It is the engine's one instrument (`STATE.instrument`): `apply` reports each op's output and saved
arrays, `backward` reports new gradients, and a weakref on each base buffer reports its death the
moment CPython frees it (registered baseline buffers outlive the step: the ledger holds them instead).
No op calls the ledger itself. While the step runs the ledger only appends plain lists and tuples (about
1 µs per new buffer, 0.5 µs per death); `finish` decides categories and peaks, and `Buffer` / `Event`
objects are built only when someone reads them.

A buffer's category is decided from its whole life, when the step is over:
  parameter / optimizer_state / input  -- registered at the baseline
  kv_cache    -- made by an op that says so (`Function.output_category`: the KV cache's ops), with its role
                 (key or value) and layer, however long it lives
  gradient    -- became (part of) a leaf's .grad
  activation  -- saved by some op for backward (held for backward)
  output      -- still alive when the step ended
  temporary   -- created and freed within the step
and it counts in that category from the event that created it to the event that freed it.

Buffers born while a checkpoint recomputes its segment carry `phase = "recompute"`, and the account
counts the ops applied in that phase (`recomputed_ops`). Under the `half` policy, the float16 copies are
the saved buffers (activations); the float32 arrays they were made from, and the cast-back copies backward
reads (`unpack`), are temporaries, each seen by the ledger.

The ledger counts shape-only arrays (`autograd.meta.MetaArray`) exactly as real ones: their `.base` chain,
`nbytes` and weak references behave as numpy's, which is how `memory.predict` runs a step without data.

What the ledger cannot see: arrays an op allocates and drops inside its own forward or backward
(e.g. the row maxima in softmax) and the optimisers' chunk temporaries. tracemalloc sees them, so its
step peak sits slightly above the ledger's; the ops are written to keep them small.
"""
from __future__ import annotations

import csv
import weakref
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Iterable

import numpy as np

from ..autograd.engine import STATE
from ..autograd.graph import base_buffer

CATEGORIES = ("parameter", "optimizer_state", "input", "kv_cache", "gradient", "activation", "temporary", "output")
REGISTERED = ("parameter", "optimizer_state", "input")
# timeline.csv: the event and the live bytes per category after it, then the event's buffer
TIMELINE_COLUMNS = (["event", "phase", "op", "layer", "category", "delta_bytes", "live_bytes"]
                    + [f"{c}_bytes" for c in CATEGORIES]
                    + ["key", "buffer_op", "role", "shape", "dtype", "nbytes", "born", "died"])
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


def _dtype_name(dtype: np.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:  # str(dtype) runs Python code in numpy (~2 µs): name each dtype once
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


# While a step runs, the ledger keeps each buffer as a plain list (a dataclass costs ~1 µs to build, and the
# ledger must stay off the arithmetic's path); `Buffer` objects are built only when someone reads them.
# The record's slots, in `Buffer`'s field order:
(_KEY, _NBYTES, _SHAPE, _DTYPE, _OP, _ROLE, _LAYER, _PHASE, _BORN, _DIED, _REGISTERED, _SAVED_BY, _SAVED_LAYER,
 _GRADIENT, _CATEGORY) = range(15)


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
    records: list[list] = field(repr=False)  # one per buffer, see _KEY.._CATEGORY
    raw_events: list[tuple] = field(repr=False)  # (index, phase, op, layer, key, delta_bytes)

    @cached_property
    def buffers(self) -> list[Buffer]:
        """Every buffer the step saw, in the order it first saw them."""
        return [Buffer(*r[:_DTYPE], _dtype_name(r[_DTYPE]), *r[_DTYPE + 1:]) for r in self.records]

    @cached_property
    def events(self) -> list[Event]:
        """Every birth (positive delta) and death (negative), in order; `peak_event` indexes this list."""
        return [Event(*event) for event in self.raw_events]

    def timeline_rows(self) -> list[dict[str, Any]]:
        """One row per event: what changed, the live bytes per category after it, and the event's buffer
        (key, the op that made it, role, shape, dtype, bytes, birth and death event), so a reader can draw
        each buffer's band without the account itself."""
        buffer_of = {b.key: b for b in self.buffers}
        live = dict.fromkeys(CATEGORIES, 0)
        rows = []
        for event in self.events:
            buffer = buffer_of[event.key]
            category = buffer.category
            live[category] += event.delta_bytes
            row = {
                "event": event.index, "phase": event.phase, "op": event.op,
                "layer": "" if event.layer is None else event.layer, "category": category,
                "delta_bytes": event.delta_bytes, "live_bytes": sum(live.values()),
            }
            row.update({f"{c}_bytes": live[c] for c in CATEGORIES})
            row.update({
                "key": buffer.key, "buffer_op": buffer.op, "role": buffer.role,
                "shape": "x".join(map(str, buffer.shape)) or "scalar", "dtype": buffer.dtype,
                "nbytes": buffer.nbytes, "born": buffer.born, "died": "" if buffer.died is None else buffer.died,
            })
            rows.append(row)
        return rows

    def write_timeline(self, path: str) -> None:
        rows = self.timeline_rows()
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=TIMELINE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def by_layer(self) -> list[dict[str, Any]]:
        """Per layer: bytes held for backward (by the layer whose op first saved them), parameters (by their
        registered layer, else the layer of the first op that took them), gradients (every buffer that became a
        parameter's .grad: a parameter used by two ops, a tied weight, gets two, the first use's and the sum) and
        how many gradient buffers that was. Layer "loss": no layer (the loss, and ops outside every layer_scope)."""
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
            row = table.setdefault(layer, {"activation_bytes": 0, "parameter_bytes": 0, "gradient_bytes": 0,
                                           "gradient_buffers": 0})
            row[column] += b.nbytes
            row["gradient_buffers"] += b.category == "gradient"
        ordered = sorted(table, key=lambda k: (k is None, -1 if k is None else k))
        return [{"layer": "loss" if k is None else k, **table[k]} for k in ordered]


    def by_phase(self) -> list[dict[str, Any]]:
        """Per span of consecutive events of one phase, in order (the registrations first, phase `baseline`): its
        phase, first and end event, the peak of the live bytes over its events (the total, baseline included) and
        the live bytes per category after its last event. A generation's prefill and decode steps are phases."""
        category_of = {r[_KEY]: r[_CATEGORY] for r in self.records}
        live = dict.fromkeys(CATEGORIES, 0)
        total = 0
        spans: list[dict[str, Any]] = []
        for index, phase, _, _, key, delta in self.raw_events:
            live[category_of[key]] += delta
            total += delta
            if not spans or spans[-1]["phase"] != phase:
                spans.append({"phase": phase, "first_event": index, "peak_bytes": total})
            span = spans[-1]
            span["end_event"] = index + 1
            span["peak_bytes"] = max(span["peak_bytes"], total)
            span["live_bytes"] = dict(live)
        return spans

    def by_op(self) -> list[dict[str, Any]]:
        """Per layer and op: the bytes of the buffers that op saved first (each buffer once), split into those
        held for backward (`activation_bytes`) and registered inputs it kept (`input_bytes`, e.g. the network
        input a first convolution saves). Parameters an op saves are not counted (they exist anyway)."""
        table: dict[tuple, dict[str, int]] = {}
        for b in self.buffers:
            if b.saved_by is None or b.category not in ("activation", "input"):
                continue
            row = table.setdefault((b.saved_layer, b.saved_by), {"activation_bytes": 0, "input_bytes": 0})
            row[f"{b.category}_bytes"] += b.nbytes
        ordered = sorted(table, key=lambda k: (k[0] is None, -1 if k[0] is None else k[0], k[1]))
        return [{"layer": "loss" if k[0] is None else k[0], "op": k[1], **table[k]} for k in ordered]


class Ledger:
    """Attach around one step: `register` the baseline, `start`, run the step, `finish`."""

    def __init__(self) -> None:
        self.events: list[tuple] = []  # (index, phase, op, layer, key, delta_bytes), see `Event`
        self.records: list[list] = []  # one per buffer, indexed by key (see _KEY.._CATEGORY)
        self._key_of_id: dict[int, int] = {}  # id(base buffer) -> key, for live buffers only
        self._refs: dict[int, weakref.ref] = {}  # key -> weak reference whose callback records the death
        self._self_ref = weakref.ref(self)  # what death callbacks hold: no cycle keeps a ledger alive
        self._baseline: list[np.ndarray] = []  # registered buffers, held while the ledger lives
        self._layer_of_leaf: dict[int, int | None] = {}  # id(leaf tensor) -> layer
        self._unplaced: dict[int, int] = {}  # id(leaf) -> key of a parameter registered without a layer
        self._held_as: dict[int, str] = {}  # key -> the category an op gave its output (Function.output_category)
        self.recomputed_ops = 0  # ops applied while a checkpoint recomputed its segment

    # --- registration and the engine's hooks ---------------------------------------------------
    def register(self, array: np.ndarray, category: str, layer: int | None = None, role: str = "",
                 leaf: Any = None) -> None:
        """Declare a buffer that exists at the baseline (parameter, optimizer_state or input)."""
        if category not in REGISTERED:
            raise ValueError(f"only {REGISTERED} are registered, got {category!r}")
        key = self._track(array, "baseline", role or category, layer, "baseline", watch=False)
        self.records[key][_REGISTERED] = category
        if leaf is not None:
            self._layer_of_leaf[id(leaf)] = layer
            if layer is None:  # the model does not say (no parameter_layers()): the first op that uses it will
                self._unplaced[id(leaf)] = key

    def register_model(self, params: Iterable[Any], layers: Iterable[int | None]) -> None:
        for p, layer in zip(params, layers):
            self.register(p.data, "parameter", layer=layer, role=p.name or "", leaf=p)

    def on_forward(self, ctx: Any, out: np.ndarray) -> None:
        name = ctx.fn.name
        layer = ctx.layer
        phase = STATE.phase
        if phase == "recompute":
            self.recomputed_ops += 1
        category = ctx.fn.output_category
        if category is None:
            self._track(out, name, "out", layer, phase)
        else:
            self._held_as[self._track(out, name, ctx.role, layer, phase)] = category
        if self._unplaced and layer is not None and ctx.parents:
            self._place(ctx.parents, layer)
        records = self.records
        for role, array in zip(ctx.saved_roles, ctx.saved):
            if array is not None:
                record = records[self._track(array, name, role, layer, phase)]
                if record[_SAVED_BY] is None:
                    record[_SAVED_BY] = name
                    record[_SAVED_LAYER] = layer

    def _place(self, parents: tuple, layer: int) -> None:
        """A parameter registered without a layer belongs to the layer of the first op that takes it (its module's
        layer_scope): its bytes and its gradient's are counted there."""
        for parent in parents:
            key = self._unplaced.pop(id(parent), None)
            if key is not None:
                self.records[key][_LAYER] = layer
                self._layer_of_leaf[id(parent)] = layer

    def on_backward(self, node: Any, input_grads: tuple) -> None:
        op = node.fn.name + "_backward"
        phase = STATE.phase
        for grad in input_grads:
            if grad is not None:
                self._track(grad, op, "grad", node.layer, phase)

    def on_new(self, array: np.ndarray, op: str, layer: int | None) -> None:
        self._track(array, op, "new", layer, STATE.phase)

    def on_leaf_grad(self, leaf: Any, grad: np.ndarray) -> None:
        layer = self._layer_of_leaf.get(id(leaf))
        record = self.records[self._track(grad, "grad_accumulate", "grad", layer, STATE.phase)]
        if record[_REGISTERED] is None:
            record[_GRADIENT] = True
            record[_LAYER] = layer

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
    def _track(self, array: np.ndarray, op: str, role: str, layer: int | None, phase: str, watch: bool = True) -> int:
        """The key of `array`'s base buffer; a buffer seen for the first time is born here.

        A born buffer's death is recorded by a weakref callback (`watch`), except for registered buffers:
        the baseline outlives the step, so the ledger holds them instead (their ids cannot be reused)."""
        base = array if array.base is None else base_buffer(array)
        ident = id(base)
        key = self._key_of_id.get(ident)
        if key is not None:
            return key
        records = self.records
        key = len(records)
        index = len(self.events)
        nbytes = base.nbytes
        records.append([key, nbytes, base.shape, base.dtype, op, role, layer, phase, index, None, None, None, None,
                        False, "temporary"])
        self.events.append((index, phase, op, layer, key, nbytes))
        self._key_of_id[ident] = key
        if watch:
            self._refs[key] = weakref.ref(base, partial(_record_death, self._self_ref, key, ident))
        else:
            self._baseline.append(base)
        return key

    def finish(self) -> StepAccount:
        """Detach, decide each buffer's category, and compute peaks; the ledger stops recording deaths."""
        self.stop()
        self._refs.clear()  # later deaths are no longer this step's business
        self._baseline.clear()
        records = self.records
        registered = dict.fromkeys(REGISTERED, 0)
        index_of = {name: i for i, name in enumerate(CATEGORIES)}
        category_of = []  # per key: the index of its category in CATEGORIES
        held_as = self._held_as
        for r in records:
            if r[_REGISTERED] is not None:
                category = r[_REGISTERED]
                registered[category] += r[_NBYTES]
            elif r[_KEY] in held_as:
                category = held_as[r[_KEY]]
            elif r[_GRADIENT]:
                category = "gradient"
            elif r[_SAVED_BY] is not None:
                category = "activation"
            elif r[_DIED] is None:
                category = "output"
            else:
                category = "temporary"
            r[_CATEGORY] = category
            category_of.append(index_of[category])
        baseline = sum(registered.values())  # only `register` creates buffers in the baseline phase
        # one pass over the events: live bytes per category (lists indexed like CATEGORIES), their maxima,
        # and the split at the peak of the total
        live = [0] * len(CATEGORIES)
        maxima = [0] * len(CATEGORIES)
        peak_total, peak_event, peak_live = -1, -1, live[:]
        total = 0
        for index, _, _, _, key, delta in self.events:
            c = category_of[key]
            now = live[c] = live[c] + delta
            total += delta
            if now > maxima[c]:
                maxima[c] = now
            if total > peak_total:
                peak_total, peak_event, peak_live = total, index, live[:]
        peak_split = dict(zip(CATEGORIES, peak_live))
        maxima = dict(zip(CATEGORIES, maxima))
        return StepAccount(
            baseline_bytes=baseline,
            peak_bytes=peak_total,
            step_peak_bytes=peak_total - baseline,
            peak_event=peak_event,
            peak_by_category=peak_split,
            max_by_category=maxima,
            activation_bytes=maxima["activation"],
            saved_tensors=category_of.count(index_of["activation"]),
            registered_bytes=registered,
            recomputed_ops=self.recomputed_ops,
            records=list(records),
            raw_events=list(self.events),
        )


def _record_death(ledger_ref: weakref.ref, key: int, ident: int, _: weakref.ref) -> None:
    """A tracked base buffer was freed (weakref callback, bound per buffer with functools.partial)."""
    ledger = ledger_ref()
    if ledger is None or ledger._refs.pop(key, None) is None:
        return  # the ledger is gone, or finished: later deaths are not this step's business
    record = ledger.records[key]
    index = len(ledger.events)
    record[_DIED] = index
    ledger.events.append((index, STATE.phase, "free", record[_LAYER], key, -record[_NBYTES]))
    ledger._key_of_id.pop(ident, None)

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
  communication -- a collective's buffer (memstudy/parallel/collectives.py: an op's output that says so, or a
                 buffer reported with `on_new(..., category="communication")`): a bucket, a gathered parameter
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

Repeated blocks (`nn.repeat`, the predictor's memoised path): each event carries the engine's repeat scope
(`STATE.repeat`: a path of (id, copies) pairs), and a registered buffer may stand for several (`copies`). `finish`
then reads the event list as nested runs, each contiguous run of one scope repeated `copies` times, and works out
the peak, its split, each category's maximum and the counts from one run's summary (live bytes per category, its
own peak and where) without unrolling it: the account of the step in which every block ran. It first checks that
each scope hands on what it takes in: the buffers born before it and freed inside it (its input, the gradient
reaching it) match, by category and size, the ones born inside it and freed after it (its output, the gradient it
passes on), or the copies would not chain (`RepeatMismatch`).

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

from ..autograd.engine import _REPEAT_IDS, STATE, NotRepeatable
from ..autograd.graph import base_buffer

CATEGORIES = ("parameter", "optimizer_state", "input", "kv_cache", "communication", "gradient", "activation",
              "temporary", "output")
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
    repeat: tuple | None = None  # the repeat scope (engine.repeat_scope) it happened in; None when every block ran


class RepeatMismatch(NotRepeatable):
    """A repeat scope whose blocks would not chain: what it takes in differs from what it hands on."""


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
    raw_events: list[tuple] = field(repr=False)  # (index, phase, op, layer, key, delta_bytes, repeat)
    # elements of the parameters `register_model` registered (frozen ones too; model buffers such as batch
    # norm's running statistics are not parameters), and of those that require a gradient
    parameter_count: int = 0
    trainable_parameter_count: int = 0
    buffer_count: int = 0  # buffers of the step (with repeated blocks: of the step in which every block ran)
    event_count: int = 0  # births and deaths, likewise; `peak_event` indexes them
    repeated: bool = False  # True: repeated blocks ran once for many; records and events are those of the run
    forward_flops: int = 0  # FLOPs of the ops of the forward phase (autograd/flops.py), every block counted
    recomputed_flops: int = 0  # FLOPs of the ops a checkpoint recomputed in backward, likewise
    # per collective (all_reduce, all_gather, reduce_scatter): [calls, bytes of this rank's inputs] in the step (with
    # repeated blocks: as often as they stand for), so a planner can sum a step's communication
    collective_bytes: dict[str, list[int]] = field(default_factory=dict)
    # (op, layer, algorithm) for each forward op that chose an algorithm (Node.choice), in the order they ran
    choices: list[tuple[str, int | None, str]] = field(default_factory=list)

    def _unrolled(self) -> None:
        if self.repeated:
            raise ValueError("this account ran repeated blocks once for many (a memoised prediction): it has the "
                             "step's totals, not its buffers one by one")

    @cached_property
    def buffers(self) -> list[Buffer]:
        """Every buffer the step saw, in the order it first saw them."""
        self._unrolled()
        return [Buffer(*r[:_DTYPE], _dtype_name(r[_DTYPE]), *r[_DTYPE + 1:]) for r in self.records]

    @cached_property
    def events(self) -> list[Event]:
        """Every birth (positive delta) and death (negative), in order; `peak_event` indexes this list."""
        self._unrolled()
        return [Event(*event) for event in self.raw_events]

    def max_live_bytes(self, op_prefix: str) -> int:
        """The most bytes of the buffers whose op name starts with `op_prefix` (`conv2d.`: the convolutions'
        workspaces) alive at once over the step."""
        changes = []
        for b in self.buffers:
            if b.op.startswith(op_prefix):
                changes.append((b.born, b.nbytes))
                if b.died is not None:
                    changes.append((b.died, -b.nbytes))
        live = top = 0
        for _, delta in sorted(changes):  # one birth or death per event: no ties
            live += delta
            top = max(top, live)
        return top

    def live_at(self, event: int) -> list[Buffer]:
        """The buffers alive just after event `event` (born at or before it, not yet freed)."""
        return [b for b in self.buffers if b.born <= event and (b.died is None or b.died > event)]

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
        self._unrolled()
        category_of = {r[_KEY]: r[_CATEGORY] for r in self.records}
        live = dict.fromkeys(CATEGORIES, 0)
        total = 0
        spans: list[dict[str, Any]] = []
        for index, phase, _, _, key, delta, *_ in self.raw_events:
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
        # FLOPs of the ops applied in the forward phase and in a checkpoint's recompute (autograd/flops.py)
        self.forward_flops = self.recomputed_flops = 0
        self.collective_calls: list[tuple] = []  # (collective, bytes of its input, repeat scope), see on_collective
        self.parameter_count = self.trainable_parameter_count = 0  # elements, see StepAccount
        self.choices: list[tuple[str, int | None, str]] = []  # (op, layer, algorithm) per forward op that chose one

    # --- registration and the engine's hooks ---------------------------------------------------
    def register(self, array: np.ndarray, category: str, layer: int | None = None, role: str = "",
                 leaf: Any = None, copies: int = 1) -> None:
        """Declare a buffer that exists at the baseline (parameter, optimizer_state or input); `copies`: it stands
        for that many alike (a repeated block's parameter, see the module docstring)."""
        if category not in REGISTERED:
            raise ValueError(f"only {REGISTERED} are registered, got {category!r}")
        key = self._track(array, "baseline", role or category, layer, "baseline", watch=False)
        self.records[key][_REGISTERED] = category
        if copies != 1 and self.events[-1][_EVENT_KEY] == key:  # its birth event stands for `copies` births
            self.events[-1] = self.events[-1][:_EVENT_REPEAT] + (((("baseline", key), copies),),)
        if leaf is not None:
            self._layer_of_leaf[id(leaf)] = layer
            if layer is None:  # the model does not say (no parameter_layers()): the first op that uses it will
                self._unplaced[id(leaf)] = key

    def register_model(self, params: Iterable[Any], layers: Iterable[int | None],
                       copies: dict[int, int] | None = None) -> None:
        """Parameters and their layers; `copies`: id(parameter) -> how many alike it stands for (default 1)."""
        copies = copies or {}
        for p, layer in zip(params, layers):
            n = copies.get(id(p), 1)
            self.register(p.data, "parameter", layer=layer, role=p.name or "", leaf=p, copies=n)
            self.parameter_count += p.data.size * n
            if p.requires_grad:
                self.trainable_parameter_count += p.data.size * n

    def on_forward(self, ctx: Any, out: np.ndarray) -> None:
        name = ctx.fn.name
        layer = ctx.layer
        phase = STATE.phase
        if phase == "recompute":
            copies = 1 if STATE.repeat is None else _copies(STATE.repeat)
            self.recomputed_ops += copies
            self.recomputed_flops += getattr(ctx, "flops", 0) * copies
        elif phase == "forward":
            self.forward_flops += getattr(ctx, "flops", 0) * (1 if STATE.repeat is None else _copies(STATE.repeat))
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

    def on_new(self, array: np.ndarray, op: str, layer: int | None, category: str | None = None) -> None:
        """A buffer made outside an op's output and gradients (a workspace, the optimiser's scratch); `category`: the
        one it has whatever its life (a collective's buffer: "communication"), else the ledger decides."""
        key = self._track(array, op, "new", layer, STATE.phase)
        if category is not None:
            self._held_as[key] = category

    def on_collective(self, name: str, nbytes: int) -> None:
        """A collective call (all_reduce, all_gather, reduce_scatter) moving `nbytes` of this rank's (its input)."""
        self.collective_calls.append((name, nbytes, STATE.repeat))

    def on_choice(self, op: str, label: str, layer: int | None) -> None:
        """An op chose one of its algorithms (`Node.choice`); a checkpoint's recompute repeats a choice: not listed."""
        if STATE.phase != "recompute":
            self.choices.append((op, layer, label))

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
        self.events.append((index, phase, op, layer, key, nbytes, STATE.repeat))
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
        events = self.events
        repeated = any(event[_EVENT_REPEAT] is not None for event in events)
        if repeated:
            _check_repeats(records, events)
            born_copies = [_copies(events[r[_BORN]][_EVENT_REPEAT]) for r in records]
            registered = dict.fromkeys(REGISTERED, 0)
            for r, n in zip(records, born_copies):
                if r[_REGISTERED] is not None:
                    registered[r[_REGISTERED]] += n * r[_NBYTES]
            activation = index_of["activation"]
            saved_tensors = sum(n for c, n in zip(category_of, born_copies) if c == activation)
            buffer_count = sum(born_copies)
        else:
            saved_tensors = category_of.count(index_of["activation"])
            buffer_count = len(records)
        collectives: dict[str, list[int]] = {}
        for name, nbytes, path in self.collective_calls:
            n = _copies(path)
            tally = collectives.setdefault(name, [0, 0])
            tally[0] += n
            tally[1] += n * nbytes
        baseline = sum(registered.values())  # only `register` creates buffers in the baseline phase
        run = _summarise(events, 0, len(events), 0, category_of) if repeated else _flat(events, 0, len(events),
                                                                                          category_of)
        maxima = dict(zip(CATEGORIES, (0 if top is None or top < 0 else top for top in run.top)))
        return StepAccount(
            baseline_bytes=baseline,
            peak_bytes=run.best,
            step_peak_bytes=run.best - baseline,
            peak_event=run.best_at,
            peak_by_category=dict(zip(CATEGORIES, run.best_live)),
            max_by_category=maxima,
            activation_bytes=maxima["activation"],
            saved_tensors=saved_tensors,
            registered_bytes=registered,
            recomputed_ops=self.recomputed_ops,
            forward_flops=self.forward_flops,
            recomputed_flops=self.recomputed_flops,
            records=list(records),
            raw_events=list(events),
            parameter_count=self.parameter_count,
            trainable_parameter_count=self.trainable_parameter_count,
            buffer_count=buffer_count,
            event_count=run.events,
            repeated=repeated,
            collective_bytes=collectives,
            choices=list(self.choices),
        )


# --- the account of an event list: one pass over a flat run, and runs composed and repeated ----------------------
# A run's summary is relative to the live bytes before it: its length, its change per category, the first event at
# which its running total peaks (and the split there), and each category's highest running value.
_EVENT_KEY, _EVENT_DELTA, _EVENT_REPEAT = 4, 5, 6
_COPIES: dict[tuple, int] = {}


def _copies(path: tuple | None) -> int:
    """How many times an event in repeat scope `path` happens in the unrolled step (the product of its copies)."""
    if path is None:
        return 1
    n = _COPIES.get(path)
    if n is None:
        n = 1
        for _, copies in path:
            n *= copies
        _COPIES[path] = n
    return n


class _Run:
    __slots__ = ("events", "delta", "total", "best", "best_at", "best_live", "top")

    def __init__(self, events: int, delta: list[int], total: int, best: int, best_at: int, best_live: list[int],
                 top: list[int | None]):
        self.events, self.delta, self.total = events, delta, total
        self.best, self.best_at, self.best_live, self.top = best, best_at, best_live, top

    def then(self, other: "_Run") -> "_Run":
        """This run followed by `other`."""
        if not other.events:
            return self
        if not self.events:
            return other
        base = self.total
        if other.best + base > self.best:  # strictly: the first event at which the total peaks
            best, best_at = other.best + base, self.events + other.best_at
            best_live = [a + b for a, b in zip(self.delta, other.best_live)]
        else:
            best, best_at, best_live = self.best, self.best_at, self.best_live
        top = [a if b is None else (b + d if a is None else max(a, b + d))
               for a, b, d in zip(self.top, other.top, self.delta)]
        return _Run(self.events + other.events, [a + b for a, b in zip(self.delta, other.delta)],
                    base + other.total, best, best_at, best_live, top)

    def times(self, copies: int) -> "_Run":
        """This run `copies` times in a row: each copy starts where the last ended, so a run that grows peaks in
        its last copy and one that does not in its first (worked out, not unrolled)."""
        if copies == 1 or not self.events:
            return self
        more = copies - 1
        if self.total > 0:
            best, best_at = self.best + more * self.total, self.best_at + more * self.events
            best_live = [live + more * d for live, d in zip(self.best_live, self.delta)]
        else:
            best, best_at, best_live = self.best, self.best_at, self.best_live
        top = [t if t is None or d <= 0 else t + more * d for t, d in zip(self.top, self.delta)]
        return _Run(self.events * copies, [d * copies for d in self.delta], self.total * copies, best, best_at,
                    best_live, top)


def _flat(events: list[tuple], lo: int, hi: int, category_of: list[int]) -> _Run:
    """One pass over events[lo:hi] (their repeat scopes ignored): live bytes per category, their maxima, and the
    split at the first peak of the total."""
    live = [0] * len(CATEGORIES)
    top: list[int | None] = [None] * len(CATEGORIES)
    best, best_at, best_live = -1, -1, live[:]
    total = 0
    for i in range(lo, hi):
        event = events[i]
        c = category_of[event[_EVENT_KEY]]
        delta = event[_EVENT_DELTA]
        now = live[c] = live[c] + delta
        total += delta
        t = top[c]
        if t is None or now > t:
            top[c] = now
        if total > best or i == lo:
            best, best_at, best_live = total, i - lo, live[:]
    return _Run(hi - lo, live, total, best, best_at, best_live, top)


def _summarise(events: list[tuple], lo: int, hi: int, level: int, category_of: list[int]) -> _Run:
    """events[lo:hi], whose repeat scopes share their first `level` elements: flat stretches in one pass, each
    contiguous stretch of a deeper scope summarised once and repeated `copies` times."""
    run = _Run(0, [0] * len(CATEGORIES), 0, -1, -1, [0] * len(CATEGORIES), [None] * len(CATEGORIES))
    i = lo
    while i < hi:
        path = events[i][_EVENT_REPEAT]
        j = i + 1
        if path is None or len(path) <= level:
            while j < hi and (events[j][_EVENT_REPEAT] is None or len(events[j][_EVENT_REPEAT]) <= level):
                j += 1
            run = run.then(_flat(events, i, j, category_of))
        else:
            scope = path[level]
            while j < hi and (p := events[j][_EVENT_REPEAT]) is not None and len(p) > level and p[level] == scope:
                j += 1
            run = run.then(_summarise(events, i, j, level + 1, category_of).times(scope[1]))
        i = j
    return run


def _check_repeats(records: list[list], events: list[tuple]) -> None:
    """Each repeat scope hands on what it takes in (see the module docstring), or RepeatMismatch. A buffer born in
    one repeated run and freed in another run of as many copies is each copy's (below), and passes nothing on.

    What a scope hands on beyond what it takes in (of a kind, category and size, the latest to die) is each copy's
    own and outlives them all (autocast's cached weight copies, made in each block and dropped when the forward pass
    ends): in the unrolled step every copy made one, and they all die where this one dies. Its death then frees
    each copy's: its event stands for as many deaths in a row as the copies of the scopes it leaves (a repeat scope of
    its own, set here in place), provided it
    dies in a scope that encloses the one it was born in (else RepeatMismatch: its copies would die apart)."""
    from collections import Counter

    taken: dict[int, Counter] = {}
    handed: dict[int, Counter] = {}
    handed_records: dict[int, list[list]] = {}

    def path(event_index: int) -> tuple:
        return events[event_index][_EVENT_REPEAT] or ()

    def scopes(event_index: int) -> set:
        return {abs(ident) for ident, _ in path(event_index) if isinstance(ident, int)}

    def copies_outside(event_index: int, shared: set) -> int:
        n = 1
        for ident, copies in path(event_index):
            if abs(ident) not in shared:
                n *= copies
        return n

    for r in records:
        if r[_DIED] is None:
            continue  # alive at the end (a gradient, the output): each copy has its own, nothing is handed on
        born, died = scopes(r[_BORN]), scopes(r[_DIED])
        shared = born & died
        if born - shared and died - shared and \
                copies_outside(r[_BORN], shared) == copies_outside(r[_DIED], shared):
            # born in one run of the blocks and freed in another run of as many (a microbatch's gradient, which the
            # next microbatch's backward of the same block accumulates into): copy k of the one pairs with copy k
            # of the other, so each run counts its copies and nothing passes between blocks
            continue
        signature = (r[_CATEGORY], r[_NBYTES])
        for scope in died - born:
            taken.setdefault(scope, Counter())[signature] += 1
        for scope in born - died:
            handed.setdefault(scope, Counter())[signature] += 1
            handed_records.setdefault(scope, []).append(r)
    own: dict[int, list] = {}  # key -> record, of each copy's own buffers that outlive the copies
    for scope in set(taken) | set(handed):
        took, gave = taken.get(scope, Counter()), handed.get(scope, Counter())
        extra = gave - took
        if took - gave:
            raise RepeatMismatch(f"a repeated block takes in {sorted(took.items())} but hands on "
                                 f"{sorted(gave.items())} (category, bytes): its copies would not chain")
        # of a kind it both takes in and hands on more of, the own ones die last: what the next block takes in
        # dies while that block runs, what each copy keeps outlives every copy
        for r in sorted(handed_records.get(scope, ()), key=lambda r: r[_DIED], reverse=True):
            signature = (r[_CATEGORY], r[_NBYTES])
            if extra[signature] > 0:
                extra[signature] -= 1
                own[r[_KEY]] = r
    for r in own.values():
        born, died = path(r[_BORN]), path(r[_DIED])
        died_scopes = {abs(ident) for ident, _ in died}
        if not died_scopes <= {abs(ident) for ident, _ in born}:
            raise RepeatMismatch("a repeated block's own buffer dies inside another repeated block: its copies "
                                 "would not die together")
        factor = 1
        for ident, copies in born:
            if abs(ident) not in died_scopes:
                factor *= copies
        if factor > 1:  # the death stands for `factor` deaths in a row: a repeat scope of its own
            event = events[r[_DIED]]
            events[r[_DIED]] = event[:_EVENT_REPEAT] + ((event[_EVENT_REPEAT] or ()) + ((next(_REPEAT_IDS), factor),),)


def _record_death(ledger_ref: weakref.ref, key: int, ident: int, _: weakref.ref) -> None:
    """A tracked base buffer was freed (weakref callback, bound per buffer with functools.partial)."""
    ledger = ledger_ref()
    if ledger is None or ledger._refs.pop(key, None) is None:
        return  # the ledger is gone, or finished: later deaths are not this step's business
    record = ledger.records[key]
    index = len(ledger.events)
    record[_DIED] = index
    ledger.events.append((index, STATE.phase, "free", record[_LAYER], key, -record[_NBYTES], STATE.repeat))
    ledger._key_of_id.pop(ident, None)

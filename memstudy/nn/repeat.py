"""Stacks of identical blocks: every block runs when measuring; while the predictor compresses, one stands for many.

A model whose `depth` blocks are alike (the MLP's hidden layers, the GPT's transformer blocks) builds them and loops
over them through a `Plan`, and does nothing else differently:

    self.plan = Plan(depth, checkpoint_segment_size(checkpoint, depth))   # segment size None: no checkpointing
    self.blocks = self.plan.build(lambda i: Block(...))                     # block i, for each i the plan runs
    for start, stop in self.plan.segments(): ...                            # checkpoint segments, one op each
    for i in self.plan.blocks(start, stop): x = self.blocks[i](x)           # a segment's blocks, or all of them

Normally (and always when measuring) these are plain: `build` makes every block, `segments` lists every segment,
`blocks` is a `range`. Inside `compressing()` (the predictor's memoised path, `memory.predict`) a run of n > 3
alike items (the blocks of a segment, or the segments of one length) becomes three: the first, the second standing
for the n − 2 in the middle, and the last. The stand-in runs inside `autograd.repeat_scope(n − 2)`, so the memory
ledger counts its events, forward and backward, n − 2 times in a row (measure/ledger.py works out the account of
the unrolled step from one run's); only the blocks that run are built, and each one's parameters count as often
as the block stands for (`copies(model)`, which `memory.workload` hands to the ledger). The first and the last stay
real so that the stand-in meets what every middle block meets: a block like itself before and after it. Runs of
segments nest with the blocks inside them: a depth of 10⁹ in segments of ⌈√depth⌉ runs 12 blocks (three in
each of the four segments that run: the first, the stand-in, the last full one and the shorter last one).

What the stand-in may assume, and what a model adopting `Plan` must keep true: the blocks of a run are built by
the same code with the same shapes, run the same code on an input like their output, and share no state that one
block's run changes for the next (a tied weight, a cache). The ledger checks the part it can see (each repeat
scope hands on, by category and size, what it takes in; a model may also raise `NotRepeatable` itself, as a LoRA
target naming one block does) and the predictor then runs every block instead;
`tests/test_repeat.py` checks, for every family over its grid, that the compressed account equals the full one.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from ..autograd import meta
from ..autograd.engine import NotRepeatable, repeat_scope


def is_compressing() -> bool:
    """Whether plans made now are compressed (inside `compressing()`)."""
    return _COMPRESS.active


class Compression:
    """The state of `compressing()`: whether it is on, and how many plans were built inside it."""

    def __init__(self) -> None:
        self.active = False
        self.plans = 0  # plans made compressed: the model repeats blocks through nn.repeat


_COMPRESS = Compression()


@contextlib.contextmanager
def compressing() -> Iterator[Compression]:
    """Plans built inside it run one block for each run of alike ones (see the module docstring); yields the state,
    whose `plans` then says whether the model built any."""
    previous = (_COMPRESS.active, _COMPRESS.plans)
    _COMPRESS.active, _COMPRESS.plans = True, 0
    try:
        yield _COMPRESS
    finally:
        _COMPRESS.active, _COMPRESS.plans = previous


def _runs(start: int, stop: int) -> list[tuple[int, int]]:
    """(index, copies) of what runs for items start..stop-1: all of them, or first, middle (for n - 2), last."""
    n = stop - start
    if n <= 3:
        return [(i, 1) for i in range(start, stop)]
    return [(start, 1), (start + 1, n - 2), (stop - 1, 1)]


class Blocks(list):
    """The blocks a plan built: every block (a plain list), or those a compressed plan runs. `blocks[i]` is block i
    and `blocks[start:stop]` the built blocks among start..stop-1 either way; `copies[k]` is how many blocks the
    k-th built one stands for (None when every block was built)."""

    def __init__(self, items: list, indices: list[int] | None = None, copies: list[int] | None = None):
        super().__init__(items)
        self.indices, self.copies = indices, copies
        self._position = None if indices is None else {index: k for k, index in enumerate(indices)}

    def __getitem__(self, key: Any) -> Any:
        if self._position is None:
            return super().__getitem__(key)
        if isinstance(key, slice):
            start, stop = key.start or 0, key.stop if key.stop is not None else self.indices[-1] + 1
            return [block for index, block in zip(self.indices, self) if start <= index < stop]
        return super().__getitem__(self._position[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._position is None or isinstance(key, slice):
            super().__setitem__(key, value)
        else:
            super().__setitem__(self._position[key], value)

    def items(self) -> list[tuple[int, Any]]:
        """(index, block) of every built block, in order."""
        return list(zip(range(len(self)) if self.indices is None else self.indices, self))


class Plan:
    """Which of `depth` alike blocks run, in checkpoint segments of `segment_size` blocks (None: one segment), and
    how many each stands for. Compressed when made inside `compressing()`, plain otherwise."""

    def __init__(self, depth: int, segment_size: int | None = None):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self.segment_size = depth if segment_size is None else min(segment_size, depth)
        self.compressed = _COMPRESS.active
        if self.compressed:
            _COMPRESS.plans += 1

    def _segment_runs(self) -> list[tuple[int, int, int]]:
        """(start, stop, copies) of each segment that runs."""
        size, depth = self.segment_size, self.depth
        full = depth // size
        picks = _runs(0, full) if self.compressed else [(k, 1) for k in range(full)]
        runs = [(k * size, (k + 1) * size, copies) for k, copies in picks]
        if full * size < depth:  # a last, shorter segment
            runs.append((full * size, depth, 1))
        return runs

    def _blocks_in(self, start: int, stop: int) -> list[tuple[int, int]]:
        return _runs(start, stop) if self.compressed else [(i, 1) for i in range(start, stop)]

    def segments(self) -> Iterator[tuple[int, int]]:
        """The checkpoint segments (start, stop), each run inside the repeat scope of the segments it stands for."""
        for start, stop, copies in self._segment_runs():
            if copies == 1:
                yield start, stop
            else:
                with repeat_scope(copies):
                    yield start, stop

    def blocks(self, start: int, stop: int) -> Iterator[int]:
        """The indices of blocks start..stop-1 (one segment, or whole segments), each run inside the repeat scopes of
        what it stands for. Plain: `range(start, stop)`."""
        if not self.compressed:
            return iter(range(start, stop))
        return self._compressed_blocks(start, stop)

    def _compressed_blocks(self, start: int, stop: int) -> Iterator[int]:
        size = self.segment_size
        if stop - start <= size:  # one segment, whose own scope (if any) is entered already: by `segments`, or
            segments = [(start, stop, 1)]  # by the backward of the segment's checkpoint op
        else:
            segments = [s for s in self._segment_runs() if start <= s[0] and s[1] <= stop]
        for seg_start, seg_stop, seg_copies in segments:
            with repeat_scope(seg_copies) if seg_copies > 1 else contextlib.nullcontext():
                for index, copies in _runs(seg_start, seg_stop):
                    if copies == 1:
                        yield index
                    else:
                        with repeat_scope(copies):
                            yield index

    def built(self) -> list[tuple[int, int]]:
        """(index, copies) of every block that runs, in order: each index once, copies counted through segments."""
        return [(index, seg_copies * copies) for seg_start, seg_stop, seg_copies in self._segment_runs()
                for index, copies in self._blocks_in(seg_start, seg_stop)]

    def build(self, make: Callable[[int], Any]) -> Blocks:
        """Block i = make(i) for each block that runs (every block when plain), in order."""
        if not self.compressed:
            return Blocks([make(i) for i in range(self.depth)])
        built, blocks = self.built(), []
        for index, copies in built:
            with meta.drawing_copies(copies):  # a shape-only build's draw limit counts what the block stands for
                blocks.append(make(index))
        return Blocks(blocks, [index for index, _ in built], [copies for _, copies in built])


def copies(model: Any) -> dict[int, int]:
    """id(parameter tensor or model-state array) -> how many alike it stands for, for those of a compressed model's
    blocks that stand for more than one (empty for a model whose every block was built)."""
    if not _COMPRESS.active:
        return {}
    found: dict[int, int] = {}

    def is_module(value: Any) -> bool:  # nn.layers.Module, known by what it offers (layers imports this module)
        return hasattr(value, "parameters") and hasattr(value, "named_buffers")

    def visit(module: Any, factor: int) -> None:
        for value in vars(module).values():
            if isinstance(value, Blocks) and value.copies is not None:
                for block, n in zip(value, value.copies):
                    if factor * n > 1:
                        found.update((id(p), factor * n) for p in block.parameters())
                        found.update((id(array), factor * n) for _, array in block.named_buffers())
                    visit(block, factor * n)
            elif is_module(value):
                visit(value, factor)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if is_module(item):
                        visit(item, factor)

    visit(model, 1)
    return found


__all__ = ["Blocks", "Compression", "NotRepeatable", "Plan", "compressing", "copies", "is_compressing"]

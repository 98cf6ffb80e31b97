"""16-bit kernels emulated on numpy: compute in float32, round each result once to the 16-bit type.

numpy has no BLAS for bfloat16 or float16, and its 16-bit ufunc loops (ml_dtypes' for bfloat16, numpy's own for
float16) convert element by element and accumulate reductions in 16 bits. A 16-bit kernel on real hardware reads
16-bit operands, accumulates in float32 and writes a 16-bit result; the ops do the same here:

- `matmul`: a matrix product (batched, broadcast) in float32 tiles: each operand tile cast to float32, one BLAS
  call, the result rounded into the 16-bit output. The float32 tiles (at most TILE_ELEMENTS each) are the
  emulation's scratch, not the step's: each is reported as the op's workspace (`ctx.workspace`, roles
  `fp32_lhs`, `fp32_rhs`, `fp32_out`, `fp32_product`), so the ledger counts them as temporaries while they live
  and never as activations. `EMULATION_ROLES` names them for the reports.
- `elementwise`: a ufunc chain on broadcast operands, block by block (`chunks.blocks`): each block's operands
  cast to float32 scratch, the arithmetic in float32, the block rounded into the result. The block scratch is
  small and hidden, like every op's block scratch (≤ CHUNK_ELEMENTS float32 elements per operand).
- `reduce_sum`: np.add.reduce accumulating in float32 straight into a 16-bit result (numpy's buffered casting:
  no full-size float32 intermediate).

Every cast between a 16-bit operand and float32 goes through `widen` and `narrow`, the same values as numpy's
casts (np.copyto(casting="unsafe"): ml_dtypes' for bfloat16); for bfloat16 they work on the bits, 3x and 2x faster
than ml_dtypes' loops: bfloat16 is the top half of a float32, so widening is a shift, and narrowing is integer
round-to-nearest-even (tests/test_emulate_bits.py checks every float32 against ml_dtypes).

Float32 and float64 arrays never come here: each op keeps its plain numpy path for them, unchanged.
Shape-only arrays (the predictor's) allocate the same scratch and result buffers and skip the loops, which
allocate nothing the ledger sees: one tile or block stands for all, as the optimisers' chunks do.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..engine import Node
from ..precision import FLOAT32, is_bf16, is_low
from .chunks import CHUNK_ELEMENTS, blocks, box_blocks, part

TILE_ELEMENTS = 1 << 20  # float32 elements per tile of a 16-bit matmul's operands and result (4 MiB each)
MAX_TILE_DEPTH = 1 << 12  # the summed axis is split above this many elements
EMULATION_PREFIX = "fp32_"  # the roles of the emulation's float32 workspaces (the ledger names them <op>.<role>)
EMULATION_ROLES = ("fp32_lhs", "fp32_rhs", "fp32_out", "fp32_product")
BF16_INF_BITS = 0x7F80  # bfloat16's +inf; with the sign bit (0x8000) cleared, more is NaN
BF16_NEG_INF_BITS = 0xFF80  # -inf; above it, negative NaNs


def is_bfloat16(array: Any) -> bool:
    """A real bfloat16 array (the arrays whose casts and ReLU work on the bits)."""
    return type(array) is np.ndarray and is_bf16(array.dtype)


def widen(target: Any, values: Any) -> None:
    """16-bit `values` into float32 `target` (same shape, any layouts), exactly. bfloat16: its 16 bits become the
    top half of each float32 (ml_dtypes' cast does the same, NaN payloads included)."""
    if is_bfloat16(values) and type(target) is np.ndarray:
        bits, halves = target.view(np.uint32), values.view(np.uint16)
        strides = values.strides[-2:]
        if len(strides) == 2 and 0 != abs(strides[0]) < abs(strides[1]):
            # a transposed operand (a weight's .T): numpy's copy walks the target's rows and reads the values a
            # column apart, missing the cache; bands of columns of ≤ CHUNK_ELEMENTS values a matrix stay in it (2x)
            band = max(1, CHUNK_ELEMENTS // max(values.shape[-2], 1))
            for j in range(0, values.shape[-1], band):
                np.copyto(bits[..., j:j + band], halves[..., j:j + band])
        else:
            np.copyto(bits, halves)
        bits <<= 16
    else:
        np.copyto(target, values, casting="unsafe")


def narrow(target: Any, values: Any, spare: Any = None) -> None:
    """float32 `values` rounded into 16-bit `target` (same shape, any layouts), as np.copyto(casting="unsafe")
    rounds; `values` is left as it was.

    bfloat16 without a NaN in `values`: integer round to nearest even on the bits, (u + 0x7FFF + lowest kept bit)
    >> 16, which carries a too-large finite into inf as ml_dtypes does (from CHUNK_ELEMENTS values up: below,
    the extra numpy calls cost more than they save); its intermediate lives in `spare` (a
    1-d buffer of 4-byte elements the caller no longer needs: a workspace already counted), piece by piece,
    else in a hidden block of at most CHUNK_ELEMENTS. A NaN (rare) leaves the whole array to ml_dtypes' cast,
    which makes its own quiet NaNs."""
    if not is_bfloat16(target) or type(values) is not np.ndarray or values.dtype != FLOAT32 \
            or values.size < CHUNK_ELEMENTS or np.isnan(np.maximum.reduce(values, axis=None)):
        # a smaller block gains less than its extra numpy calls cost; maximum propagates a NaN
        np.copyto(target, values, casting="unsafe")
        return
    if spare is None:
        spare = np.empty(min(values.size, CHUNK_ELEMENTS), dtype=np.uint32)
    words, out = values.view(np.uint32), target.view(np.uint16)
    for index in box_blocks(values.shape, spare.size):
        piece = words[index]
        t = spare[: piece.size].view(np.uint32).reshape(piece.shape)
        np.right_shift(piece, 16, out=t)
        np.bitwise_and(t, 1, out=t)  # the lowest bit kept: a tie rounds to even
        np.add(t, 0x7FFF, out=t)
        np.add(t, piece, out=t)  # no overflow: the largest non-NaN pattern is -inf's, 0xFF800000
        np.right_shift(t, 16, out=t)
        np.copyto(out[index], t, casting="unsafe")  # the top half, now in the low one


def finite_bfloat16(array: np.ndarray) -> bool:
    """Whether a real bfloat16 array holds no inf nor NaN: two integer max-reductions of its bits (signed: the
    positive non-finites are the largest; unsigned: the negative ones)."""
    if array.size == 0:
        return True
    return int(np.maximum.reduce(array.view(np.int16), axis=None)) < BF16_INF_BITS \
        and int(np.maximum.reduce(array.view(np.uint16), axis=None)) < BF16_NEG_INF_BITS


def is_real(array: Any) -> bool:
    return type(array) is np.ndarray


def result_dtype(*arrays: Any) -> np.dtype:
    """The 16-bit dtype of a product or element-wise result: the 16-bit operand's, float32 beside a float32 one
    (numpy's promotion; bfloat16 with float16 has no common type and is refused)."""
    return np.result_type(*(a.dtype for a in arrays if hasattr(a, "dtype")))


def _tiles(m: int, k: int, n: int) -> tuple[int, int, int]:
    """Tile sizes (rows, summed, columns) with every tile of the operands and result ≤ TILE_ELEMENTS."""
    kb = max(1, min(k, MAX_TILE_DEPTH))
    mb = max(1, min(m, TILE_ELEMENTS // kb))
    nb = max(1, min(n, TILE_ELEMENTS // kb, TILE_ELEMENTS // mb))
    return mb, kb, nb


def matmul(ctx: Node, a: Any, b: Any, bias: Any = None, dtype: Any = None) -> Any:
    """a @ b (+ bias along the last axis) for (..., M, K) @ (..., K, N), leading axes broadcast, computed in float32
    tiles and rounded once into a new C-ordered result of `dtype` (default: the operands' `result_dtype`).

    The float32 tiles are reported as workspaces of `ctx` and the result through `ctx.result` (made while they
    live). A whole matrix fits a tile at the sizes most steps use: then each operand is cast once, with several
    matrices of a batch per BLAS call."""
    dtype = result_dtype(a, b) if dtype is None else np.dtype(dtype)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (m, k), n = a.shape[-2:], b.shape[-1]
    out = np.empty(batch + (m, n), dtype=dtype, like=a)
    a, b = np.broadcast_to(a, batch + (m, k)), np.broadcast_to(b, batch + (k, n))
    mb, kb, nb = _tiles(m, k, n)
    whole = mb == m and kb == k and nb == n
    per_matrix = max(mb * kb, kb * nb, mb * nb, 1)
    batch_blocks = box_blocks(batch, TILE_ELEMENTS // per_matrix if whole else 1)
    count = _box_size(batch, batch_blocks[0])  # matrices per tile (the first box is the largest)
    lhs = ctx.workspace(np.empty(count * mb * kb, dtype=FLOAT32, like=out), "fp32_lhs")
    rhs = ctx.workspace(np.empty(count * kb * nb, dtype=FLOAT32, like=out), "fp32_rhs")
    res = ctx.workspace(np.empty(count * mb * nb, dtype=FLOAT32, like=out), "fp32_out")
    product = ctx.workspace(np.empty(count * mb * nb, dtype=FLOAT32, like=out), "fp32_product") if kb < k else None
    ctx.result(out)
    if is_real(out):  # shape-only: the buffers above are what every tile uses (see the module docstring)
        _tiled(a, b, bias, out, (lhs, rhs, res, product), (mb, kb, nb), batch_blocks, len(batch))
    return out


def _tiled(a: np.ndarray, b: np.ndarray, bias: Any, out: np.ndarray, scratch: tuple, tiles: tuple[int, int, int],
           batch_blocks: list[tuple], batch_axes: int) -> None:
    """`matmul`'s loops (a function of their own: the views of the scratch die with it, before the scratch itself,
    the same way on every path)."""
    lhs, rhs, res, product = scratch
    mb, kb, nb = tiles
    (m, k), n = a.shape[-2:], b.shape[-1]
    for index in batch_blocks:
        index = () if index == (Ellipsis,) else index
        index += (slice(None),) * (batch_axes - len(index))  # the batch axes the box takes whole
        for i0 in range(0, m, mb):
            rows = slice(i0, min(i0 + mb, m))
            for j0 in range(0, n, nb):
                cols = slice(j0, min(j0 + nb, n))
                target = out[index + (rows, cols)]
                acc = _view(res, target.shape)
                if k == 0:  # an empty sum
                    acc.fill(0)
                for k0 in range(0, k, kb):
                    depth = slice(k0, min(k0 + kb, k))
                    av, bv = a[index + (rows, depth)], b[index + (depth, cols)]
                    a32, b32 = _view(lhs, av.shape), _view(rhs, bv.shape)
                    widen(a32, av)
                    widen(b32, bv)
                    if k0 == 0:
                        np.matmul(a32, b32, out=acc)
                    else:
                        step = _view(product, acc.shape)
                        np.matmul(a32, b32, out=step)
                        acc += step
                if bias is not None:
                    acc += bias[cols]
                narrow(target, acc, lhs if lhs.size >= rhs.size else rhs)  # the operand tiles are spent


def matmul_sum(ctx: Node, a: Any, b: Any, out: Any = None) -> Any:
    """Σ_i a[i] @ b[i] for a (B, M, K) and b (B, K, N) into `out` (M, N) (default: a new array of their
    `result_dtype`): every product accumulated in float32 tiles (workspaces as in `matmul`) and rounded once (a
    convolution's weight gradient, summed over the examples)."""
    (m, k), n = a.shape[1:], b.shape[-1]
    if out is None:
        out = np.empty((m, n), dtype=result_dtype(a, b), like=a)
    mb, kb, nb = _tiles(m, k, n)
    lhs = ctx.workspace(np.empty(mb * kb, dtype=FLOAT32, like=out), "fp32_lhs")
    rhs = ctx.workspace(np.empty(kb * nb, dtype=FLOAT32, like=out), "fp32_rhs")
    res = ctx.workspace(np.empty(mb * nb, dtype=FLOAT32, like=out), "fp32_out")
    product = ctx.workspace(np.empty(mb * nb, dtype=FLOAT32, like=out), "fp32_product")
    ctx.result(out)
    if is_real(out):
        _tiled_sum(a, b, out, (lhs, rhs, res, product), (mb, kb, nb))
    return out


def _tiled_sum(a: np.ndarray, b: np.ndarray, out: np.ndarray, scratch: tuple, tiles: tuple[int, int, int]) -> None:
    """`matmul_sum`'s loops (see `_tiled`)."""
    lhs, rhs, res, product = scratch
    mb, kb, nb = tiles
    count, (m, k), n = a.shape[0], a.shape[1:], b.shape[-1]
    for i0 in range(0, m, mb):
        rows = slice(i0, min(i0 + mb, m))
        for j0 in range(0, n, nb):
            cols = slice(j0, min(j0 + nb, n))
            target = out[rows, cols]
            acc = _view(res, target.shape)
            acc.fill(0)
            step = _view(product, target.shape)
            for i in range(count):
                for k0 in range(0, k, kb):
                    depth = slice(k0, min(k0 + kb, k))
                    av, bv = a[i, rows, depth], b[i, depth, cols]
                    a32, b32 = _view(lhs, av.shape), _view(rhs, bv.shape)
                    widen(a32, av)
                    widen(b32, bv)
                    np.matmul(a32, b32, out=step)
                    acc += step
            narrow(target, acc, product)  # spent


def _box_size(shape: tuple[int, ...], index: tuple) -> int:
    """Elements of `shape` a `box_blocks` index picks (integers on the outer axes, one slice, the rest whole)."""
    if index == (Ellipsis,):
        return math.prod(shape)
    last = index[-1]
    return (min(last.stop, shape[len(index) - 1]) - last.start) * math.prod(shape[len(index):])


def _view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first elements of a 1-d scratch buffer shaped as `shape` (a view)."""
    return buffer[: math.prod(shape)].reshape(shape)


def elementwise(fn: Callable[..., Any], dtype: Any, *operands: Any) -> Any:
    """`fn(*operands)` element-wise over the operands' broadcast shape, in float32 block by block, rounded into a new
    C-ordered array of `dtype`. `fn(*blocks, out=block)` receives float32 blocks (Python numbers pass as they are)
    and writes its float32 result into `out`; it may use the operand blocks as scratch: they are copies."""
    arrays = [x for x in operands if hasattr(x, "shape")]
    shape = np.broadcast_shapes(*(x.shape for x in arrays))
    out = np.empty(shape, dtype=np.dtype(dtype), like=arrays[0])
    if not is_real(out):
        return out
    views = [np.broadcast_to(x, shape) if hasattr(x, "shape") else x for x in operands]
    indices = blocks(out)
    first = out[indices[0]].shape
    scratch = [np.empty(first, dtype=FLOAT32) if hasattr(x, "shape") else None for x in operands]
    result = np.empty(first, dtype=FLOAT32)
    spare = next(s for s in scratch if s is not None).reshape(-1)  # an operand's block: spent once `fn` is done
    for index in indices:
        target = out[index]
        ins = []
        for view, s in zip(views, scratch):
            if s is None:
                ins.append(view)
                continue
            piece = part(s, target)
            widen(piece, view[index])
            ins.append(piece)
        r = part(result, target)
        fn(*ins, out=r)
        narrow(target, r, spare)
    return out


def low_dtype(*operands: Any) -> np.dtype | None:
    """The result dtype of the operands when one of them is 16-bit (then the op computes in float32), else None."""
    for x in operands:
        dt = getattr(x, "dtype", None)
        if dt is not None and is_low(dt):
            return np.result_type(*(a.dtype for a in operands if hasattr(a, "dtype")))
    return None


def ufunc(fn: Callable[..., Any], *operands: Any) -> Any:
    """`fn(*operands)` (a ufunc, or a chain written as fn(*xs, out=)): numpy's, or `elementwise` in float32 when an
    operand is 16-bit."""
    dtype = low_dtype(*operands)
    if dtype is None:
        return fn(*operands)
    return elementwise(fn, dtype, *operands)


def load(scratch: Any, block: Any) -> Any:
    """A block's values in float32: the leading part of `scratch` (made by `chunks.scratch(..., FLOAT32)`)."""
    piece = part(scratch, block)
    widen(piece, block)
    return piece


def store(target: Any, values: Any) -> None:
    """float32 values rounded into a 16-bit block of a result (`narrow`)."""
    narrow(target, values)


def reduce_sum(x: Any, axis: Any = None, keepdims: bool = False, scale: float | None = None) -> Any:
    """Σ over `axis` of a 16-bit x, accumulated in float32 and rounded once into a new array of x's dtype; with
    `scale`, the sum times `scale` (a mean), scaled in float32 before the rounding (a hidden float32 array of the
    result's size)."""
    ndim = x.ndim
    axes = tuple(range(ndim)) if axis is None else ((axis,) if isinstance(axis, int) else tuple(axis))
    axes = tuple(a % ndim for a in axes) if ndim else ()
    shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape)) if keepdims else \
        tuple(n for i, n in enumerate(x.shape) if i not in axes)
    if scale is not None:
        wide = np.asarray(np.add.reduce(x, axis=axes, keepdims=keepdims, dtype=FLOAT32), like=x)
        wide *= scale
        return wide.astype(x.dtype)
    out = np.empty(shape, dtype=x.dtype, like=x)
    np.add.reduce(x, axis=axes, keepdims=keepdims, dtype=FLOAT32, out=out)
    return out


def widened(x: Any) -> Any:
    """x in float32 (a new array) when it is 16-bit, else x itself: for small arrays (a norm's weight, a bias)."""
    return x.astype(FLOAT32) if is_low(x.dtype) else x


__all__ = ["EMULATION_PREFIX", "EMULATION_ROLES", "TILE_ELEMENTS", "elementwise", "finite_bfloat16", "is_bfloat16",
           "load", "low_dtype", "matmul", "matmul_sum", "narrow", "reduce_sum", "result_dtype", "store", "ufunc",
           "widen", "widened"]

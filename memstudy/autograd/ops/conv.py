"""2-d convolution on NCHW arrays as im2col + matrix product, with a choice of what backward keeps.

The column matrix of an input x (N, C, H, W) for a k×k kernel holds, for every output position, the C·k·k
input values under the kernel: shape (N, C·k·k, Ho·Wo), built by k² strided slice copies (one per kernel
offset) into one preallocated buffer, with padding written as zeros rather than copied from a padded input.
The output is one matrix product per example, W (O, C·k·k) @ columns[n], landing straight in NCHW.

What backward needs to form the weight's gradient is the column matrix. `save` chooses how to keep it:
  input   -- keep x (PyTorch's choice) and rebuild the columns in backward: k² times less held, one column
             buffer rebuilt per backward;
  columns -- keep the column matrix itself (the textbook im2col layer): k² times x held (stride 1, padding
             k//2), nothing rebuilt.
Both give the same gradients. Every column-sized buffer that is not saved (the forward's columns under
`input`, the rebuilt columns, the columns' gradient) is reported through `ctx.workspace`, so the ledger
counts it while it lives, and every result made while one lives (the output, the weight's and the input's
gradients) through `ctx.result`, so the ledger sees them together, as they are.

`algo` chooses how the products are made, and so how much workspace they hold (as cuDNN chooses an algorithm under
a workspace limit):
  per_example -- the column matrix of the whole batch, (N, C·k·k, Ho·Wo), and one matrix product per example
                 (the engine's only algorithm before `algo` existed; its bytes are unchanged);
  batched     -- a block of B examples (default: all of them) laid out as one (C·k·k, B·Ho·Wo) matrix, so that each
                 product is a single GEMM for the block: W @ columns, the weight's gradient grad_Bᵀ @ columnsᵀ and the
                 columns' gradient Wᵀ @ grad_B. It holds the block's columns and the block's (O, B·Ho·Wo) product
                 (the output, or the transposed gradient) at once: `batched_workspace_bytes`;
  auto        -- `choose`: batched with the largest block whose workspace fits `workspace_bytes` (the rule, and what
                 measurement says of it, in its docstring), decided from shapes alone, so a prediction makes the same
                 choice.
"""
from __future__ import annotations

import numpy as np

from ..engine import STATE, Function, Node
from ..precision import FLOAT32, is_low
from . import emulate
from .linalg import BIAS_BUFFER_ELEMENTS, product, small_ufunc_buffer
from .strided import reshaped, shares_buffer

CONV_SAVES = ("input", "columns")
CONV_ALGOS = ("per_example", "batched", "auto")


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output positions along one axis (floor mode, as PyTorch): (size + 2·padding − kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _offset_ranges(size: int, out_size: int, offset: int, stride: int, padding: int) -> tuple[int, int, int, int]:
    """For kernel offset `offset`: output positions [lo, hi) whose input index stride·o + offset − padding lies
    inside [0, size), and that input slice's [start, stop)."""
    shift = offset - padding
    lo = 0 if shift >= 0 else (-shift + stride - 1) // stride  # smallest o with stride·o + shift >= 0
    hi = min(out_size, (size - 1 - shift) // stride + 1)  # one past the largest o with stride·o + shift < size
    if hi <= lo:
        return lo, lo, 0, 0
    return lo, hi, stride * lo + shift, stride * (hi - 1) + shift + 1


def _geometry(x_shape: tuple[int, ...], kernel: int, stride: int, padding: int) -> tuple:
    """(Ho, Wo, the per-offset ranges along H and W) of a convolution of an NCHW input."""
    height, width = x_shape[2], x_shape[3]
    out_h, out_w = output_size(height, kernel, stride, padding), output_size(width, kernel, stride, padding)
    rows = [_offset_ranges(height, out_h, i, stride, padding) for i in range(kernel)]
    cols = [_offset_ranges(width, out_w, j, stride, padding) for j in range(kernel)]
    return out_h, out_w, rows, cols


def columns_are_input(kernel: int, stride: int, padding: int) -> bool:
    """A 1×1 kernel with stride 1 and no padding: the column matrix is x itself, reshaped (a view of a contiguous x;
    numpy copies an x whose H and W cannot be merged: see `im2col`)."""
    return kernel == 1 and stride == 1 and padding == 0


def im2col(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """The column matrix (N, C·k·k, Ho·Wo) of x (N, C, H, W); x itself reshaped for a 1×1, stride-1 kernel (a view,
    or a copy when x's layout does not allow one: `shares_buffer` tells which)."""
    n, c = x.shape[0], x.shape[1]
    out_h, out_w, rows, cols = _geometry(x.shape, kernel, stride, padding)
    if columns_are_input(kernel, stride, padding):
        return x.reshape(n, c, out_h * out_w)
    # zeros: the positions a kernel offset reads from the padding stay 0 (no padded copy of x is made)
    columns = (np.zeros if padding else np.empty)((n, c, kernel, kernel, out_h, out_w), dtype=x.dtype, like=x)
    for i, (h_lo, h_hi, h_start, h_stop) in enumerate(rows):
        for j, (w_lo, w_hi, w_start, w_stop) in enumerate(cols):
            if h_lo < h_hi and w_lo < w_hi:
                columns[:, :, i, j, h_lo:h_hi, w_lo:w_hi] = x[:, :, h_start:h_stop:stride, w_start:w_stop:stride]
    return columns.reshape(n, c * kernel * kernel, out_h * out_w)


def col2im(grad_columns: np.ndarray, x_shape: tuple[int, ...], kernel: int, stride: int,
           padding: int, dtype: np.dtype | None = None) -> np.ndarray:
    """The adjoint of `im2col`: each column entry added back to the input position it was copied from, the sums in
    `dtype` (default the columns')."""
    n, c = x_shape[0], x_shape[1]
    out_h, out_w, rows, cols = _geometry(x_shape, kernel, stride, padding)
    if columns_are_input(kernel, stride, padding):
        return grad_columns.reshape(x_shape)
    blocks = grad_columns.reshape(n, c, kernel, kernel, out_h, out_w)  # a view: grad_columns is a new C array
    grad_x = np.zeros(x_shape, dtype=grad_columns.dtype if dtype is None else dtype, like=grad_columns)
    with small_ufunc_buffer():  # numpy buffers a strided add (~100 KB by default, unseen by the ledger)
        for i, (h_lo, h_hi, h_start, h_stop) in enumerate(rows):
            for j, (w_lo, w_hi, w_start, w_stop) in enumerate(cols):
                if h_lo < h_hi and w_lo < w_hi:
                    target = grad_x[:, :, h_start:h_stop:stride, w_start:w_stop:stride]
                    np.add(target, blocks[:, :, i, j, h_lo:h_hi, w_lo:w_hi], out=target)
    return grad_x


def per_example_workspace_bytes(n: int, channels: int, kernel: int, stride: int, padding: int, out_h: int, out_w: int,
                                itemsize: int, save: str, need_x: bool, need_w: bool) -> int:
    """The largest bytes of column-sized workspaces `per_example` holds at once: the batch's column matrix (the
    forward's, unless saved; the rebuilt one; the columns' gradient: one at a time), none for a 1×1, stride-1 kernel
    on a contiguous input (its columns are the input)."""
    if columns_are_input(kernel, stride, padding):
        return 0
    columns = n * channels * kernel * kernel * out_h * out_w * itemsize
    keep = need_w and save == "columns"
    return columns if (not keep or need_x) else 0


def batched_workspace_bytes(n: int, block: int, channels: int, out_channels: int, kernel: int, out_h: int, out_w: int,
                            itemsize: int, save: str, need_x: bool, need_w: bool) -> int:
    """The largest bytes of workspaces `batched` with `block` examples per GEMM holds at once, forward or backward:
    the block's columns (C·k·k, B·Ho·Wo) (unless saved) beside the block's product (O, B·Ho·Wo) (the forward's output
    block; in backward the gradient block, beside the columns for the weight's gradient and then the columns'
    gradient for the input's), and the (O, C·k·k) term each block adds to the weight's gradient when there are
    several. Without the float32 scratch of 16-bit products (`emulate`)."""
    block = max(1, min(block, n))
    positions = block * out_h * out_w
    columns, product = channels * kernel * kernel * positions * itemsize, out_channels * positions * itemsize
    keep = need_w and save == "columns"
    forward = product + (0 if keep else columns)
    term = out_channels * channels * kernel * kernel * itemsize if need_w and block < n else 0
    backward = 0
    if need_w:
        backward = product + (0 if keep else columns) + term
    if need_x:
        backward = max(backward, product + columns)
    return max(forward, backward)


def choose(algo: str, workspace_bytes: int | None, block: int | None, n: int, channels: int, out_channels: int,
           kernel: int, stride: int, padding: int, out_h: int, out_w: int, itemsize: int, save: str, need_x: bool,
           need_w: bool) -> tuple[str, int]:
    """(algorithm, examples per GEMM) a convolution runs, from shapes alone (a prediction chooses as a measured step).

    per_example: (per_example, N). batched: (batched, `block`, default N). auto: batched with the largest block
    B ≤ N whose `batched_workspace_bytes` fits `workspace_bytes`, i.e. the fewest GEMM calls the limit allows; when not
    even one example's fits, B = 1 (the smallest workspace there is: the limit cannot be met, and the row's
    conv_workspace_bytes shows by how much). A stated rule, not a measured optimum: at the CNN benchmark's size
    blocks of 8 examples were fastest at two layers and the whole batch was slower than per_example at the first
    (docs/cnn.md has the measured figures); a rule that knows the cache could choose better."""
    if algo == "per_example":
        return "per_example", n
    if algo == "batched":
        return "batched", max(1, min(n, block or n))
    if algo != "auto":
        raise ValueError(f"conv2d algo must be one of {', '.join(CONV_ALGOS)}, got {algo!r}")
    if workspace_bytes is None or n <= 1:
        return "batched", max(n, 1)

    def fits(b: int) -> bool:
        return batched_workspace_bytes(n, b, channels, out_channels, kernel, out_h, out_w, itemsize, save, need_x,
                                       need_w) <= workspace_bytes
    if fits(n):
        return "batched", n
    lo, hi = 1, n  # the workspace grows with the block: the largest block that fits, by bisection
    if not fits(1):
        return "batched", 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return "batched", lo


def algo_label(algo: str, block: int, n: int) -> str:
    """What ran, as the row says it: per_example, batched (the whole batch per GEMM), or batched:B."""
    return algo if algo == "per_example" or block >= n else f"{algo}:{block}"


class Conv2d(Function):
    """y = W ⊛ x (+ b) on NCHW arrays: x (N, C, H, W), weight (O, C, k, k), bias (O,); square kernel.

    Saves the weight (for the input's gradient) and, for the weight's gradient, x (`save="input"`) or the
    column matrix (`save="columns"`); see the module docstring. Any layout: where a non-contiguous input, weight
    or gradient must be reshaped (a 1×1 kernel's columns are x itself; the weight as an (O, C·k·k) matrix; the
    gradient as (N, O, Ho·Wo)), numpy's copy is reported as a workspace. 16-bit operands: the products in float32
    tiles (`emulate.matmul`), the weight's gradient summed over the examples and the input's gradient over the kernel
    offsets in float32 workspaces (`fp32_out`), each rounded once; the bias is added to the rounded product.
    Shape-only prediction: runs unchanged on
    shape-only arrays (slices, `np.zeros(..., like=x)` and `np.matmul` only; the geometry is computed from
    shapes), so the predictor sees the same saved arrays and workspaces.
    """

    name = "conv2d"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, stride: int = 1,
                padding: int = 0, save: str = "input", algo: str = "per_example", block: int | None = None,
                workspace_bytes: int | None = None) -> np.ndarray:
        if x.ndim != 4 or weight.ndim != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3]:
            raise ValueError(f"conv2d takes x (N, C, H, W) and a square weight (O, C, k, k), got {x.shape} and "
                             f"{weight.shape}")
        if save not in CONV_SAVES:
            raise ValueError(f"conv2d save must be one of {', '.join(CONV_SAVES)}, got {save!r}")
        if algo not in CONV_ALGOS:
            raise ValueError(f"conv2d algo must be one of {', '.join(CONV_ALGOS)}, got {algo!r}")
        if block is not None and block < 1:
            raise ValueError(f"conv2d block must be at least 1 example, got {block}")
        kernel = weight.shape[2]
        n, out_channels = x.shape[0], weight.shape[0]
        out_h = output_size(x.shape[2], kernel, stride, padding)
        out_w = output_size(x.shape[3], kernel, stride, padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"conv2d: a {kernel}×{kernel} kernel with padding {padding} does not fit a "
                             f"{x.shape[2]}×{x.shape[3]} input")
        ctx.x_shape, ctx.kernel, ctx.stride, ctx.padding, ctx.mode = x.shape, kernel, stride, padding, save
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.algo, ctx.block = choose(algo, workspace_bytes, block, n, x.shape[1], out_channels, kernel, stride,
                                     padding, out_h, out_w, x.dtype.itemsize, save, need_x, need_w)
        ctx.choice(algo_label(ctx.algo, ctx.block, n))
        if ctx.algo == "batched":
            return _batched_forward(ctx, x, weight, bias, out_h, out_w)
        columns = im2col(x, kernel, stride, padding)
        keep_columns = need_w and save == "columns"
        if not keep_columns and not shares_buffer(columns, x):  # a 1×1 kernel's columns are x, unless copied
            ctx.workspace(columns, "columns")
        ctx.save(x=x if need_w and save == "input" else None,
                 columns=columns if keep_columns else None,
                 weight=weight if need_x else None)
        # (N, O, Ho·Wo): NCHW, contiguous; made while the columns live, and reported so
        out = ctx.result(product(ctx, _weight_matrix(ctx, weight), columns))
        columns = None  # the forward's columns die here unless saved
        out = out.reshape(n, out_channels, out_h, out_w)
        if bias is not None:
            _add_bias(out, bias)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        if ctx.algo == "batched":
            return _batched_backward(ctx, grad)
        x, columns, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        kernel, stride, padding = ctx.kernel, ctx.stride, ctx.padding
        low = is_low(grad.dtype) or (weight is not None and is_low(weight.dtype))
        n, out_channels = grad.shape[0], grad.shape[1]
        # (N, O, Ho·Wo): a view of a C-contiguous gradient, else a copy reported as a workspace
        grad3 = reshaped(ctx, grad, (n, out_channels, grad.shape[2] * grad.shape[3]), "grad_matrix")
        grad_w = grad_b = grad_x = None
        if needs[1]:
            if columns is None:  # save="input": rebuild the columns from the saved input
                columns = im2col(x, kernel, stride, padding)
                if not shares_buffer(columns, x):
                    ctx.workspace(columns, "columns")
            x = None
            # Σ_n grad[n] @ columns[n]ᵀ one example at a time: a single batched product would make an
            # (N, O, C·k·k) temporary the ledger cannot see. The gradient owns its buffer in the weight's shape
            # (a leaf's gradient is then taken as it is, not copied) and is summed through a 2-d view of it.
            grad_w = ctx.result(np.zeros((out_channels, ctx.x_shape[1], kernel, kernel), dtype=grad.dtype,
                                         like=grad))
            flat = grad_w.reshape(out_channels, ctx.x_shape[1] * kernel * kernel)  # a view: grad_w is new, C
            if low:  # Σ_n grad[n] @ columns[n]ᵀ accumulated in float32 tiles, rounded once
                emulate.matmul_sum(ctx, grad3, np.swapaxes(columns, 1, 2), out=flat)
            else:
                term = np.empty_like(flat)
                # on shape-only arrays each example's product has the same shapes and allocates nothing: one stands
                # for all, so that a prediction does not cost more for a larger batch
                for i in range(n if type(grad3) is np.ndarray else min(n, 1)):
                    np.matmul(grad3[i], columns[i].T, out=term)
                    flat += term
                term = None
            flat = columns = None
        if len(needs) > 2 and needs[2]:
            if is_low(grad3.dtype):
                grad_b = emulate.reduce_sum(grad3, (0, 2))
            else:
                grad_b = np.add.reduce(np.add.reduce(grad3, axis=2), axis=0)
        if needs[0]:
            grad_columns = product(ctx, _weight_matrix(ctx, weight).T, grad3)  # (N, C·k·k, Ho·Wo)
            if not columns_are_input(kernel, stride, padding):  # else it is the input's gradient itself
                ctx.workspace(grad_columns, "grad_columns")
            if low and not columns_are_input(kernel, stride, padding):  # overlapping windows summed in float32
                total = ctx.workspace(col2im(grad_columns, ctx.x_shape, kernel, stride, padding, FLOAT32), "fp32_out")
                grad_x = ctx.result(total.astype(grad.dtype))
                total = None
            else:
                grad_x = ctx.result(col2im(grad_columns, ctx.x_shape, kernel, stride, padding))
        if len(needs) == 2:
            return grad_x, grad_w
        return grad_x, grad_w, grad_b


def _weight_matrix(ctx: Node, weight: np.ndarray) -> np.ndarray:
    """The weight (O, C, k, k) as an (O, C·k·k) matrix: a view of a contiguous weight, else a reported copy."""
    return reshaped(ctx, weight, (weight.shape[0], weight.shape[1] * weight.shape[2] * weight.shape[3]),
                    "weight_matrix")


def _add_bias(out: np.ndarray, bias: np.ndarray) -> None:
    """out += bias over the channel axis, in place (out is fresh); numpy's hidden broadcast buffer kept small."""
    per_channel = bias.reshape(-1, 1, 1)
    if out.size <= BIAS_BUFFER_ELEMENTS or STATE.small_ufunc_buffer:
        out += per_channel
        return
    with small_ufunc_buffer():
        out += per_channel


# --- batched: a block of examples per GEMM -------------------------------------------------------------------------
# The block's columns are laid out (C, k, k, B, Ho, Wo), so that the block is one (C·k·k, B·Ho·Wo) matrix; a block of
# b < B examples (the last) is the view [:, :, :, :b] of the same buffer, still one matrix (rows B·Ho·Wo apart).


def _fill_columns(columns: np.ndarray, x_block: np.ndarray, kernel: int, stride: int, padding: int) -> None:
    """im2col of x_block (b, C, H, W) into columns[:, :, :, :b] (C, k, k, b, Ho, Wo); the positions a kernel offset
    reads from the padding are never written (the buffer was made zero: they stay 0 from block to block)."""
    b = x_block.shape[0]
    _, _, rows, cols = _geometry(x_block.shape, kernel, stride, padding)
    channels_first = x_block.transpose(1, 0, 2, 3)  # (C, b, H, W): a view
    for i, (h_lo, h_hi, h_start, h_stop) in enumerate(rows):
        for j, (w_lo, w_hi, w_start, w_stop) in enumerate(cols):
            if h_lo < h_hi and w_lo < w_hi:
                columns[:, i, j, :b, h_lo:h_hi, w_lo:w_hi] = \
                    channels_first[:, :, h_start:h_stop:stride, w_start:w_stop:stride]


def _add_columns(target: np.ndarray, grad_columns: np.ndarray, kernel: int, stride: int, padding: int) -> None:
    """The adjoint of `_fill_columns`: grad_columns (C, k, k, b, Ho, Wo) added into target (b, C, H, W)."""
    _, _, rows, cols = _geometry(target.shape, kernel, stride, padding)
    channels_first = target.transpose(1, 0, 2, 3)  # (C, b, H, W): a view, written through
    with small_ufunc_buffer():  # numpy buffers a strided add (~100 KB by default, unseen by the ledger)
        for i, (h_lo, h_hi, h_start, h_stop) in enumerate(rows):
            for j, (w_lo, w_hi, w_start, w_stop) in enumerate(cols):
                if h_lo < h_hi and w_lo < w_hi:
                    view = channels_first[:, :, h_start:h_stop:stride, w_start:w_stop:stride]
                    np.add(view, grad_columns[:, i, j, :, h_lo:h_hi, w_lo:w_hi], out=view)


def _blocks(n: int, block: int) -> list[tuple[int, int]]:
    """[start, stop) of each block of examples. Shape-only arrays run every block too: each block's product is a
    new buffer the ledger sees born and freed (auto's blocks are as large as the limit allows, so they are few)."""
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def _column_matrix(columns: np.ndarray, start: int, stop: int, saved: bool) -> np.ndarray:
    """The (C·k·k, b·Ho·Wo) matrix of examples [start, stop): a slice of the saved batch's columns, or the leading
    b examples of the block buffer."""
    c, k = columns.shape[0], columns.shape[1]
    part = columns[:, :, :, start:stop] if saved else columns[:, :, :, :stop - start]
    return part.reshape(c * k * k, (stop - start) * columns.shape[4] * columns.shape[5])  # a view (see above)


def _batched_forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, out_h: int,
                     out_w: int) -> np.ndarray:
    n, channels = x.shape[0], x.shape[1]
    kernel, stride, padding, block = ctx.kernel, ctx.stride, ctx.padding, ctx.block
    out_channels = weight.shape[0]
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    keep = need_w and ctx.mode == "columns"
    width = n if keep else block  # the saved columns hold the batch; a workspace holds one block
    # zeros: the padding's positions stay 0 (see _fill_columns)
    columns = (np.zeros if padding else np.empty)((channels, kernel, kernel, width, out_h, out_w), dtype=x.dtype,
                                                   like=x)
    if not keep:
        ctx.workspace(columns, "columns")
    ctx.save(x=x if need_w and ctx.mode == "input" else None, columns=columns if keep else None,
             weight=weight if need_x else None)
    out = ctx.result(np.empty((n, out_channels, out_h * out_w), dtype=emulate.result_dtype(x, weight), like=x))
    matrix = _weight_matrix(ctx, weight)
    for start, stop in _blocks(n, block):
        if keep and start == 0:
            _fill_columns(columns, x, kernel, stride, padding)  # the whole batch, once
        elif not keep:
            _fill_columns(columns, x[start:stop], kernel, stride, padding)
        # (O, b·Ho·Wo): the block's output, channels first; copied into NCHW
        block_out = ctx.workspace(product(ctx, matrix, _column_matrix(columns, start, stop, keep)), "block_out")
        out[start:stop] = block_out.reshape(out_channels, stop - start, out_h * out_w).transpose(1, 0, 2)
        block_out = None
    columns = matrix = None
    out = out.reshape(n, out_channels, out_h, out_w)
    if bias is not None:
        _add_bias(out, bias)
    return out


def _batched_backward(ctx: Node, grad: np.ndarray) -> tuple:
    x, saved_columns, weight = ctx.saved_tensors
    needs = ctx.needs_input_grad
    kernel, stride, padding, block = ctx.kernel, ctx.stride, ctx.padding, ctx.block
    n, channels = ctx.x_shape[0], ctx.x_shape[1]
    out_channels, out_h, out_w = grad.shape[1], grad.shape[2], grad.shape[3]
    low = is_low(grad.dtype) or (weight is not None and is_low(weight.dtype))
    grad3 = reshaped(ctx, grad, (n, out_channels, out_h * out_w), "grad_matrix")
    # the block's gradient, channels first: (O, B, Ho·Wo), one (O, B·Ho·Wo) matrix
    grad_block = ctx.workspace(np.empty((out_channels, min(block, n), out_h * out_w), dtype=grad.dtype, like=grad),
                               "grad_block")

    def block_matrix(start: int, stop: int) -> np.ndarray:
        part = grad_block[:, :stop - start]
        part[...] = grad3[start:stop].transpose(1, 0, 2)
        return part.reshape(out_channels, (stop - start) * out_h * out_w)  # a view: the leading axes merge

    grad_w = grad_b = grad_x = None
    if needs[1]:
        keep = saved_columns is not None
        columns = saved_columns
        if not keep:
            columns = ctx.workspace((np.zeros if padding else np.empty)(
                (channels, kernel, kernel, min(block, n), out_h, out_w), dtype=x.dtype, like=x), "columns")
        grad_w = ctx.result(np.zeros((out_channels, channels, kernel, kernel), dtype=grad.dtype, like=grad))
        flat = grad_w.reshape(out_channels, channels * kernel * kernel)  # a view: grad_w is new, C
        blocks = _blocks(n, block)
        # Σ over blocks of grad_B @ columns_Bᵀ: one block writes the gradient itself; several add a term each (16-bit:
        # each block's product in float32, summed in float32 and rounded once)
        several = block < n
        total = term = None
        if low:
            total = ctx.workspace(np.zeros(flat.shape, dtype=FLOAT32, like=flat), "fp32_grad_weight")
        elif several:
            term = ctx.workspace(np.empty_like(flat), "grad_weight_term")
        for start, stop in blocks:
            if not keep:
                _fill_columns(columns, x[start:stop], kernel, stride, padding)
            lhs, rhs = block_matrix(start, stop), _column_matrix(columns, start, stop, keep).T
            if low:
                part = emulate.matmul(ctx, lhs, rhs, dtype=FLOAT32)
                total += part
                part = None
            elif several:
                np.matmul(lhs, rhs, out=term)
                flat += term
            else:
                np.matmul(lhs, rhs, out=flat)
            lhs = rhs = None
        if low:
            np.copyto(flat, total, casting="unsafe")
        x = columns = flat = total = term = None
    if len(needs) > 2 and needs[2]:
        if is_low(grad3.dtype):
            grad_b = emulate.reduce_sum(grad3, (0, 2))
        else:
            grad_b = np.add.reduce(np.add.reduce(grad3, axis=2), axis=0)
    if needs[0]:
        matrix_t = _weight_matrix(ctx, weight).T
        # 16-bit: the overlapping windows summed in float32, rounded once
        grad_x = ctx.result(np.zeros(ctx.x_shape, dtype=grad.dtype, like=grad))
        total = ctx.workspace(np.zeros(ctx.x_shape, dtype=FLOAT32, like=grad), "fp32_out") if low else grad_x
        for start, stop in _blocks(n, block):
            # (C·k·k, b·Ho·Wo) -> (C, k, k, b, Ho, Wo): a view of a new C array
            grad_columns = ctx.workspace(product(ctx, matrix_t, block_matrix(start, stop)), "grad_columns")
            grad_columns = grad_columns.reshape(channels, kernel, kernel, stop - start, out_h, out_w)
            _add_columns(total[start:stop], grad_columns, kernel, stride, padding)
            grad_columns = None
        if low:
            np.copyto(grad_x, total, casting="unsafe")
        total = matrix_t = None
    grad_block = None
    if len(needs) == 2:
        return grad_x, grad_w
    return grad_x, grad_w, grad_b

"""Primitive ops: forward and backward side by side, on raw ndarrays.

Each op saves through `ctx.save(...)` only what its backward reads, and only for the inputs whose
gradients are needed; backward reads them back through `ctx.saved_tensors` (which undoes a saved-tensor
policy's storage, e.g. float16 under `half`; ops know nothing of policies). Backward never writes into its incoming gradient (it may be shared or read-only).
Shapes, axes and scalars are plain attributes on ctx: metadata, counted as 0 bytes.

Hidden temporaries (arrays an op allocates and drops inside forward or backward) are invisible to the
ledger, which sees only op outputs, saved arrays and gradients; the ops below are written to keep
those hidden temporaries small (reductions over a batch of 10 classes, not batch×width buffers).

Every op is correct on any memory layout of its inputs and of its incoming gradient (transposed, strided,
reversed, broadcast and read-only, size-0 axes; DESIGN.md principle 19, tests/test_layouts.py): an op allocates
what it writes in the layout it chooses (`np.empty(shape)`), computes in blocks that index every array alike
(`chunks.blocks`), and never writes into the result of a reshape, which copies a non-contiguous array. A
non-contiguous input costs nothing more unless the op's docstring says so (Linear, Conv2d: a reshape's copy,
reported as a workspace through `strided.reshaped`; Reshape, Flatten: numpy's copy is the result).

One module per kind of op (shape, linalg, elementwise, reduce, activation, loss, conv, pool, batch_norm, rms_norm,
rotary, silu, kv_cache, ...); this package
re-exports every op so callers write `ops.Linear`.
"""
from __future__ import annotations

from .shape import unbroadcast, Transpose, Reshape, Flatten, Concatenate
from .linalg import MatMul, BIAS_BUFFER_ELEMENTS, small_ufunc_buffer, Linear
from .elementwise import Add, Sub, Mul, Scale, Neg, Exp, Log, Square, Pow
from .reduce import Argmax, Mean, Sum, SumSquares
from .activation import ReLU, Sigmoid, Tanh
from .loss import SoftmaxCrossEntropy, MSE
from .conv import CONV_ALGOS, CONV_SAVES, Conv2d, col2im, im2col
from .pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .batch_norm import BatchNorm2d, BatchNorm2dEval
from .attention import BatchedMatMul, CausalMask, Softmax, Slice
from .flash import FlashAttention
from .dropout import Dropout, keep_mask
from .embedding import Embedding
from .gelu import GELU
from .layer_norm import LayerNorm
from .rms_norm import RMSNorm
from .rotary import Rotary, RotaryTables
from .silu import SiLU
from .kv_cache import CacheAllocate, CacheAppend

__all__ = ['unbroadcast', 'Transpose', 'Reshape', 'MatMul', 'BIAS_BUFFER_ELEMENTS', 'small_ufunc_buffer', 'Linear', 'Add', 'Sub', 'Mul', 'Scale', 'Neg', 'Exp', 'Log', 'Square', 'Pow', 'Sum', 'Mean', 'SumSquares', 'ReLU', 'Sigmoid', 'Tanh', 'SoftmaxCrossEntropy', 'MSE',
           'BatchedMatMul', 'CausalMask', 'Softmax', 'Slice', 'Dropout', 'keep_mask', 'Embedding', 'GELU',
           'LayerNorm']
__all__ += ['Flatten', 'CONV_ALGOS', 'CONV_SAVES', 'Conv2d', 'col2im', 'im2col', 'AvgPool2d', 'GlobalAvgPool2d', 'MaxPool2d',
            'BatchNorm2d', 'BatchNorm2dEval']
__all__ += ['RMSNorm', 'Rotary', 'RotaryTables', 'SiLU']
__all__ += ['Argmax', 'Concatenate', 'CacheAllocate', 'CacheAppend']
__all__ += ['FlashAttention']

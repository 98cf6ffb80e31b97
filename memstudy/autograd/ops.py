"""Primitive ops: forward and backward side by side, on raw ndarrays.

Each op saves through `ctx.save(...)` only what its backward reads, and only for the inputs whose
gradients are needed; backward reads them back through `ctx.saved_tensors` (which undoes a saved-tensor
policy's storage, e.g. float16 under `half`; ops know nothing of policies). Backward never writes into its incoming gradient (it may be shared or read-only).
Shapes, axes and scalars are plain attributes on ctx: metadata, counted as 0 bytes.

Hidden temporaries (arrays an op allocates and drops inside forward or backward) are invisible to the
ledger, which sees only op outputs, saved arrays and gradients; the ops below are written to keep
those hidden temporaries small (reductions over a batch of 10 classes, not batch×width buffers).
"""
from __future__ import annotations

import numpy as np

from .engine import STATE, Function, Node


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting (leading axes, then axes of size 1)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class MatMul(Function):
    name = "matmul"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul takes 2-d operands, got shapes {a.shape} and {b.shape}")
        need_a, need_b = ctx.needs_input_grad
        # grad of a needs b, grad of b needs a: save an operand only if the other one needs its gradient
        ctx.save(a=a if need_b else None, b=b if need_a else None)
        return a @ b

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (grad @ b.T if need_a else None, a.T @ grad if need_b else None)


BIAS_BUFFER_ELEMENTS = 1024


class small_ufunc_buffer:
    """Context manager: numpy's ufunc buffer is `BIAS_BUFFER_ELEMENTS` elements inside it.

    numpy broadcasts (the bias add) through a hidden buffer of `bufsize` elements (8192: 64 KiB in float64,
    invisible to the ledger); a small buffer keeps that scratch negligible at no measurable cost. Setting it
    costs ~0.8 µs each way, so a model enters this scope once per forward instead of once per layer;
    `Linear` outside it sets the buffer size around its own bias add.
    """

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        self._previous = None
        if not STATE.small_ufunc_buffer:
            self._previous = np.setbufsize(BIAS_BUFFER_ELEMENTS)
            STATE.small_ufunc_buffer = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            np.setbufsize(self._previous)
            STATE.small_ufunc_buffer = False


class Linear(Function):
    """Fused x @ Wᵀ + b (PyTorch's addmm): one output buffer instead of a matmul result plus a sum."""

    name = "linear"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save(x=x if need_w else None, weight=weight if need_x else None)
        out = x @ weight.T
        if bias is None:
            return out
        if out.size <= BIAS_BUFFER_ELEMENTS or STATE.small_ufunc_buffer:
            out += bias  # in place: `out` is fresh and nobody else holds it yet
            return out
        with small_ufunc_buffer():  # see there: numpy's hidden broadcast buffer stays small
            out += bias
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x = grad @ weight if needs[0] else None
        if grad.ndim != 2:  # one example (1-d x) or extra leading axes: fold them into one batch axis
            grad = grad.reshape(-1, grad.shape[-1])
            x = x.reshape(-1, x.shape[-1]) if x is not None else None
        grad_w = grad.T @ x if needs[1] else None
        if len(needs) == 2:
            return grad_x, grad_w
        # np.add.reduce: ndarray.sum's Python wrapper costs as much as the sum at small sizes
        return grad_x, grad_w, (np.add.reduce(grad, axis=0) if needs[2] else None)


class Add(Function):
    name = "add"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.a_shape, ctx.b_shape = np.shape(a), np.shape(b)
        return np.add(a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        need_a, need_b = ctx.needs_input_grad
        return (
            unbroadcast(grad, ctx.a_shape) if need_a else None,
            unbroadcast(grad, ctx.b_shape) if need_b else None,
        )


class Sub(Function):
    name = "sub"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.a_shape, ctx.b_shape = np.shape(a), np.shape(b)
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        need_a, need_b = ctx.needs_input_grad
        return (
            unbroadcast(grad, ctx.a_shape) if need_a else None,
            -unbroadcast(grad, ctx.b_shape) if need_b else None,
        )


class Mul(Function):
    name = "mul"

    @staticmethod
    def forward(ctx: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        need_a, need_b = ctx.needs_input_grad
        ctx.a_shape, ctx.b_shape = np.shape(a), np.shape(b)
        ctx.save(a=a if need_b else None, b=b if need_a else None)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (
            unbroadcast(grad * b, ctx.a_shape) if need_a else None,
            unbroadcast(grad * a, ctx.b_shape) if need_b else None,
        )


class Scale(Function):
    """x * c for a Python number c: the constant is an attribute, so nothing is saved."""

    name = "scale"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, factor: float) -> np.ndarray:
        ctx.factor = factor
        return x * factor

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (grad * ctx.factor,)


class Neg(Function):
    name = "neg"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        return np.negative(x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (np.negative(grad),)


class Sum(Function):
    name = "sum"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axis=None, keepdims: bool = False) -> np.ndarray:
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return np.asarray(np.sum(x, axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (_expand(grad, ctx.shape, ctx.axis, ctx.keepdims),)


class Mean(Function):
    name = "mean"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axis=None, keepdims: bool = False) -> np.ndarray:
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        out = np.asarray(np.mean(x, axis=axis, keepdims=keepdims))
        ctx.count = x.size // max(out.size, 1)  # elements averaged into each output element
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (_expand(grad / ctx.count, ctx.shape, ctx.axis, ctx.keepdims),)


def _expand(grad: np.ndarray, shape: tuple[int, ...], axis, keepdims: bool) -> np.ndarray:
    """Broadcast a reduction's gradient back to the input's shape (a read-only view, no copy)."""
    if axis is not None and not keepdims:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        axes = tuple(a % len(shape) for a in axes)
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)


class Transpose(Function):
    name = "transpose"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, axes=None) -> np.ndarray:
        # non-negative axes: argsort of e.g. (-1, 0, 1) would not invert the permutation
        ctx.axes = None if axes is None else tuple(a % x.ndim for a in axes)
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        if ctx.axes is None:
            return (np.transpose(grad),)
        return (np.transpose(grad, np.argsort(ctx.axes)),)


class Reshape(Function):
    name = "reshape"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, shape) -> np.ndarray:
        ctx.shape = x.shape
        return np.reshape(x, shape)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        return (np.reshape(grad, ctx.shape),)


class Exp(Function):
    name = "exp"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        out = np.exp(x)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        return (grad * out,)


class Log(Function):
    name = "log"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        return np.log(x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        return (grad / x,)


class Square(Function):
    name = "square"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        return np.square(x)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        out = x * 2
        out *= grad
        return (out,)


class Pow(Function):
    name = "pow"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray, *, exponent: float) -> np.ndarray:
        ctx.exponent = exponent
        ctx.save(x=x)
        return np.power(x, exponent)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        out = np.power(x, ctx.exponent - 1)
        out *= ctx.exponent
        out *= grad
        return (out,)


class ReLU(Function):
    """Saves its output (not its input): out > 0 exactly where x > 0, and the next Linear saves it anyway."""

    name = "relu"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        out = np.maximum(x, 0)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        # the mask out > 0 is written straight into the result buffer (as 0.0/1.0): no hidden boolean
        # mask the ledger could not see
        result = np.empty_like(grad)
        np.greater(out, 0, out=result)
        result *= grad
        return (result,)


class Sigmoid(Function):
    name = "sigmoid"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        out = np.negative(x)
        np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        result = np.subtract(1, out)  # σ' = σ(1-σ), built in one buffer
        result *= out
        result *= grad
        return (result,)


class Tanh(Function):
    name = "tanh"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        out = np.tanh(x)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (out,) = ctx.saved_tensors
        result = np.square(out)  # tanh' = 1 - tanh², built in one buffer
        np.subtract(1, result, out=result)
        result *= grad
        return (result,)


class SumSquares(Function):
    """Σ x² (the squared Frobenius norm); np.vdot reads x once without an x² temporary."""

    name = "sum_squares"

    @staticmethod
    def forward(ctx: Node, x: np.ndarray) -> np.ndarray:
        ctx.save(x=x)
        flat = x.reshape(-1)
        return np.asarray(np.vdot(flat, flat), dtype=x.dtype)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved_tensors
        return (x * (2 * grad),)


class SoftmaxCrossEntropy(Function):
    """Mean over the batch of -log softmax(logits)[label], fused and stable (max subtracted first).

    Saves the softmax probabilities (batch × classes) and the labels: backward is (p - onehot) / batch.
    """

    name = "softmax_cross_entropy"

    @staticmethod
    def forward(ctx: Node, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if logits.ndim != 2:
            raise ValueError(f"cross_entropy takes (batch, classes) logits, got shape {logits.shape}")
        labels = np.asarray(labels)
        if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be {logits.shape[0]} integers, got {labels.dtype} {labels.shape}")
        batch = logits.shape[0]
        probs = np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True))  # shifted: row maxima 0
        picked = probs[np.arange(batch), labels]  # shifted logit of each example's label
        np.exp(probs, out=probs)
        total = np.add.reduce(probs, axis=1, keepdims=True)
        probs /= total
        # mean of log Σexp − picked, as two sums (np.mean's Python wrapper costs more than the arithmetic here)
        loss = (np.add.reduce(np.log(total), axis=None) - np.add.reduce(picked)) / batch
        ctx.save(probs=probs, labels=labels)
        return np.asarray(loss, dtype=logits.dtype)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        probs, labels = ctx.saved_tensors
        result = probs.copy()
        result[np.arange(probs.shape[0]), labels] -= 1
        result *= float(grad) / probs.shape[0]
        return (result, None)


class MSE(Function):
    """Mean over all elements of (pred - target)²; saves the difference only."""

    name = "mse"

    @staticmethod
    def forward(ctx: Node, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        diff = np.subtract(pred, target)
        ctx.pred_shape, ctx.target_shape = pred.shape, np.shape(target)
        ctx.count = diff.size
        ctx.save(diff=diff)
        flat = diff.reshape(-1)
        return np.asarray(np.vdot(flat, flat) / diff.size, dtype=diff.dtype)

    @staticmethod
    def backward(ctx: Node, grad: np.ndarray) -> tuple:
        (diff,) = ctx.saved_tensors
        need_pred, need_target = ctx.needs_input_grad
        scaled = diff * (2 * grad / ctx.count)
        return (
            unbroadcast(scaled, ctx.pred_shape) if need_pred else None,
            -unbroadcast(scaled, ctx.target_shape) if need_target else None,
        )

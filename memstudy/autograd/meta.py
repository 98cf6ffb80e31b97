"""Shape-only arrays (PyTorch's meta device): shape, dtype, strides and view relations, no data.

A `MetaArray` is what an ndarray would be without its numbers: shape, dtype, strides, a `.base` chain like
numpy's (a view's base is the array that owns the memory, and the view keeps it alive), a fake data address,
`nbytes`, `flags`. It takes part in numpy's dispatch (`__array_ufunc__`, `__array_function__`, the Python
operators, indexing), so the engine, the ops and the optimisers run on it unchanged, and the memory ledger
counts its buffers exactly as it counts real ones: the prediction is the engine itself, run on shape-only
arrays (DESIGN.md principle 13).

Rules:
- result shapes follow numpy's broadcasting and indexing rules, result dtypes come from `ufunc.resolve_dtypes`
  / `np.result_type` (numpy 2's NEP 50: a Python float joins a float32 array as float32); no arithmetic ever
  runs on stand-in data, so a MetaArray op costs the same whatever the array's size;
- a new buffer gets numpy's memory layout (the ufunc iterator's 'K' order, `empty_like`'s sorted strides,
  C order for matmul and copies), and a reshape is a view exactly when numpy's would be: the strides decide
  (a port of numpy's `_attempt_nocopy_reshape`), so later views and copies match numpy's too;
- where numpy returns a scalar (a full reduction, an integer index) a fresh 0-d MetaArray is returned;
- anything unsupported raises TypeError (`np.asarray(m)` reaches `__array__`, which raises): nothing is ever
  computed on a converted array.

`meta_mode()` is the context in which `nn.init` draws parameters and batches as MetaArrays; `is_active()`
says whether it is on; `empty(shape, dtype)` makes one.
"""
from __future__ import annotations

import contextlib
import math
import operator
from typing import Any, Callable, Iterator

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin


class _Mode:
    active = False


_MODE = _Mode()


@contextlib.contextmanager
def meta_mode() -> Iterator[None]:
    """Inside it, `nn.init` creates shape-only arrays instead of drawing numbers."""
    previous = _MODE.active
    _MODE.active = True
    try:
        yield
    finally:
        _MODE.active = previous


def is_active() -> bool:
    return _MODE.active


# --- fake data addresses ---------------------------------------------------------------------------------
# Each new buffer gets its own address range (64-byte aligned, never reused), so a view's address is its
# base's plus its offset and caches keyed by (buffer, address) behave as with real arrays.
_ALIGNMENT = 64
_next_address = 1 << 20


def _allocate(nbytes: int) -> int:
    global _next_address
    address = _next_address
    _next_address += (max(nbytes, 1) + 2 * _ALIGNMENT - 1) // _ALIGNMENT * _ALIGNMENT
    return address


# --- layout rules (numpy's) ------------------------------------------------------------------------------
def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """numpy's `_array_fill_strides` for C order (a zero-length axis multiplies by 1)."""
    strides = [0] * len(shape)
    stride = itemsize
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = stride
        if shape[i]:
            stride *= shape[i]
    return tuple(strides)


def _f_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = [0] * len(shape)
    stride = itemsize
    for i, n in enumerate(shape):
        strides[i] = stride
        if n:
            stride *= n
    return tuple(strides)


def _strides_in_order(shape: tuple[int, ...], itemsize: int, inner_first: list[int]) -> tuple[int, ...]:
    """Contiguous strides laying the axes out innermost first in the order given."""
    strides = [0] * len(shape)
    stride = itemsize
    for axis in inner_first:
        strides[axis] = stride
        stride *= shape[axis]
    return tuple(strides)


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    """numpy's relaxed rule: axes of length 1 do not matter, an empty array is contiguous."""
    if 0 in shape:
        return True
    expected = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1:
            if s != expected:
                return False
            expected *= n
    return True


def _is_f_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    if 0 in shape:
        return True
    expected = itemsize
    for n, s in zip(shape, strides):
        if n != 1:
            if s != expected:
                return False
            expected *= n
    return True


def _like_strides(proto: "MetaArray | np.ndarray", shape: tuple[int, ...], itemsize: int,
                  order: str = "K") -> tuple[int, ...]:
    """The strides of numpy's `PyArray_NewLikeArray` (empty_like, astype, copy with `order`)."""
    if order == "C" or shape != proto.shape:
        return _c_strides(shape, itemsize)
    if order == "F":
        return _f_strides(shape, itemsize)
    c, f = _is_c_contiguous(shape, proto.strides, proto.itemsize), _is_f_contiguous(shape, proto.strides,
                                                                                   proto.itemsize)
    if order == "A":
        return _f_strides(shape, itemsize) if f and not c else _c_strides(shape, itemsize)
    if order != "K":
        raise ValueError(f"order must be one of 'C', 'F', 'A', 'K', got {order!r}")
    if c or len(shape) <= 1:
        return _c_strides(shape, itemsize)
    if f:
        return _f_strides(shape, itemsize)
    # sorted by |stride|, largest first, ties in axis order (numpy's PyArray_CreateSortedStridePerm)
    outer_first = sorted(range(len(shape)), key=lambda i: (-abs(proto.strides[i]), i))
    return _strides_in_order(shape, itemsize, outer_first[::-1])


def _iterator_order(shape: tuple[int, ...], operands: list) -> list[int]:
    """The axes innermost first as numpy's iterator orders them for 'K' allocation (ufunc outputs, reductions).

    A port of `npyiter_find_best_axis_ordering`: a stable insertion sort by |stride|, operand by operand,
    where an operand's stride is 0 on an axis it is broadcast along (or of length 1) and gives no opinion;
    when operands disagree, the one preferring C order wins.
    """
    ndim = len(shape)
    strides = []
    for x in operands:
        s = x.strides
        lead = ndim - len(s)
        xs = x.shape
        strides.append([0 if i < lead or xs[i - lead] == 1 else s[i - lead] for i in range(ndim)])
    perm = list(range(ndim - 1, -1, -1))  # the iterator's axis data run from the last axis to the first
    for i0 in range(1, ndim):
        ipos = i0
        a0 = perm[i0]
        for i1 in range(i0 - 1, -1, -1):
            a1 = perm[i1]
            ambiguous, swap = True, False
            for s in strides:
                s0, s1 = s[a0], s[a1]
                if s0 != 0 and s1 != 0:
                    if abs(s1) <= abs(s0):
                        swap = False
                    elif ambiguous:
                        swap = True
                    ambiguous = False
            if not ambiguous:
                if swap:
                    ipos = i1
                else:
                    break
        if ipos != i0:
            perm[ipos + 1:i0 + 1] = perm[ipos:i0]
            perm[ipos] = a0
    return perm


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """numpy's broadcasting of several shapes (ValueError as numpy words it)."""
    if not shapes:
        return ()
    first = shapes[0]
    for shape in shapes:
        if shape != first:
            break
    else:
        return first
    ndim = max(map(len, shapes), default=0)
    out = [1] * ndim
    for shape in shapes:
        lead = ndim - len(shape)
        for i, n in enumerate(shape):
            m = out[lead + i]
            if n != m:
                if m == 1:
                    out[lead + i] = n
                elif n != 1:
                    raise ValueError("operands could not be broadcast together with shapes "
                                     + " ".join(str(s).replace(" ", "") for s in shapes))
    return tuple(out)


def _normalize_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (tuple, list)):
        return tuple(operator.index(n) for n in shape)
    return (operator.index(shape),)


def _normalize_axes(axis: Any, ndim: int, allow_none: bool = True) -> tuple[int, ...]:
    """Axes as non-negative ints (None: all of them), numpy's AxisError when out of range."""
    if axis is None:
        if not allow_none:
            raise TypeError("an axis is required")
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        a %= ndim
        if a in out:
            raise ValueError("duplicate value in 'axis'")
        out.append(a)
    return tuple(out)


# --- the array ---------------------------------------------------------------------------------------------
class _Flags:
    """`MetaArray.flags`: contiguity (computed from the strides as numpy does), writeable, owndata."""

    __slots__ = ("_array",)

    def __init__(self, array: "MetaArray"):
        self._array = array

    @property
    def c_contiguous(self) -> bool:
        a = self._array
        return _is_c_contiguous(a.shape, a.strides, a.dtype.itemsize)

    @property
    def f_contiguous(self) -> bool:
        a = self._array
        return _is_f_contiguous(a.shape, a.strides, a.dtype.itemsize)

    contiguous = c_contiguous

    @property
    def writeable(self) -> bool:
        return self._array._writeable

    @writeable.setter
    def writeable(self, value: bool) -> None:
        if value and not self._array._writeable and self._array.base is not None \
                and not self._array.base._writeable:
            raise ValueError("cannot set WRITEABLE flag to True of this array")
        self._array._writeable = bool(value)

    @property
    def owndata(self) -> bool:
        return self._array.base is None

    aligned = True
    writebackifcopy = False

    _KEYS = {"C_CONTIGUOUS": "c_contiguous", "C": "c_contiguous", "CONTIGUOUS": "c_contiguous",
             "F_CONTIGUOUS": "f_contiguous", "F": "f_contiguous", "FORTRAN": "f_contiguous",
             "WRITEABLE": "writeable", "W": "writeable", "OWNDATA": "owndata", "O": "owndata",
             "ALIGNED": "aligned", "A": "aligned", "WRITEBACKIFCOPY": "writebackifcopy", "X": "writebackifcopy"}

    def __getitem__(self, key: str) -> bool:
        return getattr(self, self._KEYS[key.upper()])

    def __repr__(self) -> str:
        return "\n".join(f"  {k} : {self[k]}" for k in ("C_CONTIGUOUS", "F_CONTIGUOUS", "OWNDATA", "WRITEABLE"))


class MetaArray(NDArrayOperatorsMixin):
    """An array without data: shape, dtype, strides, `.base` and a fake address (see the module docstring).

    `MetaArray(shape, dtype)` is a new C-contiguous buffer. The operators come from numpy's
    `NDArrayOperatorsMixin`, which routes each one (in place ones with `out=`, and `@`) through
    `__array_ufunc__`.
    """

    __slots__ = ("shape", "dtype", "strides", "base", "address", "_writeable", "__weakref__")
    __hash__ = None  # type: ignore[assignment]  # like ndarray: unhashable (== is element-wise)

    def __init__(self, shape: Any, dtype: Any = float, strides: tuple[int, ...] | None = None):
        shape = _normalize_shape(shape)
        if any(n < 0 for n in shape):
            raise ValueError("negative dimensions are not allowed")
        dtype = np.dtype(dtype)
        self.shape = shape
        self.dtype = dtype
        self.strides = _c_strides(shape, dtype.itemsize) if strides is None else tuple(strides)
        self.base = None
        self.address = _allocate(math.prod(shape) * dtype.itemsize)
        self._writeable = True

    # --- facts ----------------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def flags(self) -> _Flags:
        return _Flags(self)

    @property
    def T(self) -> "MetaArray":
        return self.transpose()

    def __repr__(self) -> str:
        kind = "view" if self.base is not None else "buffer"
        return f"MetaArray(shape={self.shape}, dtype={self.dtype}, {kind})"

    __str__ = __repr__

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    # --- what a shape-only array cannot do --------------------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("a MetaArray has no data: it cannot become an ndarray (np.asarray, np.array without "
                        "like=, or an unsupported numpy function tried to convert it)")

    def __iter__(self) -> Iterator:
        raise TypeError("iterating over a MetaArray would loop over values; use array operations")

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a MetaArray is unknown (it has no data)")

    def __index__(self) -> int:
        raise TypeError("a MetaArray has no value to use as an index or a size")

    def __float__(self) -> float:
        # a neutral value: the engine reads a scalar only to scale an array (e.g. the loss's incoming gradient
        # in SoftmaxCrossEntropy.backward), and a value never changes a size; bytes are unaffected
        self._require_one_element("float")
        return 1.0

    def __int__(self) -> int:
        self._require_one_element("int")  # neutral, as __float__
        return 1

    def _require_one_element(self, what: str) -> None:
        if self.size != 1:
            raise TypeError(f"only 1-element arrays can be converted to {what}, got shape {self.shape}")

    def item(self, *args: Any) -> Any:
        raise TypeError("MetaArray.item(): a shape-only array has no values")

    def tolist(self) -> Any:
        raise TypeError("MetaArray.tolist(): a shape-only array has no values")

    # --- numpy's protocols ----------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        for x in inputs + (out if isinstance(out, tuple) else (out,)):
            if x is not None and not isinstance(x, _OPERAND_TYPES):
                return NotImplemented  # numpy then raises TypeError (or Python tries the other operand)
        if method == "__call__":
            return _ufunc_call(ufunc, inputs, kwargs)
        if method == "reduce":
            return _ufunc_reduce(ufunc, inputs, kwargs)
        if method == "at":  # in place, through indices: no new buffer
            target = inputs[0]
            if not isinstance(target, MetaArray):
                raise TypeError(f"{ufunc.__name__}.at on a real array with shape-only operands")
            _check_writeable(target)
            return None
        raise TypeError(f"MetaArray does not support {ufunc.__name__}.{method}")

    def __array_function__(self, func: Callable, types: tuple, args: tuple, kwargs: dict) -> Any:
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise TypeError(f"MetaArray does not support numpy.{getattr(func, '__name__', func)} "
                            "(add a shape rule in memstudy/autograd/meta.py)")
        for t in types:
            if not issubclass(t, (MetaArray, np.ndarray)):
                return NotImplemented
        return handler(*args, **kwargs)

    # --- indexing -------------------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> "MetaArray":
        entries = index if type(index) is tuple else (index,)
        for entry in entries:
            if isinstance(entry, (MetaArray, np.ndarray, list)) or entry is True or entry is False:
                return _advanced_index(self, entries)
        return _basic_index(self, entries)

    def __setitem__(self, index: Any, value: Any) -> None:
        """No values to write: checks the destination is writeable and that `value` broadcasts to it."""
        _check_writeable(self)
        target = self[index]
        shape = np.shape(value) if not isinstance(value, MetaArray) else value.shape
        if _broadcast([target.shape, shape]) != target.shape:
            raise ValueError(f"could not broadcast input array from shape {shape} into shape {target.shape}")

    # --- methods --------------------------------------------------------------------------------------
    def astype(self, dtype: Any, order: str = "K", casting: str = "unsafe", subok: bool = True,
               copy: bool = True) -> "MetaArray":
        dtype = np.dtype(dtype)
        if not np.can_cast(self.dtype, dtype, casting):
            raise TypeError(f"Cannot cast array data from {self.dtype!r} to {dtype!r} according to the rule "
                            f"{casting!r}")
        if not copy and dtype == self.dtype and (order in ("K", "A") or (order == "C" and self.flags.c_contiguous)
                                                 or (order == "F" and self.flags.f_contiguous)):
            return self
        return _fresh(self.shape, dtype, _like_strides(self, self.shape, dtype.itemsize, order))

    def copy(self, order: str = "C") -> "MetaArray":
        return _fresh(self.shape, self.dtype, _like_strides(self, self.shape, self.dtype.itemsize, order))

    def reshape(self, *shape: Any, order: str = "C", copy: bool | None = None) -> "MetaArray":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _reshape(self, shape, order, copy)

    def transpose(self, *axes: Any) -> "MetaArray":
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list, np.ndarray))):
            axes = axes[0]
        return _transpose(self, axes if axes != () else None)

    def swapaxes(self, axis1: int, axis2: int) -> "MetaArray":
        return _swapaxes(self, axis1, axis2)

    def ravel(self, order: str = "C") -> "MetaArray":
        return _ravel(self, order)

    def flatten(self, order: str = "C") -> "MetaArray":
        return _fresh((self.size,), self.dtype, None)

    def squeeze(self, axis: Any = None) -> "MetaArray":
        return _squeeze(self, axis)

    def view(self, dtype: Any = None) -> "MetaArray":
        if dtype is not None and np.dtype(dtype) != self.dtype:
            raise TypeError("MetaArray.view with another dtype is not supported")
        return _view(self, self.shape, self.strides, 0)

    def fill(self, value: Any) -> None:
        _check_writeable(self)

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            **kwargs: Any) -> "MetaArray":
        return _reduce(np.add, self, axis, dtype, out, keepdims, kwargs)

    def prod(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kwargs: Any) -> "MetaArray":
        return _reduce(np.multiply, self, axis, dtype, out, keepdims, kwargs)

    def max(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return _reduce(np.maximum, self, axis, None, out, keepdims, kwargs)

    def min(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return _reduce(np.minimum, self, axis, None, out, keepdims, kwargs)

    def any(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return _reduce(np.logical_or, self, axis, np.dtype(bool), out, keepdims, kwargs)

    def all(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return _reduce(np.logical_and, self, axis, np.dtype(bool), out, keepdims, kwargs)

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kwargs: Any) -> "MetaArray":
        return _mean(self, axis, dtype, out, keepdims, **kwargs)

    def argmax(self, axis: Any = None, out: Any = None, *, keepdims: bool = False) -> "MetaArray":
        return _argreduce(self, axis, out, keepdims)

    def argmin(self, axis: Any = None, out: Any = None, *, keepdims: bool = False) -> "MetaArray":
        return _argreduce(self, axis, out, keepdims)


_OPERAND_TYPES = (MetaArray, np.ndarray, np.generic, bool, int, float, complex)


def _fresh(shape: tuple[int, ...], dtype: np.dtype, strides: tuple[int, ...] | None) -> MetaArray:
    """A new buffer (owns its memory); C-contiguous unless `strides` say otherwise."""
    m = object.__new__(MetaArray)
    m.shape = shape
    m.dtype = dtype
    m.strides = _c_strides(shape, dtype.itemsize) if strides is None else strides
    m.base = None
    m.address = _allocate(math.prod(shape) * dtype.itemsize)
    m._writeable = True
    return m


def _view(source: MetaArray, shape: tuple[int, ...], strides: tuple[int, ...], offset_bytes: int,
          writeable: bool | None = None) -> MetaArray:
    """A view of `source`'s memory; its base is the buffer's owner (numpy collapses chains of views)."""
    m = object.__new__(MetaArray)
    m.shape = shape
    m.dtype = source.dtype
    m.strides = strides
    m.base = source if source.base is None else source.base
    m.address = source.address + offset_bytes
    m._writeable = source._writeable if writeable is None else writeable
    return m


def empty(shape: tuple[int, ...], dtype: Any) -> MetaArray:
    """A new shape-only C-contiguous buffer."""
    return MetaArray(shape, dtype)


def _check_writeable(array: MetaArray) -> None:
    if not array._writeable:
        raise ValueError("assignment destination is read-only")


# --- ufuncs -------------------------------------------------------------------------------------------------
_RESOLVED: dict[tuple, tuple] = {}  # resolve_dtypes answers, by ufunc and operand dtypes (the same few repeat)


def _dtype_key(x: Any) -> Any:
    """What `ufunc.resolve_dtypes` takes for an operand: a dtype, or the Python type of a weak scalar."""
    if isinstance(x, (MetaArray, np.ndarray, np.generic)):
        return x.dtype
    if isinstance(x, bool):
        return np.dtype(bool)
    if isinstance(x, (int, float, complex)):
        return type(x)  # NEP 50: a Python scalar is weak, it takes the array's dtype of its kind
    raise TypeError(f"MetaArray: unsupported operand {type(x).__name__}")


def _resolve(ufunc: np.ufunc, keys: tuple, signature: Any, casting: str, reduction: bool = False) -> tuple:
    key = (ufunc, keys, signature, casting, reduction)
    hit = _RESOLVED.get(key)
    if hit is None:
        options = {} if signature is None else {"signature": signature}
        hit = _RESOLVED[key] = ufunc.resolve_dtypes(keys, casting=casting, reduction=reduction, **options)
    return hit


def _outputs(out: Any, nout: int) -> tuple:
    if out is None:
        return (None,) * nout
    outs = out if isinstance(out, tuple) else (out,)
    if len(outs) != nout:
        raise ValueError(f"The 'out' tuple must have exactly {nout} entries: one per ufunc output")
    for o in outs:
        if o is not None and not isinstance(o, MetaArray):
            raise TypeError("a shape-only result cannot be written into a real array (out= must be a MetaArray)")
    return outs


def _check_out(ufunc_name: str, out: MetaArray, shape: tuple[int, ...], dtype: np.dtype, casting: str) -> None:
    _check_writeable(out)
    if out.shape != shape:
        raise ValueError(f"non-broadcastable output operand with shape {out.shape} doesn't match the broadcast "
                         f"shape {shape}")
    if not np.can_cast(dtype, out.dtype, casting):
        raise TypeError(f"Cannot cast ufunc '{ufunc_name}' output from {dtype!r} to {out.dtype!r} with casting "
                        f"rule {casting!r}")


def _matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """matmul's gufunc signature (n?,k),(k,m?)->(n?,m?) with broadcast batch axes."""
    if not a or not b:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc signature "
                         f"(n?,k),(k,m?)->(n?,m?) (size {b2[-2]} is different from {a2[-1]})")
    out = _broadcast([a2[:-2], b2[:-2]]) + (a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) != 1 else out[:-1]
    return out


def _ufunc_call(ufunc: np.ufunc, inputs: tuple, kwargs: dict) -> Any:
    out = dtype = signature = None
    casting, order = "same_kind", "K"
    if kwargs:
        out = kwargs.pop("out", None)
        dtype = kwargs.pop("dtype", None)
        signature = kwargs.pop("signature", None)
        casting = kwargs.pop("casting", "same_kind")
        order = kwargs.pop("order", "K")
        kwargs.pop("subok", None)
        if kwargs.pop("where", True) is not True:
            raise TypeError("MetaArray: ufunc where= is not supported")
        if kwargs:
            raise TypeError(f"MetaArray: {ufunc.__name__} got unsupported arguments {sorted(kwargs)}")
    nin, nout = ufunc.nin, ufunc.nout
    if len(inputs) != nin:
        raise TypeError(f"{ufunc.__name__}() takes {nin} positional arguments, got {len(inputs)}")
    outs = _outputs(out, nout)
    if dtype is not None:
        signature = (None,) * nin + (np.dtype(dtype),) * nout
    dtypes = _resolve(ufunc, tuple(map(_dtype_key, inputs)) + (None,) * nout, signature, casting)
    arrays = [x for x in inputs if isinstance(x, (MetaArray, np.ndarray))]
    shapes = [x.shape for x in arrays]
    if ufunc is np.matmul:
        shape = _matmul_shape(*(x.shape if isinstance(x, (MetaArray, np.ndarray)) else () for x in inputs))
        order = "C"  # matmul writes a C-contiguous result
    elif ufunc.signature is not None:
        raise TypeError(f"MetaArray does not support the generalized ufunc {ufunc.__name__}")
    else:
        if out is not None:
            shapes += [o.shape for o in outs if o is not None]
        shape = _broadcast(shapes)
    results = []
    inner_first = None
    for i, o in enumerate(outs):
        result_dtype = dtypes[nin + i]
        if o is not None:
            _check_out(ufunc.__name__, o, shape, result_dtype, casting)
            results.append(o)
            continue
        if len(shape) <= 1 or order == "C":
            strides = None
        elif order == "F":
            strides = _f_strides(shape, result_dtype.itemsize)
        elif order in ("K", "A", None):
            if inner_first is None:
                inner_first = _iterator_order(shape, arrays)
            strides = _strides_in_order(shape, result_dtype.itemsize, inner_first)
        else:
            raise ValueError(f"order must be one of 'C', 'F', 'A', 'K', got {order!r}")
        results.append(_fresh(shape, result_dtype, strides))
    return results[0] if nout == 1 else tuple(results)


class _NoValue:
    """numpy's "argument not given" marker for `initial`."""


def _ufunc_reduce(ufunc: np.ufunc, inputs: tuple, kwargs: dict) -> MetaArray:
    if len(inputs) != 1:
        raise TypeError(f"{ufunc.__name__}.reduce takes one array")
    array = inputs[0]
    if not isinstance(array, MetaArray):
        raise TypeError(f"{ufunc.__name__}.reduce of a real array into a shape-only output")
    axis = kwargs.pop("axis", 0)
    dtype = kwargs.pop("dtype", None)
    out = kwargs.pop("out", None)
    keepdims = kwargs.pop("keepdims", False)
    return _reduce(ufunc, array, axis, dtype, out, keepdims, kwargs)


def _reduce(ufunc: np.ufunc, array: MetaArray, axis: Any, dtype: Any, out: Any, keepdims: bool,
            kwargs: dict) -> MetaArray:
    """`ufunc.reduce`'s result: its shape, dtype (numpy's reduction dtype rules) and numpy's layout."""
    initial = kwargs.pop("initial", _NoValue)
    if kwargs.pop("where", True) is not True:
        raise TypeError("MetaArray: reductions with where= are not supported")
    if kwargs:
        raise TypeError(f"MetaArray: {ufunc.__name__}.reduce got unsupported arguments {sorted(kwargs)}")
    if ufunc.nin != 2 or ufunc.nout != 1:
        raise ValueError("reduce only supported for binary functions")
    shape = array.shape
    axes = _normalize_axes(axis, len(shape))
    if initial is _NoValue and ufunc.identity is None and any(shape[a] == 0 for a in axes):
        raise ValueError(f"zero-size array to reduction operation {ufunc.__name__} which has no identity")
    signature = None if dtype is None else (np.dtype(dtype), None, None)
    result_dtype = _resolve(ufunc, (None, array.dtype, None), signature, "unsafe", reduction=True)[2]
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    result_shape = kept if keepdims else tuple(n for i, n in enumerate(shape) if i not in axes)
    if out is not None:
        (out,) = _outputs(out, 1)
        _check_out(ufunc.__name__, out, result_shape, result_dtype, "same_kind")
        return out
    if len(result_shape) <= 1:
        return _fresh(result_shape, result_dtype, None)
    # numpy's iterator orders all axes by the input's strides and lays the result out in that order
    inner_first = _iterator_order(shape, [array])
    strides = _strides_in_order(kept, result_dtype.itemsize, inner_first)
    if not keepdims:
        strides = tuple(s for i, s in enumerate(strides) if i not in axes)
    return _fresh(result_shape, result_dtype, strides)


def _mean(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
          **kwargs: Any) -> MetaArray:
    """np.mean: integers and booleans average in float64; float16 sums in float32 and returns float16."""
    if dtype is None:
        result_dtype = np.dtype(np.float64) if a.dtype.kind in "biu" else a.dtype
    else:
        result_dtype = np.dtype(dtype)
    summed = _reduce(np.add, a, axis, result_dtype, out, keepdims, kwargs)
    return summed


def _argreduce(a: MetaArray, axis: Any, out: Any, keepdims: bool) -> MetaArray:
    if a.size == 0:
        raise ValueError("attempt to get argmax of an empty sequence")
    axes = _normalize_axes(axis, a.ndim)
    if axis is None:
        shape = (1,) * a.ndim if keepdims else ()
    else:
        shape = tuple(1 if i in axes else n for i, n in enumerate(a.shape) if keepdims or i not in axes)
    if out is not None:
        (out,) = _outputs(out, 1)
        _check_out("argmax", out, shape, np.dtype(np.intp), "same_kind")
        return out
    return _fresh(shape, np.dtype(np.intp), None)


# --- views: reshape, transpose, indexing -----------------------------------------------------------------------
def _fix_unknown(shape: tuple, size: int) -> tuple[int, ...]:
    shape = tuple(operator.index(n) for n in shape)
    unknown = [i for i, n in enumerate(shape) if n < 0]
    if len(unknown) > 1:
        raise ValueError("can only specify one unknown dimension")
    if unknown:
        known = math.prod(n for n in shape if n >= 0)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape array of size {size} into shape {shape}")
        shape = shape[:unknown[0]] + (size // known,) + shape[unknown[0] + 1:]
    elif math.prod(shape) != size:
        raise ValueError(f"cannot reshape array of size {size} into shape {shape}")
    return shape


def _nocopy_strides(array: MetaArray, new: tuple[int, ...]) -> tuple[int, ...] | None:
    """The strides of a C-order reshape as a view, or None when numpy must copy (`_attempt_nocopy_reshape`)."""
    olddims = [n for n in array.shape if n != 1]
    oldstrides = [s for n, s in zip(array.shape, array.strides) if n != 1]
    oldnd, newnd = len(olddims), len(new)
    newstrides = [0] * newnd
    oi, oj, ni, nj = 0, 1, 0, 1
    while ni < newnd and oi < oldnd:
        np_, op = new[ni], olddims[oi]
        while np_ != op:
            if np_ < op:
                np_ *= new[nj]
                nj += 1
            else:
                op *= olddims[oj]
                oj += 1
        for ok in range(oi, oj - 1):
            if oldstrides[ok] != olddims[ok + 1] * oldstrides[ok + 1]:
                return None
        newstrides[nj - 1] = oldstrides[oj - 1]
        for nk in range(nj - 1, ni, -1):
            newstrides[nk - 1] = newstrides[nk] * new[nk]
        ni, nj = nj, nj + 1
        oi, oj = oj, oj + 1
    last = newstrides[ni - 1] if ni >= 1 else array.dtype.itemsize
    for nk in range(ni, newnd):
        newstrides[nk] = last
    return tuple(newstrides)


def _reshape(array: MetaArray, shape: Any, order: str = "C", copy: bool | None = None) -> MetaArray:
    """numpy's `PyArray_Newshape` (C order): a view when the strides allow, else a view of a C copy."""
    if order != "C":
        raise TypeError(f"MetaArray.reshape supports order='C' only, got {order!r}")
    if isinstance(shape, (tuple, list)):
        shape = tuple(shape)
    else:
        shape = (shape,)
    if copy is not True and len(shape) == array.ndim and all(
            operator.index(n) == m for n, m in zip(shape, array.shape)):
        return _view(array, array.shape, array.strides, 0)
    new = _fix_unknown(shape, array.size)
    source = array
    if copy is True:
        source = _fresh(array.shape, array.dtype, None)
        strides = None
    elif _is_c_contiguous(array.shape, array.strides, array.dtype.itemsize):
        strides = None
    else:
        strides = _nocopy_strides(array, new)
        if strides is None:
            if copy is False:
                raise ValueError("Unable to avoid creating a copy while reshaping.")
            source = _fresh(array.shape, array.dtype, None)
    if strides is None:
        strides = _c_strides(new, array.dtype.itemsize)
    return _view(source, new, strides, 0)


def _transpose(array: MetaArray, axes: Any = None) -> MetaArray:
    n = array.ndim
    if axes is None:
        perm = tuple(range(n - 1, -1, -1))
    else:
        perm = tuple(operator.index(a) for a in axes)
        if len(perm) != n:
            raise ValueError("axes don't match array")
        perm = _normalize_axes(perm, n)
    return _view(array, tuple(array.shape[a] for a in perm), tuple(array.strides[a] for a in perm), 0)


def _swapaxes(array: MetaArray, axis1: int, axis2: int) -> MetaArray:
    a1, a2 = _normalize_axes(axis1, array.ndim)[0], _normalize_axes(axis2, array.ndim)[0]
    perm = list(range(array.ndim))
    perm[a1], perm[a2] = perm[a2], perm[a1]
    return _transpose(array, perm)


def _ravel(array: MetaArray, order: str = "C") -> MetaArray:
    if order not in ("C", "K", "A") and not (order == "F" and array.ndim <= 1):
        raise TypeError(f"MetaArray.ravel supports order='C' only, got {order!r}")
    if _is_c_contiguous(array.shape, array.strides, array.dtype.itemsize):
        return _reshape(array, (array.size,))
    return _fresh((array.size,), array.dtype, None)  # numpy's PyArray_Flatten: a new buffer


def _squeeze(array: MetaArray, axis: Any = None) -> MetaArray:
    if axis is None:
        keep = [i for i, n in enumerate(array.shape) if n != 1]
    else:
        axes = _normalize_axes(axis, array.ndim)
        for a in axes:
            if array.shape[a] != 1:
                raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
        keep = [i for i in range(array.ndim) if i not in axes]
    return _view(array, tuple(array.shape[i] for i in keep), tuple(array.strides[i] for i in keep), 0)


def _expand_ellipsis(array: MetaArray, entries: tuple) -> list:
    consumed = 0
    ellipses = 0
    for e in entries:
        if e is Ellipsis:
            ellipses += 1
        elif e is not None:
            if isinstance(e, (MetaArray, np.ndarray)) and e.dtype == bool:
                consumed += e.ndim
            else:
                consumed += 1
    if ellipses > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if consumed > array.ndim:
        raise IndexError(f"too many indices for array: array is {array.ndim}-dimensional, but {consumed} were "
                         "indexed")
    fill = [slice(None)] * (array.ndim - consumed)
    if ellipses:
        i = next(k for k, e in enumerate(entries) if e is Ellipsis)
        return list(entries[:i]) + fill + list(entries[i + 1:])
    return list(entries) + fill


def _integer(entry: Any, size: int, axis: int) -> int:
    try:
        i = operator.index(entry)
    except TypeError:
        raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and integer or "
                         "boolean arrays are valid indices") from None
    if not -size <= i < size:
        raise IndexError(f"index {i} is out of bounds for axis {axis} with size {size}")
    return i + size if i < 0 else i


def _basic_index(array: MetaArray, entries: tuple) -> MetaArray:
    """Integers, slices, None and Ellipsis: a view with numpy's strides (a fresh 0-d where numpy gives a scalar)."""
    has_ellipsis = any(e is Ellipsis for e in entries)
    expanded = _expand_ellipsis(array, entries)
    shape, strides = [], []
    offset = 0
    dim = 0
    only_integers = not has_ellipsis
    for e in expanded:
        if e is None:
            shape.append(1)
            strides.append(0)
            only_integers = False
        elif isinstance(e, slice):
            n = array.shape[dim]
            start, stop, step = e.indices(n)
            shape.append(len(range(start, stop, step)))
            strides.append(array.strides[dim] * step)
            offset += start * array.strides[dim]
            dim += 1
            only_integers = False
        else:
            i = _integer(e, array.shape[dim], dim)
            offset += i * array.strides[dim]
            dim += 1
    if only_integers and not shape:  # numpy returns a scalar (a copy of one element)
        return _fresh((), array.dtype, None)
    return _view(array, tuple(shape), tuple(strides), offset)


def _advanced_index(array: MetaArray, entries: tuple) -> MetaArray:
    """Integer-array (fancy) indexing: a new buffer of the result shape, laid out as numpy's mapiter does."""
    expanded = []
    for e in entries:
        if isinstance(e, list):
            e = np.asarray(e)  # a Python list of indices: a (small) real index array
        if e is True or e is False:
            raise TypeError("MetaArray: boolean scalar indices are not supported")
        if isinstance(e, MetaArray) and e.dtype == bool:
            raise TypeError("MetaArray: a shape-only boolean mask selects an unknown number of elements")
        if isinstance(e, np.ndarray) and e.dtype == bool:
            expanded.extend(e.nonzero())  # a real mask: its True count is known
            continue
        expanded.append(e)
    expanded = _expand_ellipsis(array, tuple(expanded))
    dim = 0
    index_shapes = []  # the advanced indices (arrays, and integers next to them)
    positions = []  # where each advanced index sits among the result's entries
    before, after = [], []  # result dims of slices and None, before / after the first advanced index
    for k, e in enumerate(expanded):
        if e is None:
            (after if positions else before).append(1)
        elif isinstance(e, slice):
            start, stop, step = e.indices(array.shape[dim])
            (after if positions else before).append(len(range(start, stop, step)))
            dim += 1
        elif isinstance(e, (MetaArray, np.ndarray)):
            if e.dtype.kind not in "iu":
                raise IndexError("arrays used as indices must be of integer (or boolean) type")
            index_shapes.append(e.shape)
            positions.append(k)
            dim += 1
        else:
            _integer(e, array.shape[dim], dim)
            index_shapes.append(())
            positions.append(k)
            dim += 1
    try:
        broadcast = _broadcast(index_shapes)
    except ValueError:
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together with shapes "
                         + " ".join(str(s) for s in index_shapes)) from None
    consecutive = positions == list(range(positions[0], positions[-1] + 1))
    buffer_shape = broadcast + tuple(before) + tuple(after)
    if not consecutive or not before:
        return _fresh(buffer_shape, array.dtype, None)
    # numpy fills a buffer with the index dims first, then moves them into place: the result is a view of it
    buffer = _fresh(buffer_shape, array.dtype, None)
    nb, nbefore = len(broadcast), len(before)
    perm = list(range(nb, nb + nbefore)) + list(range(nb)) + list(range(nb + nbefore, len(buffer_shape)))
    return _transpose(buffer, perm)


# --- numpy functions (__array_function__) ---------------------------------------------------------------------
_FUNCTIONS: dict[Callable, Callable] = {}


def _implements(*funcs: Callable) -> Callable:
    def register(handler: Callable) -> Callable:
        for f in funcs:
            _FUNCTIONS[f] = handler
        return handler
    return register


def _meta(x: Any, what: str) -> MetaArray:
    if not isinstance(x, MetaArray):
        raise TypeError(f"MetaArray: {what} needs a MetaArray here, got {type(x).__name__}")
    return x


def _shape_of(x: Any) -> tuple[int, ...]:
    if isinstance(x, (MetaArray, np.ndarray, np.generic)):
        return x.shape
    if isinstance(x, (bool, int, float, complex)):
        return ()
    raise TypeError(f"MetaArray: unsupported operand {type(x).__name__}")


def _dtype_or_value(x: Any) -> Any:
    """For np.result_type / np.can_cast: a MetaArray stands for its dtype."""
    return x.dtype if isinstance(x, MetaArray) else x


@_implements(np.shape)
def _np_shape(a: Any) -> tuple[int, ...]:
    return a.shape


@_implements(np.ndim)
def _np_ndim(a: Any) -> int:
    return a.ndim


@_implements(np.size)
def _np_size(a: Any, axis: int | None = None) -> int:
    return a.size if axis is None else a.shape[axis]


@_implements(np.result_type)
def _np_result_type(*arrays_and_dtypes: Any) -> np.dtype:
    return np.result_type(*(_dtype_or_value(x) for x in arrays_and_dtypes))


@_implements(np.can_cast)
def _np_can_cast(from_: Any, to: Any, casting: str = "safe") -> bool:
    return np.can_cast(_dtype_or_value(from_), _dtype_or_value(to), casting)


@_implements(np.reshape)
def _np_reshape(a: MetaArray, shape: Any = None, order: str = "C", *, newshape: Any = None,
                copy: bool | None = None) -> MetaArray:
    return _reshape(_meta(a, "reshape"), newshape if shape is None else shape, order, copy)


@_implements(np.transpose)
def _np_transpose(a: MetaArray, axes: Any = None) -> MetaArray:
    return _transpose(_meta(a, "transpose"), axes)


@_implements(np.swapaxes)
def _np_swapaxes(a: MetaArray, axis1: int, axis2: int) -> MetaArray:
    return _swapaxes(_meta(a, "swapaxes"), axis1, axis2)


@_implements(np.moveaxis)
def _np_moveaxis(a: MetaArray, source: Any, destination: Any) -> MetaArray:
    a = _meta(a, "moveaxis")
    src = _normalize_axes(source, a.ndim)
    dst = _normalize_axes(destination, a.ndim)
    if len(src) != len(dst):
        raise ValueError("`source` and `destination` arguments must have the same number of elements")
    order = [n for n in range(a.ndim) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return _transpose(a, order)


@_implements(np.squeeze)
def _np_squeeze(a: MetaArray, axis: Any = None) -> MetaArray:
    return _squeeze(_meta(a, "squeeze"), axis)


@_implements(np.expand_dims)
def _np_expand_dims(a: MetaArray, axis: Any) -> MetaArray:
    a = _meta(a, "expand_dims")
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = a.ndim + len(axes)
    axes = _normalize_axes(axes, ndim)
    it = iter(a.shape)
    return _reshape(a, tuple(1 if i in axes else next(it) for i in range(ndim)))  # numpy: a.reshape(shape)


@_implements(np.broadcast_to)
def _np_broadcast_to(array: MetaArray, shape: Any, subok: bool = False) -> MetaArray:
    """A read-only view with stride 0 along the broadcast axes (numpy's broadcast_to)."""
    a = _meta(array, "broadcast_to")
    shape = _normalize_shape(shape)
    lead = len(shape) - a.ndim
    if lead < 0 or _broadcast([a.shape, shape]) != shape:
        raise ValueError(f"operands could not be broadcast together with remapped shapes [original->remapped]: "
                         f"{a.shape} and requested shape {shape}")
    strides = tuple(0 if i < lead or a.shape[i - lead] != shape[i] else a.strides[i - lead]
                    for i in range(len(shape)))
    return _view(a, shape, strides, 0, writeable=False)


@_implements(np.ravel)
def _np_ravel(a: MetaArray, order: str = "C") -> MetaArray:
    return _ravel(_meta(a, "ravel"), order)


@_implements(np.copy)
def _np_copy(a: MetaArray, order: str = "K", subok: bool = False) -> MetaArray:
    a = _meta(a, "copy")
    return _fresh(a.shape, a.dtype, _like_strides(a, a.shape, a.dtype.itemsize, order))


def _like(prototype: Any, dtype: Any = None, order: str = "K", subok: bool = True, shape: Any = None, *,
          device: Any = None) -> MetaArray:
    proto = _meta(prototype, "*_like")
    dt = proto.dtype if dtype is None else np.dtype(dtype)
    shape = proto.shape if shape is None else _normalize_shape(shape)
    return _fresh(shape, dt, _like_strides(proto, shape, dt.itemsize, order))


_implements(np.empty_like, np.zeros_like, np.ones_like)(_like)


@_implements(np.full_like)
def _np_full_like(a: Any, fill_value: Any, dtype: Any = None, order: str = "K", subok: bool = True,
                  shape: Any = None, *, device: Any = None) -> MetaArray:
    return _like(a, dtype, order, subok, shape)


def _created(shape: Any, dtype: Any, order: str) -> MetaArray:
    shape = _normalize_shape(shape)
    dt = np.dtype(float if dtype is None else dtype)
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    return _fresh(shape, dt, _f_strides(shape, dt.itemsize) if order == "F" else None)


@_implements(np.empty, np.zeros, np.ones)
def _np_empty(shape: Any, dtype: Any = float, order: str = "C", *, device: Any = None) -> MetaArray:
    return _created(shape, dtype, order)


@_implements(np.full)
def _np_full(shape: Any, fill_value: Any, dtype: Any = None, order: str = "C", *, device: Any = None) -> MetaArray:
    if dtype is None:
        dtype = fill_value.dtype if isinstance(fill_value, (MetaArray, np.ndarray, np.generic)) else \
            np.result_type(fill_value)
    return _created(shape, dtype, order)


@_implements(np.arange)
def _np_arange(start: Any, stop: Any = None, step: Any = None, dtype: Any = None, *,
               device: Any = None) -> MetaArray:
    """Its length from the (real) bounds, its dtype numpy's."""
    if stop is None:
        start, stop = 0, start
    step = 1 if step is None else step
    for v in (start, stop, step):
        if isinstance(v, MetaArray):
            raise TypeError("MetaArray: np.arange bounds must be numbers, not shape-only arrays")
    if step == 0:
        raise ZeroDivisionError("step must not be zero (arange)")
    given = [v for v in (start, stop, step) if v is not None]
    dt = np.dtype(dtype) if dtype is not None else np.result_type(*given)
    length = max(0, math.ceil((stop - start) / step))
    if all(isinstance(v, (int, np.integer)) for v in given):
        length = len(range(int(start), int(stop), int(step)))
    return _fresh((length,), dt, None)


@_implements(np.asarray, np.asanyarray)
def _np_asarray(a: Any, dtype: Any = None, order: Any = None, *, device: Any = None, copy: Any = None) -> MetaArray:
    """With `like=` a MetaArray: itself (or a cast copy); a Python or numpy scalar becomes a fresh 0-d."""
    if isinstance(a, MetaArray):
        if copy or (dtype is not None and np.dtype(dtype) != a.dtype):
            return a.astype(a.dtype if dtype is None else dtype)
        return a
    if isinstance(a, (bool, int, float, complex, np.generic)):
        dt = np.dtype(dtype) if dtype is not None else np.asarray(a).dtype
        return _fresh((), dt, None)
    raise TypeError(f"MetaArray: np.asarray(..., like=MetaArray) takes a MetaArray or a scalar, got "
                    f"{type(a).__name__} (a real array is not turned into a shape-only one implicitly)")


@_implements(np.array)
def _np_array(obj: Any, dtype: Any = None, *, copy: bool = True, order: str = "K", subok: bool = False,
              ndmin: int = 0, device: Any = None) -> MetaArray:
    if isinstance(obj, MetaArray):
        if copy is False or copy is None:
            result = _np_asarray(obj, dtype)
        else:
            dt = obj.dtype if dtype is None else np.dtype(dtype)
            result = _fresh(obj.shape, dt, _like_strides(obj, obj.shape, dt.itemsize, order))
    else:
        result = _np_asarray(obj, dtype)
    if result.ndim < ndmin:
        result = _reshape(result, (1,) * (ndmin - result.ndim) + result.shape)
    return result


@_implements(np.sum)
def _np_sum(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            **kwargs: Any) -> MetaArray:
    return _reduce(np.add, _meta(a, "sum"), axis, dtype, out, keepdims, kwargs)


@_implements(np.prod)
def _np_prod(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kwargs: Any) -> MetaArray:
    return _reduce(np.multiply, _meta(a, "prod"), axis, dtype, out, keepdims, kwargs)


@_implements(np.max, np.amax)
def _np_max(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return _reduce(np.maximum, _meta(a, "max"), axis, None, out, keepdims, kwargs)


@_implements(np.min, np.amin)
def _np_min(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return _reduce(np.minimum, _meta(a, "min"), axis, None, out, keepdims, kwargs)


@_implements(np.any)
def _np_any(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return _reduce(np.logical_or, _meta(a, "any"), axis, np.dtype(bool), out, keepdims, kwargs)


@_implements(np.all)
def _np_all(a: MetaArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> MetaArray:
    return _reduce(np.logical_and, _meta(a, "all"), axis, np.dtype(bool), out, keepdims, kwargs)


@_implements(np.mean)
def _np_mean(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kwargs: Any) -> MetaArray:
    return _mean(_meta(a, "mean"), axis, dtype, out, keepdims, **kwargs)


@_implements(np.argmax, np.argmin)
def _np_argmax(a: MetaArray, axis: Any = None, out: Any = None, *, keepdims: bool = False) -> MetaArray:
    return _argreduce(_meta(a, "argmax"), axis, out, keepdims)


@_implements(np.vdot)
def _np_vdot(a: Any, b: Any) -> MetaArray:
    """A 0-d result of the operands' common dtype (numpy returns a scalar)."""
    if math.prod(_shape_of(a)) != math.prod(_shape_of(b)):
        raise ValueError("vectors have different lengths")
    return _fresh((), np.result_type(_dtype_or_value(a), _dtype_or_value(b)), None)


@_implements(np.dot)
def _np_dot(a: Any, b: Any, out: Any = None) -> MetaArray:
    sa, sb = _shape_of(a), _shape_of(b)
    if not sa or not sb:
        return np.multiply(a, b, out=out)
    if len(sa) <= 2 and len(sb) <= 2:
        return np.matmul(a, b, out=out)
    k = sb[-2] if len(sb) > 1 else sb[0]
    if sa[-1] != k:
        raise ValueError(f"shapes {sa} and {sb} not aligned: {sa[-1]} (dim {len(sa) - 1}) != {k}")
    shape = sa[:-1] + sb[:-2] + sb[-1:]
    dtype = np.result_type(_dtype_or_value(a), _dtype_or_value(b))
    if out is not None:
        (out,) = _outputs(out, 1)
        _check_out("dot", out, shape, dtype, "no")
        return out
    return _fresh(shape, dtype, None)


@_implements(np.outer)
def _np_outer(a: Any, b: Any, out: Any = None) -> MetaArray:
    shape = (math.prod(_shape_of(a)), math.prod(_shape_of(b)))
    dtype = np.result_type(_dtype_or_value(a), _dtype_or_value(b))
    if out is not None:
        (out,) = _outputs(out, 1)
        _check_out("outer", out, shape, dtype, "same_kind")
        return out
    return _fresh(shape, dtype, None)


@_implements(np.concatenate)
def _np_concatenate(arrays: Any, axis: int | None = 0, out: Any = None, *, dtype: Any = None,
                    casting: str = "same_kind") -> MetaArray:
    arrays = list(arrays)
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    shapes = [_shape_of(x) for x in arrays]
    if axis is None:
        shape = (sum(math.prod(s) for s in shapes),)
    else:
        ndim = len(shapes[0])
        if ndim == 0:
            raise ValueError("zero-dimensional arrays cannot be concatenated")
        ax = _normalize_axes(axis, ndim)[0]
        for s in shapes:
            if len(s) != ndim or any(s[i] != shapes[0][i] for i in range(ndim) if i != ax):
                raise ValueError("all the input array dimensions except for the concatenation axis must match "
                                 "exactly")
        shape = shapes[0][:ax] + (sum(s[ax] for s in shapes),) + shapes[0][ax + 1:]
    dt = np.dtype(dtype) if dtype is not None else np.result_type(*(_dtype_or_value(x) for x in arrays))
    if out is not None:
        (out,) = _outputs(out, 1)
        _check_out("concatenate", out, shape, dt, casting)
        return out
    return _fresh(shape, dt, None)


@_implements(np.stack)
def _np_stack(arrays: Any, axis: int = 0, out: Any = None, *, dtype: Any = None,
              casting: str = "same_kind") -> MetaArray:
    arrays = list(arrays)
    if not arrays:
        raise ValueError("need at least one array to stack")
    shapes = {_shape_of(x) for x in arrays}
    if len(shapes) != 1:
        raise ValueError("all input arrays must have the same shape")
    (shape,) = shapes
    ax = _normalize_axes(axis, len(shape) + 1)[0]
    shape = shape[:ax] + (len(arrays),) + shape[ax:]
    dt = np.dtype(dtype) if dtype is not None else np.result_type(*(_dtype_or_value(x) for x in arrays))
    if out is not None:
        (out,) = _outputs(out, 1)
        _check_out("stack", out, shape, dt, casting)
        return out
    return _fresh(shape, dt, None)


@_implements(np.where)
def _np_where(condition: Any, x: Any = None, y: Any = None) -> MetaArray:
    if x is None or y is None:
        raise TypeError("MetaArray: np.where(condition) returns data-dependent shapes; give x and y")
    shape = _broadcast([_shape_of(condition), _shape_of(x), _shape_of(y)])
    return _fresh(shape, np.result_type(_dtype_or_value(x), _dtype_or_value(y)), None)


@_implements(np.triu, np.tril)
def _np_triu(m: MetaArray, k: int = 0) -> MetaArray:
    m = _meta(m, "triu/tril")
    if m.ndim < 2:
        raise TypeError("MetaArray: triu/tril of a 1-d array is not supported")
    return _fresh(m.shape, m.dtype, None)


@_implements(np.take)
def _np_take(a: MetaArray, indices: Any, axis: int | None = None, out: Any = None, mode: str = "raise") -> MetaArray:
    a = _meta(a, "take")
    ishape = _shape_of(indices)
    if axis is None:
        shape = ishape
    else:
        ax = _normalize_axes(axis, a.ndim)[0]
        shape = a.shape[:ax] + ishape + a.shape[ax + 1:]
    if out is not None:
        (out,) = _outputs(out, 1)
        _check_out("take", out, shape, a.dtype, "no")
        return out
    return _fresh(shape, a.dtype, None)


@_implements(np.copyto)
def _np_copyto(dst: Any, src: Any, casting: str = "same_kind", where: Any = True) -> None:
    dst = _meta(dst, "copyto destination")
    _check_writeable(dst)
    if _broadcast([dst.shape, _shape_of(src)]) != dst.shape:
        raise ValueError(f"could not broadcast input array from shape {_shape_of(src)} into shape {dst.shape}")
    if not np.can_cast(_dtype_or_value(src), dst.dtype, casting):
        raise TypeError(f"Cannot cast array data from {_dtype_or_value(src)!r} to {dst.dtype!r} according to "
                        f"the rule {casting!r}")


@_implements(np.sort)
def _np_sort(a: MetaArray, axis: int | None = -1, kind: Any = None, order: Any = None, *,
             stable: Any = None) -> MetaArray:
    a = _meta(a, "sort")
    return _fresh((a.size,), a.dtype, None) if axis is None else _fresh(a.shape, a.dtype,
                                                                         _like_strides(a, a.shape, a.itemsize))


@_implements(np.argsort)
def _np_argsort(a: MetaArray, axis: int | None = -1, kind: Any = None, order: Any = None, *,
                stable: Any = None) -> MetaArray:
    a = _meta(a, "argsort")
    return _fresh((a.size,) if axis is None else a.shape, np.dtype(np.intp), None)

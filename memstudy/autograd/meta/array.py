"""`MetaArray`: the shape-only array, its ufuncs (`__array_ufunc__`), indexing, views and methods."""
from __future__ import annotations

import math
import operator
from typing import Any, Callable, Iterator

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from .errors import Unsupported, UnsupportedAttribute, caller
from .layout import (broadcast_shapes, c_strides, f_strides, fix_unknown, is_c_contiguous, is_f_contiguous,
                     iterator_order, like_strides, nocopy_strides, normalize_axes, normalize_shape, strides_in_order)

FUNCTIONS: dict[Callable, Callable] = {}  # numpy function -> its shape rule (filled by the `functions` module)
METHODS: dict[str, Callable] = {}  # ndarray method name -> its rule, the array first (filled there too)
UFUNC_METHODS: dict[str, Callable] = {}  # "accumulate", "outer", ...: rule(ufunc, *inputs, **kwargs) (ditto)


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


# --- the array ---------------------------------------------------------------------------------------------
class _Flags:
    """`MetaArray.flags`: contiguity (computed from the strides as numpy does), writeable, owndata."""

    __slots__ = ("_array",)

    def __init__(self, array: "MetaArray"):
        self._array = array

    @property
    def c_contiguous(self) -> bool:
        a = self._array
        return is_c_contiguous(a.shape, a.strides, a.dtype.itemsize)

    @property
    def f_contiguous(self) -> bool:
        a = self._array
        return is_f_contiguous(a.shape, a.strides, a.dtype.itemsize)

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
    """An array without data: shape, dtype, strides, `.base` and a fake address (see the package docstring).

    `MetaArray(shape, dtype)` is a new C-contiguous buffer. The operators come from numpy's
    `NDArrayOperatorsMixin`, which routes each one (in place ones with `out=`, and `@`) through
    `__array_ufunc__`.
    """

    __slots__ = ("shape", "dtype", "strides", "base", "address", "_writeable", "__weakref__")
    __hash__ = None  # type: ignore[assignment]  # like ndarray: unhashable (== is element-wise)

    def __init__(self, shape: Any, dtype: Any = float, strides: tuple[int, ...] | None = None):
        shape = normalize_shape(shape)
        if any(n < 0 for n in shape):
            raise ValueError("negative dimensions are not allowed")
        dtype = np.dtype(dtype)
        self.shape = shape
        self.dtype = dtype
        self.strides = c_strides(shape, dtype.itemsize) if strides is None else tuple(strides)
        if strides is None and _EMPTY_STRIDES_ZERO and 0 in shape:
            self.strides = (0,) * len(shape)
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
        # numpy converts without saying which function asked (np.asarray, np.ascontiguousarray, ...): the caller's
        # line of code names it
        raise Unsupported("a numpy call", "tried to convert a shape-only array to an ndarray, which has data",
                          where=caller(with_source=True))

    def __iter__(self) -> Iterator:
        raise Unsupported("iteration", "over a shape-only array would loop over its values")

    def __bool__(self) -> bool:
        raise Unsupported("the truth value", "of a shape-only array is unknown (it depends on the values)")

    def __index__(self) -> int:
        raise Unsupported("an index or a size", "taken from a shape-only array depends on its values")

    def __getattr__(self, name: str) -> Any:
        """ndarray methods with a shape rule (METHODS); another ndarray attribute is Unsupported (an
        AttributeError too, so `hasattr` still says no)."""
        method = METHODS.get(name)
        if method is not None:
            return method.__get__(self)
        if not name.startswith("__") and hasattr(np.ndarray, name):
            raise UnsupportedAttribute(f"ndarray.{name}")
        raise AttributeError(f"'MetaArray' object has no attribute {name!r}")

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
        raise Unsupported("ndarray.item", "returns a value, and a shape-only array has none")

    def tolist(self) -> Any:
        raise Unsupported("ndarray.tolist", "returns the values, and a shape-only array has none")

    # --- numpy's protocols ----------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        if out is Ellipsis:  # numpy 2: `out=...` asks for an array result even when 0-d, which is all we return
            del kwargs["out"]
            out = None
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
            check_writeable(target)
            return None
        rule = UFUNC_METHODS.get(method)
        if rule is None:
            raise Unsupported(f"numpy.{ufunc.__name__}.{method}")
        return rule(ufunc, *inputs, **kwargs)

    def __array_function__(self, func: Callable, types: tuple, args: tuple, kwargs: dict) -> Any:
        handler = FUNCTIONS.get(func)
        if handler is None:
            raise Unsupported(f"{getattr(func, '__module__', 'numpy')}.{getattr(func, '__name__', func)}")
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
        """No values to write: checks the destination is writeable and that `value` broadcasts to it.

        A shape-only boolean mask (`a[mask] = 0.0`, a masked fill) selects an unknown number of elements, so it
        takes a scalar value only."""
        check_writeable(self)
        shape = np.shape(value) if not isinstance(value, MetaArray) else value.shape
        if isinstance(index, MetaArray) and index.dtype == bool:
            if index.shape != self.shape[:index.ndim]:
                raise IndexError(f"boolean index of shape {index.shape} does not match the array's shape "
                                 f"{self.shape}")
            if math.prod(shape) != 1:
                raise TypeError("MetaArray: a shape-only boolean mask takes a scalar value")
            return
        target = self[index]
        if broadcast_shapes([target.shape, shape]) != target.shape:
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
        return fresh(self.shape, dtype, like_strides(self, self.shape, dtype.itemsize, order))

    def copy(self, order: str = "C") -> "MetaArray":
        return fresh(self.shape, self.dtype, like_strides(self, self.shape, self.dtype.itemsize, order))

    def reshape(self, *shape: Any, order: str = "C", copy: bool | None = None) -> "MetaArray":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape_of(self, shape, order, copy)

    def transpose(self, *axes: Any) -> "MetaArray":
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list, np.ndarray))):
            axes = axes[0]
        return transpose_of(self, axes if axes != () else None)

    def swapaxes(self, axis1: int, axis2: int) -> "MetaArray":
        return swapaxes_of(self, axis1, axis2)

    def ravel(self, order: str = "C") -> "MetaArray":
        return ravel_of(self, order)

    def flatten(self, order: str = "C") -> "MetaArray":
        return fresh((self.size,), self.dtype, None)

    def squeeze(self, axis: Any = None) -> "MetaArray":
        return squeeze_of(self, axis)

    def view(self, dtype: Any = None) -> "MetaArray":
        if dtype is not None and np.dtype(dtype) != self.dtype:
            raise TypeError("MetaArray.view with another dtype is not supported")
        return view_of(self, self.shape, self.strides, 0)

    def fill(self, value: Any) -> None:
        check_writeable(self)

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            **kwargs: Any) -> "MetaArray":
        return reduction(np.add, self, axis, dtype, out, keepdims, kwargs)

    def prod(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kwargs: Any) -> "MetaArray":
        return reduction(np.multiply, self, axis, dtype, out, keepdims, kwargs)

    def max(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return reduction(np.maximum, self, axis, None, out, keepdims, kwargs)

    def min(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return reduction(np.minimum, self, axis, None, out, keepdims, kwargs)

    def any(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return reduction(np.logical_or, self, axis, np.dtype(bool), out, keepdims, kwargs)

    def all(self, axis: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> "MetaArray":
        return reduction(np.logical_and, self, axis, np.dtype(bool), out, keepdims, kwargs)

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, *,
             where: Any = True) -> "MetaArray":
        return mean_of(self, axis, dtype, out, keepdims, where)

    def argmax(self, axis: Any = None, out: Any = None, *, keepdims: bool = False) -> "MetaArray":
        return argreduce(self, axis, out, keepdims)

    def argmin(self, axis: Any = None, out: Any = None, *, keepdims: bool = False) -> "MetaArray":
        return argreduce(self, axis, out, keepdims)


_OPERAND_TYPES = (MetaArray, np.ndarray, np.generic, bool, int, float, complex)


# numpy 2 allocates an empty array (a zero-length axis) with all strides 0; numpy 1 with C strides
_EMPTY_STRIDES_ZERO = np.empty((0, 2)).strides == (0, 0)


def fresh(shape: tuple[int, ...], dtype: np.dtype, strides: tuple[int, ...] | None) -> MetaArray:
    """A new buffer (owns its memory); C-contiguous unless `strides` say otherwise."""
    m = object.__new__(MetaArray)
    m.shape = shape
    m.dtype = dtype
    if _EMPTY_STRIDES_ZERO and 0 in shape:
        strides = (0,) * len(shape)
    m.strides = c_strides(shape, dtype.itemsize) if strides is None else strides
    m.base = None
    m.address = _allocate(math.prod(shape) * dtype.itemsize)
    m._writeable = True
    return m


def view_of(source: MetaArray, shape: tuple[int, ...], strides: tuple[int, ...], offset_bytes: int,
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


def check_writeable(array: MetaArray) -> None:
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


def outputs(out: Any, nout: int) -> tuple:
    if out is None:
        return (None,) * nout
    outs = out if isinstance(out, tuple) else (out,)
    if len(outs) != nout:
        raise ValueError(f"The 'out' tuple must have exactly {nout} entries: one per ufunc output")
    for o in outs:
        if o is not None and not isinstance(o, MetaArray):
            raise TypeError("a shape-only result cannot be written into a real array (out= must be a MetaArray)")
    return outs


def check_out(ufunc_name: str, out: MetaArray, shape: tuple[int, ...], dtype: np.dtype, casting: str) -> None:
    check_writeable(out)
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
    out = broadcast_shapes([a2[:-2], b2[:-2]]) + (a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) != 1 else out[:-1]
    return out


class _BatchAxes:
    """An operand's batch (loop) axes, as `iterator_order` reads an operand."""

    __slots__ = ("shape", "strides")

    def __init__(self, array: Any):
        self.shape, self.strides = array.shape[:-2], array.strides[:-2]


def _matmul_order(shape: tuple[int, ...], inputs: tuple) -> list[int] | None:
    """The axes of matmul's result innermost first, as numpy's gufunc allocates it: the core axes (n?, m?) innermost
    in C order, the batch axes in the iterator's order over the operands' batch axes (a batch-transposed operand
    gives a batch-transposed result). None when that is plain C order (at most one batch axis)."""
    core = sum(1 for x in inputs if isinstance(x, (MetaArray, np.ndarray)) and x.ndim >= 2)
    batch = len(shape) - core
    if batch <= 1:
        return None
    operands = [_BatchAxes(x) for x in inputs if isinstance(x, (MetaArray, np.ndarray)) and x.ndim > 2]
    return list(range(len(shape) - 1, batch - 1, -1)) + iterator_order(shape[:batch], operands)


def _ufunc_call(ufunc: np.ufunc, inputs: tuple, kwargs: dict) -> Any:
    out = dtype = signature = None
    casting, order, where = "same_kind", "K", True
    if kwargs:
        out = kwargs.pop("out", None)
        dtype = kwargs.pop("dtype", None)
        signature = kwargs.pop("signature", None)
        casting = kwargs.pop("casting", "same_kind")
        order = kwargs.pop("order", "K")
        kwargs.pop("subok", None)
        where = kwargs.pop("where", True)  # a mask: it broadcasts with the operands, the result's shape as ever
        if kwargs:
            raise TypeError(f"MetaArray: {ufunc.__name__} got unsupported arguments {sorted(kwargs)}")
    nin, nout = ufunc.nin, ufunc.nout
    if len(inputs) != nin:
        raise TypeError(f"{ufunc.__name__}() takes {nin} positional arguments, got {len(inputs)}")
    outs = outputs(out, nout)
    if dtype is not None:
        signature = (None,) * nin + (np.dtype(dtype),) * nout
    dtypes = _resolve(ufunc, tuple(map(_dtype_key, inputs)) + (None,) * nout, signature, casting)
    arrays = [x for x in inputs if isinstance(x, (MetaArray, np.ndarray))]
    shapes = [x.shape for x in arrays]
    inner_first = None
    if ufunc is np.matmul:
        shape = _matmul_shape(*(x.shape if isinstance(x, (MetaArray, np.ndarray)) else () for x in inputs))
        inner_first = _matmul_order(shape, inputs)
        order = "C" if inner_first is None else "K"
    elif ufunc.signature is not None:
        raise TypeError(f"MetaArray does not support the generalized ufunc {ufunc.__name__}")
    else:
        if out is not None:
            shapes += [o.shape for o in outs if o is not None]
        if isinstance(where, (MetaArray, np.ndarray)):
            shapes.append(where.shape)
        shape = broadcast_shapes(shapes)
    results = []
    for i, o in enumerate(outs):
        result_dtype = dtypes[nin + i]
        if o is not None:
            check_out(ufunc.__name__, o, shape, result_dtype, casting)
            results.append(o)
            continue
        if len(shape) <= 1 or order == "C":
            strides = None
        elif order == "F":
            strides = f_strides(shape, result_dtype.itemsize)
        elif order in ("K", "A", None):
            trivial = _trivial_loop_order(ufunc, inputs, dtypes[:nin], where) if nout == 1 else None
            if trivial is not None:  # numpy's trivial loop: a C array, or F when every N-d operand is F only
                strides = f_strides(shape, result_dtype.itemsize) if trivial == "F" else None
            else:
                if inner_first is None:
                    inner_first = iterator_order(shape, arrays)
                strides = strides_in_order(shape, result_dtype.itemsize, inner_first)
        else:
            raise ValueError(f"order must be one of 'C', 'F', 'A', 'K', got {order!r}")
        results.append(fresh(shape, result_dtype, strides))
    return results[0] if nout == 1 else tuple(results)


def _trivial_loop_order(ufunc: np.ufunc, inputs: tuple, loop_dtypes: tuple, where: Any) -> str | None:
    """numpy's `try_trivial_single_output_loop` (no iterator): "C" or "F" when it applies, else None.

    It applies when every input that is not 0-d has the same shape (nothing broadcast), each N-d one is contiguous
    in one common order (its C and F flags alike), and no N-d input needs a cast; the output is then allocated in
    that order (C unless the order is F only). Otherwise numpy's iterator allocates it (`iterator_order`)."""
    if where is not True or ufunc is np.matmul:
        return None
    shape = None
    order = 0
    for x, loop_dtype in zip(inputs, loop_dtypes):
        if not isinstance(x, (MetaArray, np.ndarray)) or x.ndim == 0:
            continue
        if shape is None:
            shape = x.shape
        elif x.shape != shape:
            return None
        if x.dtype != loop_dtype and (x.ndim > 1 or x.shape[0] > 8192):  # numpy casts only small 1-d copies
            return None
        if x.ndim == 1:
            continue
        flags = (1 if is_c_contiguous(x.shape, x.strides, x.itemsize) else 0) | \
            (2 if is_f_contiguous(x.shape, x.strides, x.itemsize) else 0)
        if flags == 0 or (order and flags != order):
            return None
        order = flags
    return "F" if order == 2 else "C"


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
    return reduction(ufunc, array, axis, dtype, out, keepdims, kwargs)


def reduction(ufunc: np.ufunc, array: MetaArray, axis: Any, dtype: Any, out: Any, keepdims: bool,
              kwargs: dict) -> MetaArray:
    """`ufunc.reduce`'s result: its shape, dtype (numpy's reduction dtype rules) and numpy's layout."""
    initial = kwargs.pop("initial", _NoValue)
    if initial is np._NoValue:
        initial = _NoValue
    where = kwargs.pop("where", True)
    if where is np._NoValue:
        where = True
    if kwargs:
        raise TypeError(f"MetaArray: {ufunc.__name__}.reduce got unsupported arguments {sorted(kwargs)}")
    if ufunc.nin != 2 or ufunc.nout != 1:
        raise ValueError("reduce only supported for binary functions")
    shape = array.shape
    axes = normalize_axes(axis, len(shape))
    operands = [array]
    if where is not True:  # a mask: it broadcasts to the array, and the iterator reads its strides too
        where_shape = np.shape(where)
        if broadcast_shapes([shape, where_shape]) != shape:
            raise ValueError(f"operands could not be broadcast together with remapped shapes [original->remapped]: "
                             f"{where_shape} and requested shape {shape}")
        if initial is _NoValue and ufunc.identity is None:
            raise ValueError(f"reduction operation '{ufunc.__name__}' does not have an identity, so to use a where "
                             "mask one has to specify 'initial'")
        if isinstance(where, (MetaArray, np.ndarray)):
            operands.append(where)
    if initial is _NoValue and ufunc.identity is None and any(shape[a] == 0 for a in axes):
        raise ValueError(f"zero-size array to reduction operation {ufunc.__name__} which has no identity")
    signature = None if dtype is None else (np.dtype(dtype), None, None)
    result_dtype = _resolve(ufunc, (None, array.dtype, None), signature, "unsafe", reduction=True)[2]
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    result_shape = kept if keepdims else tuple(n for i, n in enumerate(shape) if i not in axes)
    if out is not None:
        (out,) = outputs(out, 1)
        check_out(ufunc.__name__, out, result_shape, result_dtype, "same_kind")
        return out
    if len(result_shape) <= 1:
        return fresh(result_shape, result_dtype, None)
    # numpy's iterator orders all axes by the input's strides and lays the result out in that order
    inner_first = iterator_order(shape, operands)
    strides = strides_in_order(kept, result_dtype.itemsize, inner_first)
    if not keepdims:
        strides = tuple(s for i, s in enumerate(strides) if i not in axes)
    return fresh(result_shape, result_dtype, strides)


def mean_of(a: MetaArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: Any = False,
            where: Any = True) -> MetaArray:
    """numpy's `_methods._mean`: the sum (integers and booleans in float64, float16 in float32), divided in place;
    a float16 result is then cast back by `float16(ret)`: a new 'K'-order buffer (or a scalar)."""
    keepdims = False if keepdims is np._NoValue else bool(keepdims)
    float16_result = False
    if dtype is None:
        if a.dtype.kind in "biu":
            dtype = np.dtype(np.float64)
        elif a.dtype == np.float16:
            dtype, float16_result = np.dtype(np.float32), True
    ret = reduction(np.add, a, axis, dtype, out, keepdims, {"where": where})
    if out is None and ret.ndim == 0:  # numpy's sum returned a scalar, divided into a new scalar
        return fresh((), a.dtype if float16_result else ret.dtype, None)
    if float16_result and out is None:
        return fresh(ret.shape, a.dtype, like_strides(ret, ret.shape, a.dtype.itemsize, "K"))
    return ret


def argreduce(a: MetaArray, axis: Any, out: Any, keepdims: bool) -> MetaArray:
    axes = normalize_axes(axis, a.ndim)
    # numpy refuses an empty reduction only: the whole array with axis None, else an axis of length 0 (an empty
    # array reduced along an axis of length >= 1 gives an empty result)
    if a.size == 0 and (axis is None or any(a.shape[i] == 0 for i in axes)):
        raise ValueError("attempt to get argmax of an empty sequence")
    if axis is None:
        shape = (1,) * a.ndim if keepdims else ()
    else:
        shape = tuple(1 if i in axes else n for i, n in enumerate(a.shape) if keepdims or i not in axes)
    if out is not None:
        (out,) = outputs(out, 1)
        check_out("argmax", out, shape, np.dtype(np.intp), "same_kind")
        return out
    return fresh(shape, np.dtype(np.intp), None)


# --- views: reshape, transpose, indexing -----------------------------------------------------------------------
def reshape_of(array: MetaArray, shape: Any, order: str = "C", copy: bool | None = None) -> MetaArray:
    """numpy's `PyArray_Newshape` (C order): a view when the strides allow, else a view of a C copy."""
    if order != "C":
        raise TypeError(f"MetaArray.reshape supports order='C' only, got {order!r}")
    if isinstance(shape, (tuple, list)):
        shape = tuple(shape)
    else:
        shape = (shape,)
    if copy is not True and len(shape) == array.ndim and all(
            operator.index(n) == m for n, m in zip(shape, array.shape)):
        return view_of(array, array.shape, array.strides, 0)
    new = fix_unknown(shape, array.size)
    source = array
    if copy is True:
        source = fresh(array.shape, array.dtype, None)
        strides = None
    elif is_c_contiguous(array.shape, array.strides, array.dtype.itemsize):
        strides = None
    else:
        strides = nocopy_strides(array.shape, array.strides, array.dtype.itemsize, new)
        if strides is None:
            if copy is False:
                raise ValueError("Unable to avoid creating a copy while reshaping.")
            source = fresh(array.shape, array.dtype, None)
    if strides is None:
        strides = c_strides(new, array.dtype.itemsize)
    return view_of(source, new, strides, 0)


def transpose_of(array: MetaArray, axes: Any = None) -> MetaArray:
    n = array.ndim
    if axes is None:
        perm = tuple(range(n - 1, -1, -1))
    else:
        perm = tuple(operator.index(a) for a in axes)
        if len(perm) != n:
            raise ValueError("axes don't match array")
        perm = normalize_axes(perm, n)
    return view_of(array, tuple(array.shape[a] for a in perm), tuple(array.strides[a] for a in perm), 0)


def swapaxes_of(array: MetaArray, axis1: int, axis2: int) -> MetaArray:
    a1, a2 = normalize_axes(axis1, array.ndim)[0], normalize_axes(axis2, array.ndim)[0]
    perm = list(range(array.ndim))
    perm[a1], perm[a2] = perm[a2], perm[a1]
    return transpose_of(array, perm)


def ravel_of(array: MetaArray, order: str = "C") -> MetaArray:
    if order not in ("C", "K", "A") and not (order == "F" and array.ndim <= 1):
        raise TypeError(f"MetaArray.ravel supports order='C' only, got {order!r}")
    if is_c_contiguous(array.shape, array.strides, array.dtype.itemsize):
        return reshape_of(array, (-1,))  # numpy's PyArray_Ravel: Newshape with -1 (fresh C strides)
    return fresh((array.size,), array.dtype, None)  # numpy's PyArray_Flatten: a new buffer


def squeeze_of(array: MetaArray, axis: Any = None) -> MetaArray:
    if axis is None:
        keep = [i for i, n in enumerate(array.shape) if n != 1]
    else:
        axes = normalize_axes(axis, array.ndim)
        for a in axes:
            if array.shape[a] != 1:
                raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
        keep = [i for i in range(array.ndim) if i not in axes]
    return view_of(array, tuple(array.shape[i] for i in keep), tuple(array.strides[i] for i in keep), 0)


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
            length = len(range(start, stop, step))
            if length == 0:  # numpy: an empty slice starts at 0 with step 1
                start, step = 0, 1
            shape.append(length)
            strides.append(array.strides[dim] * step)
            offset += start * array.strides[dim]
            dim += 1
            only_integers = False
        else:
            i = _integer(e, array.shape[dim], dim)
            offset += i * array.strides[dim]
            dim += 1
    if only_integers and not shape:  # numpy returns a scalar (a copy of one element)
        return fresh((), array.dtype, None)
    return view_of(array, tuple(shape), tuple(strides), offset)


def _advanced_index(array: MetaArray, entries: tuple) -> MetaArray:
    """Integer-array (fancy) indexing: a new buffer of the result shape, laid out as numpy's mapiter does."""
    expanded = []
    for e in entries:
        if isinstance(e, list):
            e = np.asarray(e)  # a Python list of indices: a (small) real index array
        if e is True or e is False:
            raise TypeError("MetaArray: boolean scalar indices are not supported")
        if isinstance(e, MetaArray) and e.dtype == bool:
            raise Unsupported("indexing by a boolean mask", "of shape-only values selects a number of elements that "
                              "depends on the values")
        if isinstance(e, np.ndarray) and e.dtype == bool:
            expanded.extend(e.nonzero())  # a real mask: its True count is known
            continue
        expanded.append(e)
    expanded = _expand_ellipsis(array, tuple(expanded))
    dim = 0
    index_shapes = []  # the advanced indices (arrays, and integers next to them)
    positions = []  # where each advanced index sits among the result's entries
    before, after = [], []  # result dims of slices and None, before / after the first advanced index
    subspace_strides = []  # their strides in the array (the subspace's memory order decides the result's)
    for k, e in enumerate(expanded):
        if e is None:
            (after if positions else before).append(1)
            subspace_strides.append(0)
        elif isinstance(e, slice):
            start, stop, step = e.indices(array.shape[dim])
            (after if positions else before).append(len(range(start, stop, step)))
            subspace_strides.append(array.strides[dim] * step)
            dim += 1
        elif isinstance(e, (MetaArray, np.ndarray)):
            if e.dtype.kind not in "iu":
                raise IndexError("arrays used as indices must be of integer (or boolean) type")
            n = array.shape[dim]
            if isinstance(e, np.ndarray) and e.size and (e.max() >= n or e.min() < -n):  # real indices: checked
                bad = int(e.max()) if e.max() >= n else int(e.min())
                raise IndexError(f"index {bad} is out of bounds for axis {dim} with size {n}")
            index_shapes.append(e.shape)
            positions.append(k)
            dim += 1
        else:
            _integer(e, array.shape[dim], dim)
            index_shapes.append(())
            positions.append(k)
            dim += 1
    try:
        broadcast = broadcast_shapes(index_shapes)
    except ValueError:
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together with shapes "
                         + " ".join(str(s) for s in index_shapes)) from None
    consecutive = positions == list(range(positions[0], positions[-1] + 1))
    buffer_shape = broadcast + tuple(before) + tuple(after)
    # numpy's buffer: the index dims first, in C order, around the subspace (the sliced axes) laid out in the
    # subspace's own memory order (its axes sorted by |stride|, largest first, ties in axis order: a Fortran
    # array's subspace stays Fortran-ordered)
    subspace_shape = tuple(before) + tuple(after)
    outer_first = sorted(range(len(subspace_shape)), key=lambda i: (-abs(subspace_strides[i]), i))
    inner = strides_in_order(subspace_shape, array.dtype.itemsize, outer_first[::-1])
    unit = array.dtype.itemsize * math.prod(subspace_shape)
    strides = c_strides(broadcast, unit) + inner if unit else c_strides(buffer_shape, array.dtype.itemsize)
    if not consecutive or not before:
        return fresh(buffer_shape, array.dtype, strides)
    # numpy fills a buffer with the index dims first, then moves them into place: the result is a view of it
    buffer = fresh(buffer_shape, array.dtype, strides)
    nb, nbefore = len(broadcast), len(before)
    perm = list(range(nb, nb + nbefore)) + list(range(nb)) + list(range(nb + nbefore, len(buffer_shape)))
    return transpose_of(buffer, perm)

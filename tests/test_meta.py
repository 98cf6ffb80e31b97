"""MetaArray against real numpy: for a table of calls, the same shape, dtype, strides, flags and view relation
(new buffer / view of which input / view of a hidden copy), or the same kind of error; and what a shape-only
array cannot do raises TypeError instead of computing on a converted array."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from memstudy.autograd import meta
from memstudy.autograd.meta import MetaArray

F2, F4, F8, I8, B = "float16", "float32", "float64", "int64", "bool"


def real(shape: tuple, dtype: str) -> np.ndarray:
    # ones: valid indices, and no warnings from division, log or sqrt
    return np.ones(shape, dtype)


def describe(result, inputs: list) -> dict:
    """What a call's result is, comparable between numpy and MetaArray (numpy scalars as fresh 0-d arrays)."""
    if isinstance(result, tuple):
        return {"tuple": [describe(r, inputs) for r in result]}
    if isinstance(result, np.generic):
        return dict(shape=(), dtype=result.dtype, strides=(), c=True, f=True, writeable=True, relation="new")
    for i, x in enumerate(inputs):
        if result is x:
            relation = f"is input {i}"
            break
    else:
        if result.base is None:
            relation = "new"
        else:
            index = [i for i, x in enumerate(inputs) if result.base is x]
            relation = f"view of input {index[0]}" if index else "view of a hidden copy"
            # numpy collapses chains of views: the base owns its memory
            assert result.base.base is None
    return dict(shape=result.shape, dtype=result.dtype, strides=result.strides, c=result.flags.c_contiguous,
                f=result.flags.f_contiguous, writeable=result.flags.writeable, relation=relation)


def run(call, specs: list, make):
    inputs = [make(shape, dtype) for shape, dtype in specs]
    return call(*inputs), inputs


# (call, input specs): each call runs on real arrays and on MetaArrays of the same shapes and dtypes
CASES = {
    # broadcasting and python-scalar promotion (NEP 50)
    "add broadcast": (lambda a, b: a + b, [((4, 1), F4), ((3,), F4)]),
    "add broadcast 3-d": (lambda a, b: np.add(a, b), [((2, 1, 5), F8), ((3, 1), F8)]),
    "float32 + python float": (lambda a: a + 1.5, [((3,), F4)]),
    "python int - float32": (lambda a: np.subtract(1, a), [((3, 2), F4)]),
    "float16 * python float": (lambda a: a * 2.5, [((3,), F2)]),
    "int64 * python float": (lambda a: a * 1.5, [((3,), I8)]),
    "int64 / int64": (lambda a, b: a / b, [((3,), I8), ((3,), I8)]),
    "int64 // python int": (lambda a: a // 2, [((3,), I8)]),
    "bool + python int": (lambda a: a + 1, [((3,), B)]),
    "bool & bool": (lambda a, b: a & b, [((3,), B), ((3,), B)]),
    "bool + bool": (lambda a, b: a + b, [((3,), B), ((3,), B)]),
    "float32 + numpy float64 scalar": (lambda a: a + np.float64(1), [((3,), F4)]),
    "float32 + 0-d float64 array": (lambda a: a + np.ones((), F8), [((3,), F4)]),
    "float32 + float16": (lambda a, b: a + b, [((2, 3), F4), ((3,), F2)]),
    "sqrt of int64": (lambda a: np.sqrt(a), [((4,), I8)]),
    "greater gives bool": (lambda a: a > 0, [((4, 2), F4)]),
    "maximum with python int": (lambda a: np.maximum(a, 0), [((4, 2), F2)]),
    "divmod two outputs": (lambda a: np.divmod(a, 2.0), [((4,), F4)]),
    "0-d arithmetic gives a scalar": (lambda a, b: a * b, [((), F4), ((), F4)]),
    "negative of a scalar": (lambda a: -a, [((), F8)]),
    # numpy's output layout (the iterator's K order)
    "exp of a transpose": (lambda a: np.exp(a.T), [((3, 4), F8)]),
    "transposes add": (lambda a, b: a.T + b.T, [((3, 4), F4), ((3, 4), F4)]),
    "C and F operands: C wins": (lambda a, b: a + b.T, [((3, 4), F4), ((4, 3), F4)]),
    "F and C operands: C wins": (lambda a, b: a.T + b, [((4, 3), F4), ((3, 4), F4)]),
    "permuted 3-d": (lambda a: a.transpose(1, 0, 2) * 2, [((3, 4, 5), F8)]),
    "permuted 3-d plus broadcast": (lambda a, b: a.transpose(2, 0, 1) + b, [((3, 4, 5), F8), ((4, 1), F8)]),
    "column plus row": (lambda a, b: a + b, [((4, 1), F8), ((1, 5), F8)]),
    # reductions
    "sum all is a scalar": (lambda a: a.sum(), [((3, 4), F4)]),
    "np.sum axis": (lambda a: np.sum(a, axis=0), [((3, 4), F4)]),
    "sum of bool is int64": (lambda a: np.sum(a, axis=1), [((3, 4), B)]),
    "add.reduce default axis 0": (lambda a: np.add.reduce(a), [((3, 4), F2)]),
    "add.reduce keepdims": (lambda a: np.add.reduce(a, axis=1, keepdims=True), [((3, 4), F4)]),
    "add.reduce axis None keepdims": (lambda a: np.add.reduce(a, axis=None, keepdims=True), [((2, 3, 4), F8)]),
    "maximum.reduce keepdims": (lambda a: np.maximum.reduce(a, axis=1, keepdims=True), [((6, 10), F4)]),
    "reduce of a transpose keepdims": (lambda a: np.maximum.reduce(a.transpose(1, 0, 2), axis=2, keepdims=True),
                                       [((3, 4, 5), F8)]),
    "reduce of an F array": (lambda a: np.add.reduce(np.asfortranarray(a) if isinstance(a, np.ndarray) else
                                                     a.T.copy().T, axis=1, keepdims=True), [((3, 4, 5), F8)]),
    "reduce two axes": (lambda a: np.add.reduce(a, axis=(0, 2)), [((3, 4, 5), F8)]),
    "reduce negative axis": (lambda a: a.sum(axis=-1, keepdims=True), [((3, 4, 5), F4)]),
    "int8-like upcast: sum of int64": (lambda a: a.sum(axis=0), [((3, 2), I8)]),
    "mean of int64 is float64": (lambda a: np.mean(a, axis=0), [((3, 2), I8)]),
    "mean of float16": (lambda a: np.mean(a), [((3, 2), F2)]),
    "max of bool": (lambda a: a.max(axis=0), [((3, 2), B)]),
    "reduce into out": (lambda a, o: np.add.reduce(a, axis=0, out=o), [((3, 4), F4), ((4,), F4)]),
    "argmax": (lambda a: np.argmax(a, axis=1), [((3, 4), F4)]),
    "var keepdims": (lambda a: np.var(a, axis=-1, keepdims=True), [((3, 4), F4)]),
    "std of int64": (lambda a: np.std(a), [((3, 4), I8)]),
    "vdot": (lambda a, b: np.vdot(a, b), [((3, 4), F4), ((12,), F4)]),
    # matmul
    "matmul 2-d": (lambda a, b: a @ b, [((3, 4), F4), ((4, 5), F4)]),
    "matmul transposed operands": (lambda a, b: a.T @ b.T, [((4, 3), F8), ((5, 4), F8)]),
    "matmul batched": (lambda a, b: a @ b, [((2, 3, 4), F4), ((4, 5), F4)]),
    "matmul batch broadcast": (lambda a, b: np.matmul(a, b), [((2, 1, 3, 4), F4), ((5, 4, 6), F4)]),
    "matmul permuted batch": (lambda a, b: a.transpose(1, 0, 2) @ b, [((2, 3, 4), F8), ((3, 4, 5), F8)]),
    "matmul 1-d @ 2-d": (lambda a, b: a @ b, [((4,), F4), ((4, 5), F4)]),
    "matmul 2-d @ 1-d": (lambda a, b: a @ b, [((3, 4), F4), ((4,), F4)]),
    "matmul 1-d @ 1-d is a scalar": (lambda a, b: a @ b, [((4,), F8), ((4,), F8)]),
    "matmul mixed dtypes": (lambda a, b: a @ b, [((3, 4), F4), ((4, 2), F8)]),
    "matmul into out": (lambda a, b, o: np.matmul(a, b, out=o), [((3, 4), F4), ((4, 5), F4), ((3, 5), F4)]),
    # reshape: a view when numpy gives one, else a view of a hidden copy
    "reshape contiguous": (lambda a: a.reshape(4, 3), [((3, 4), F4)]),
    "reshape -1": (lambda a: a.reshape(-1), [((3, 4), F4)]),
    "reshape same shape": (lambda a: a.reshape(3, 4), [((3, 4), F4)]),
    "reshape a view of a view": (lambda a: a[1:].reshape(-1), [((3, 4), F4)]),
    "reshape a transpose copies": (lambda a: a.T.reshape(-1), [((3, 4), F4)]),
    "reshape a column slice copies": (lambda a: a[:, :2].reshape(-1), [((3, 4), F4)]),
    "reshape splitting a strided axis is a view": (lambda a: a[::2].reshape(2, 3, 2), [((4, 6), F8)]),
    "reshape merging a strided axis copies": (lambda a: a[::2].reshape(12), [((4, 6), F8)]),
    "reshape a transpose splitting an axis": (lambda a: a.T.reshape(2, 2, 3), [((3, 4), F8)]),
    "reshape with ones": (lambda a: a.T.reshape(1, 4, 1, 3), [((3, 4), F8)]),
    "np.reshape": (lambda a: np.reshape(a, (2, -1)), [((3, 4), F4)]),
    "expand_dims": (lambda a: np.expand_dims(a, (0, 2)), [((3, 4), F4)]),
    "expand_dims of a transpose": (lambda a: np.expand_dims(a.T, -1), [((3, 4), F4)]),
    "squeeze": (lambda a: a.squeeze(), [((3, 1, 4, 1), F4)]),
    "ravel contiguous": (lambda a: a.ravel(), [((3, 4), F4)]),
    "ravel strided is new": (lambda a: a[::2].ravel(), [((6,), F4)]),
    "ravel a transpose is new": (lambda a: np.ravel(a.T), [((3, 4), F4)]),
    # transpose and friends
    "T": (lambda a: a.T, [((3, 4, 5), F4)]),
    "transpose axes": (lambda a: a.transpose(2, 0, 1), [((3, 4, 5), F4)]),
    "np.transpose negative axes": (lambda a: np.transpose(a, (-1, 0, 1)), [((3, 4, 5), F4)]),
    "np.transpose argsort axes": (lambda a: np.transpose(a, np.argsort((2, 0, 1))), [((3, 4, 5), F4)]),
    "swapaxes": (lambda a: a.swapaxes(0, 2), [((3, 4, 5), F4)]),
    "moveaxis": (lambda a: np.moveaxis(a, 0, -1), [((3, 4, 5), F4)]),
    "broadcast_to is read-only": (lambda a: np.broadcast_to(a, (2, 3, 4)), [((3, 1), F4)]),
    "broadcast_to of a row view": (lambda a: np.broadcast_to(a[0], (3, 4)), [((3, 4), F8)]),
    # basic indexing
    "slice rows": (lambda a: a[1:3], [((4, 5), F4)]),
    "step and integer": (lambda a: a[::2, 1], [((4, 5), F4)]),
    "negative step": (lambda a: a[::-1], [((4, 5), F4)]),
    "newaxis": (lambda a: a[None, :, None], [((4, 5), F4)]),
    "ellipsis": (lambda a: a[..., 0], [((2, 4, 5), F4)]),
    "all integers give a scalar": (lambda a: a[0, -1], [((4, 5), F4)]),
    "integers and ellipsis give a 0-d view": (lambda a: a[0, 1, ...], [((4, 5), F4)]),
    "empty slice": (lambda a: a[3:1], [((4, 5), F4)]),
    "view of a view keeps the owner as base": (lambda a: a[1:][1:][:, ::2], [((4, 5), F4)]),
    # fancy indexing
    "index array first axis": (lambda a, i: a[i], [((4, 5), F4), ((3,), I8)]),
    "two index arrays": (lambda a, i, j: a[i, j], [((4, 5), F4), ((3,), I8), ((3,), I8)]),
    "index arrays broadcast": (lambda a, i, j: a[i, j], [((4, 5), F4), ((3, 1), I8), ((2,), I8)]),
    "index array second axis": (lambda a, i: a[:, i], [((4, 5), F4), ((3,), I8)]),
    "index array in the middle": (lambda a, i: a[:, i, :], [((2, 3, 4), F8), ((2,), I8)]),
    "index arrays separated by a slice": (lambda a, i, j: a[i, :, j], [((2, 3, 4), F8), ((2,), I8), ((2,), I8)]),
    "integer next to an index array": (lambda a, i: a[:, 0, i], [((2, 3, 4), F8), ((2,), I8)]),
    "list index": (lambda a: a[[0, 2]], [((4, 5), F4)]),
    "real boolean mask": (lambda a: a[np.array([True, False, True, False])], [((4, 5), F4)]),
    "softmax pick": (lambda p, y: p[np.arange(p.shape[0], like=p), y], [((6, 10), F4), ((6,), I8)]),
    # astype and copies (numpy's K order keeps a transpose's layout)
    "astype float64": (lambda a: a.astype(F8), [((3, 4), F4)]),
    "astype float16 of a transpose": (lambda a: a.T.astype(F2), [((3, 4), F8)]),
    "astype of a broadcast view": (lambda a: np.broadcast_to(a, (4, 3)).astype(F4), [((3,), F8)]),
    "astype copy=False same dtype is itself": (lambda a: a.astype(F4, copy=False), [((3, 4), F4)]),
    "astype int64 to bool": (lambda a: a.astype(B), [((3,), I8)]),
    "copy is C order": (lambda a: a.T.copy(), [((3, 4), F4)]),
    "np.copy keeps the order": (lambda a: np.copy(a.T), [((3, 4), F4)]),
    "np.copy of a permutation": (lambda a: np.copy(a.transpose(1, 0, 2)), [((3, 4, 5), F4)]),
    # creation, with like=
    "empty like=": (lambda a: np.empty((2, 3), dtype=F4, like=a), [((1,), F4)]),
    "zeros like= int64": (lambda a: np.zeros(5, dtype=I8, like=a), [((1,), F4)]),
    "ones like= F order": (lambda a: np.ones((2, 3), order="F", like=a), [((1,), F4)]),
    "full like=": (lambda a: np.full((2, 2), 1.5, like=a), [((1,), F4)]),
    "arange like=": (lambda a: np.arange(7, like=a), [((1,), F4)]),
    "arange floats like=": (lambda a: np.arange(1, 10, 2.5, like=a), [((1,), F4)]),
    "asarray scalar like=": (lambda a: np.asarray(2.0, dtype=F4, like=a), [((1,), F4)]),
    "asarray of itself like=": (lambda a: np.asarray(a, like=a), [((2,), F8)]),
    "empty_like of a transpose": (lambda a: np.empty_like(a.T), [((3, 4), F4)]),
    "zeros_like of a permutation": (lambda a: np.zeros_like(a.transpose(1, 0, 2)), [((3, 4, 5), F4)]),
    "zeros_like of a broadcast view": (lambda a: np.zeros_like(np.broadcast_to(a, (4, 3))), [((3,), F8)]),
    "ones_like dtype": (lambda a: np.ones_like(a, dtype=F2), [((3, 4), F4)]),
    "full_like": (lambda a: np.full_like(a, 7), [((3, 4), I8)]),
    "concatenate": (lambda a, b: np.concatenate([a, b], axis=1), [((3, 4), F4), ((3, 2), F8)]),
    "stack": (lambda a, b: np.stack([a, b], axis=-1), [((3, 4), F4), ((3, 4), F4)]),
    "where": (lambda c, a: np.where(c, a, 0.0), [((3, 1), B), ((4,), F4)]),
    "triu": (lambda a: np.triu(a), [((4, 4), F4)]),
    # in place, with out=
    "multiply out=": (lambda a: np.multiply(a, 2.0, out=a), [((3, 4), F4)]),
    "iadd broadcast": (lambda a, b: a.__iadd__(b), [((3, 4), F4), ((4,), F4)]),
    "itruediv": (lambda a, b: a.__itruediv__(b), [((3, 4), F8), ((3, 1), F8)]),
    "imatmul": (lambda a, b: a.__imatmul__(b), [((3, 3), F8), ((3, 3), F8)]),
    "greater into a float out": (lambda a, o: np.greater(a, 0, out=o), [((3, 4), F4), ((3, 4), F4)]),
    "exp into a slice": (lambda a: np.exp(a[:2], out=a[:2]), [((3, 4), F4)]),
    "multiply into a column out": (lambda a, o: np.multiply(a, 3, out=o), [((3,), F8), ((2, 3), F8)]),
    "ufunc dtype=": (lambda a, b: np.add(a, b, dtype=F8), [((3,), F4), ((3,), F4)]),
    "add where= into out": (lambda a, m, o: np.add(o, a, out=o, where=m), [((3, 4), F4), ((3, 4), B), ((3, 4), F4)]),
    "add where= a broadcast mask": (lambda a, m: np.add(a, 1, out=None, where=m), [((3, 4), F4), ((3, 1), B)]),
    "where= that does not broadcast raises": (lambda a, m: np.add(a, 1, out=None, where=m), [((3, 4), F4), ((2, 1), B)]),
    # einsum (letters; the per-channel sums of products of batch norm)
    "einsum per-channel dot": (lambda a, b: np.einsum("ncp,ncp->c", a, b), [((2, 3, 4), F4), ((2, 3, 4), F4)]),
    "einsum implicit output": (lambda a, b: np.einsum("ij,jk", a, b), [((2, 3), F8), ((3, 4), F8)]),
    "einsum mixed dtypes": (lambda a, b: np.einsum("ij,ij->j", a, b), [((2, 3), F4), ((2, 3), F8)]),
    "einsum mismatched sizes raise": (lambda a, b: np.einsum("ij,ij->i", a, b), [((2, 3), F4), ((4, 3), F4)]),
    # numpy raises: so must MetaArray
    "mismatched broadcast raises": (lambda a, b: a + b, [((3,), F4), ((4,), F4)]),
    "matmul mismatch raises": (lambda a, b: a @ b, [((3, 4), F4), ((3, 4), F4)]),
    "matmul of a 0-d raises": (lambda a, b: np.matmul(a, b), [((), F4), ((3,), F4)]),
    "reshape to a wrong size raises": (lambda a: a.reshape(5, -1), [((3, 4), F4)]),
    "out cast float to int raises": (lambda a, o: np.add(a, 1, out=o), [((3,), F4), ((3,), I8)]),
    "out of the wrong shape raises": (lambda a, o: np.add(a, 1, out=o), [((3, 4), F4), ((1, 4), F4)]),
    "negative of bool raises": (lambda a: -a, [((3,), B)]),
    "broadcast_to a smaller shape raises": (lambda a: np.broadcast_to(a, (3,)), [((2, 3), F4)]),
    "writing to a broadcast view raises": (lambda a: np.broadcast_to(a, (2, 3)).__iadd__(1), [((3,), F4)]),
    "index out of bounds raises": (lambda a: a[5], [((4, 5), F4)]),
    "too many indices raise": (lambda a: a[0, 0, 0], [((4, 5), F4)]),
    "axis out of range raises": (lambda a: a.sum(axis=2), [((4, 5), F4)]),
    "maximum of an empty axis raises": (lambda a: np.maximum.reduce(a, axis=0), [((0, 3), F4)]),
    "index arrays that do not broadcast raise": (lambda a, i, j: a[i, j], [((4, 5), F4), ((3,), I8), ((2,), I8)]),
    "float index array raises": (lambda a, i: a[i], [((4, 5), F4), ((2,), F4)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_meta_matches_numpy(name):
    call, specs = CASES[name]
    try:
        expected, real_inputs = run(call, specs, real)
    except Exception as numpy_error:  # numpy refuses: MetaArray must refuse with the same kind of error
        with pytest.raises(Exception) as raised:
            run(call, specs, MetaArray)
        assert isinstance(numpy_error, raised.type), (numpy_error, raised.value)
        return
    got, meta_inputs = run(call, specs, MetaArray)
    assert isinstance(got, tuple) or isinstance(got, MetaArray), f"{name}: got {type(got).__name__}"
    assert describe(got, meta_inputs) == describe(expected, real_inputs)


def test_nbytes_size_itemsize_ndim():
    m, a = MetaArray((3, 4), F2), np.ones((3, 4), F2)
    v, w = m[:, 1:3], a[:, 1:3]
    for x, y in ((m, a), (v, w), (m.T, a.T), (m.sum(), np.asarray(a.sum()))):
        assert (x.nbytes, x.size, x.itemsize, x.ndim) == (y.nbytes, y.size, y.itemsize, y.ndim)


def test_views_keep_their_base_alive_and_buffers_are_weakrefable():
    owner = MetaArray((4, 5), F4)
    dead = weakref.ref(owner)
    view = owner.T[1:]
    assert view.base is owner
    del owner
    gc.collect()
    assert dead() is not None  # the view holds it, as a numpy view holds its base
    del view
    assert dead() is None  # freed by reference counting alone: no cycle


def test_fake_addresses_follow_views():
    m = MetaArray((4, 5), F8)
    assert m[1].address == m.address + 5 * 8
    assert m[:, 2].address == m.address + 2 * 8
    assert m[1:].address != m.address and MetaArray((1,), F8).address not in range(m.address, m.address + m.nbytes)


def test_setitem_checks_but_writes_nothing():
    m = MetaArray((4, 5), F4)
    m[1:3] = 0.0
    m[np.arange(2, like=m), MetaArray((2,), I8)] -= 1
    with pytest.raises(ValueError):
        m[1:3] = MetaArray((3, 5), F4)
    with pytest.raises(ValueError):
        np.broadcast_to(m[0], (2, 5))[0] = 1.0
    m[m > 0] = -np.inf  # a masked fill: a scalar into a shape-only mask's unknown selection
    with pytest.raises(TypeError):
        m[m > 0] = MetaArray((3,), F4)


def test_copyto_a_python_number_follows_numpy():
    """A Python number is a weak scalar (NEP 50): an int goes into uint8, a float does not (same_kind)."""
    for make in (real, MetaArray):
        positions, mask = make((3, 4), "uint8"), make((3, 4), B)
        np.copyto(positions, 3, where=mask)
        with pytest.raises(TypeError):
            np.copyto(positions, 1.5)


def test_scalar_conversion_is_neutral_on_one_element_only():
    assert float(MetaArray((), F4)) == 1.0 and int(MetaArray((1,), I8)) == 1
    with pytest.raises(TypeError):
        float(MetaArray((2,), F4))


# Calls a shape-only array cannot answer: each raises TypeError, none converts the array and computes
UNSUPPORTED = {
    "np.asarray": lambda m: np.asarray(m),
    "np.array": lambda m: np.array(m),
    "ndarray operand into a real out": lambda m: np.add(m, 1, out=np.ones(m.shape, F4)),
    "real array += MetaArray": lambda m: np.ones(m.shape, F4).__iadd__(m),
    "np.linalg.norm ord=2 of a matrix": lambda m: np.linalg.norm(m, ord=2),
    "ufunc reduceat": lambda m: np.add.reduceat(m, [0, 1]),
    "truth value": lambda m: bool(m),
    "item": lambda m: m.item(),
    "tolist": lambda m: m.tolist(),
    "iteration": lambda m: list(m),
    "as an index": lambda m: [1, 2, 3][m.sum().astype(I8)],
    "as a size": lambda m: np.empty(m.sum().astype(I8)),
    "boolean mask": lambda m: m[m > 0],
    "np.where of one argument": lambda m: np.where(m > 0),
    "arange with a shape-only bound": lambda m: np.arange(m.sum(), like=m),
    "asarray of a real array like=": lambda m: np.asarray(np.ones(3), like=m),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_raises_type_error(name):
    with pytest.raises(TypeError):
        UNSUPPORTED[name](MetaArray((3, 4), F4))


def test_cost_does_not_depend_on_size():
    """Terabyte-sized shapes: every call answers from the shapes alone (numpy would need the memory)."""
    n = 10 ** 6
    a = MetaArray((n, n), F8)  # 8 TB
    b = (a @ a.T + 1.0).sum(axis=1, keepdims=True)
    c = np.maximum.reduce(np.exp(a[:, ::2]), axis=0)
    d = a.T.reshape(-1)  # a copy, as numpy's: a hidden 8 TB buffer it is a view of
    assert (b.shape, c.shape, d.shape, d.base.nbytes) == ((n, 1), (n // 2,), (n * n,), 8 * n * n)


def test_meta_mode_makes_nn_init_shape_only():
    from memstudy.nn import init

    rng = np.random.default_rng(0)
    assert not meta.is_active()
    with meta.meta_mode():
        assert meta.is_active()
        w = init.uniform(rng, -1, 1, (3, 4), F4)
        y = init.integers(rng, 0, 10, 5)
    assert not meta.is_active()
    assert isinstance(w, MetaArray) and (w.shape, w.dtype) == ((3, 4), np.dtype(F4))
    assert isinstance(y, MetaArray) and (y.shape, y.dtype) == ((5,), np.dtype(I8))
    assert isinstance(init.uniform(rng, -1, 1, (3, 4), F4), np.ndarray)

"""`saved_buffers`: what a training graph holds for backward, counted by hand."""
from __future__ import annotations

import numpy as np
import pytest

import memstudy
from memstudy import nn
from memstudy.autograd import Tensor, saved_buffers, saved_bytes
from memstudy.nn import MLP

DEPTH, WIDTH, CLASSES, BATCH, ITEM = 8, 256, 10, 64, 4  # float32


def mlp_graph(activation, bias):
    model = MLP(WIDTH, WIDTH, DEPTH, CLASSES, activation=activation, bias=bias, dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(BATCH, WIDTH)).astype(np.float32))
    y = rng.integers(0, CLASSES, size=BATCH)
    loss = nn.cross_entropy(model(x), y)
    return model, x, y, loss


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_mlp_saved_buffers_by_hand(activation, bias):
    model, x, y, loss = mlp_graph(activation, bias)
    buffers = saved_buffers(loss, inputs=[x, y])
    by_kind = {kind: [b for b in buffers if b.kind == kind] for kind in ("activation", "input", "parameter")}
    assert sum(len(v) for v in by_kind.values()) == len(buffers)

    # activations: one (64, 256) per hidden layer, saved by the activation AND the next Linear, listed once;
    # then the softmax probabilities. The pre-activations are not saved (the activations save their output).
    acts = by_kind["activation"]
    assert len(acts) == DEPTH + 1
    hidden, probs = acts[:DEPTH], acts[DEPTH]
    for layer, b in enumerate(hidden):
        assert (b.shape, b.dtype, b.nbytes) == ((BATCH, WIDTH), "float32", BATCH * WIDTH * ITEM)
        assert b.op == activation and b.role == "out" and b.layer == layer
        assert b.saved_by == (activation, "linear")
    # the loss is outside every layer_scope
    assert (probs.shape, probs.dtype, probs.role, probs.layer) == ((BATCH, CLASSES), "float32", "probs", None)
    assert probs.saved_by == ("softmax_cross_entropy",)
    activation_bytes = DEPTH * BATCH * WIDTH * ITEM + BATCH * CLASSES * ITEM
    assert sum(b.nbytes for b in acts) == activation_bytes
    assert saved_bytes(loss, inputs=[x, y]) == activation_bytes

    # inputs: x (saved by the first Linear for its weight gradient) and the labels
    inputs = by_kind["input"]
    assert [(b.role, b.shape, b.nbytes) for b in inputs] == [
        ("x", (BATCH, WIDTH), x.nbytes), ("labels", (BATCH,), y.nbytes)]
    assert saved_bytes(loss, inputs=[x, y], kind="input") == x.nbytes + y.nbytes

    # parameters: every weight whose layer's input needs a gradient, i.e. all but the first; never a bias
    params = by_kind["parameter"]
    weights = [layer.weight for layer in model.linears]
    assert [b.shape for b in params] == [w.shape for w in weights[1:]]
    assert all(b.role == "weight" and b.saved_by == ("linear",) for b in params)
    assert [b.layer for b in params] == list(range(1, DEPTH + 1))
    assert saved_bytes(loss, inputs=[x, y], kind="parameter") == sum(w.nbytes for w in weights[1:])

    # buffers are listed in forward order, each where it was first saved
    expected = [("input", "x", 0), ("activation", "out", 0)]
    for layer in range(1, DEPTH):
        expected += [("parameter", "weight", layer), ("activation", "out", layer)]
    expected += [("parameter", "weight", DEPTH), ("activation", "probs", None), ("input", "labels", None)]
    assert [(b.kind, b.role, b.layer) for b in buffers] == expected

    # after backward everything is released
    loss.backward()
    assert saved_buffers(loss, inputs=[x, y]) == []
    assert saved_bytes(loss) == 0


def test_without_inputs_argument_a_leaf_tensor_is_caller_owned_and_an_array_an_activation():
    # the graph cannot tell the batch from a frozen weight: a leaf tensor not among `inputs` is model state;
    # a plain array (the labels) that is not among `inputs` is counted with the activations
    model, x, y, loss = mlp_graph("relu", True)
    weights = sum(layer.weight.nbytes for layer in model.linears[1:])
    assert saved_bytes(loss) == saved_bytes(loss, inputs=[x, y]) + y.nbytes
    assert saved_bytes(loss, kind="parameter") == weights + x.nbytes
    assert saved_bytes(loss, inputs=[x, y], kind="parameter") == weights


def test_input_that_requires_grad_is_a_parameter_kind_leaf():
    model, _, y, _ = mlp_graph("relu", True)
    x = Tensor(np.ones((BATCH, WIDTH), dtype=np.float32), requires_grad=True)
    loss = nn.cross_entropy(model(x), y)
    kinds = {b.role: b.kind for b in saved_buffers(loss, inputs=[x, y]) if b.layer == 0}
    assert kinds["x"] == "parameter"  # a leaf that requires grad
    assert kinds["weight"] == "parameter"  # now the first weight is saved too: x needs its gradient


def test_no_grad_graph_holds_nothing():
    model, x, y, _ = mlp_graph("relu", True)
    with memstudy.no_grad():
        loss = nn.cross_entropy(model(x), y)
    assert saved_buffers(loss, inputs=[x, y]) == []


# --- a buffer saved twice, or through views, counts once -----------------------------------------------


def test_buffer_saved_through_a_transpose_view_counts_once():
    z = Tensor(np.random.default_rng(0).normal(size=(5, 3)), requires_grad=True)
    t = z.relu()
    out = (t.T @ t).sum()  # relu saves t; matmul saves t.T (a view of t) and t
    buffers = saved_buffers(out)
    assert len(buffers) == 1
    (b,) = buffers
    assert b.saved_by == ("relu", "matmul", "matmul")
    assert b.nbytes == t.data.nbytes == 5 * 3 * 8
    assert saved_bytes(out) == 5 * 3 * 8
    out.backward()
    relu_mask = z.data > 0
    np.testing.assert_allclose(z.grad, 2 * (t.data @ np.ones((3, 3))) * relu_mask)


def test_buffer_saved_through_a_reshape_counts_once():
    z = Tensor(np.random.default_rng(1).normal(size=(4, 6)), requires_grad=True)
    w = Tensor(np.ones(24), requires_grad=True)
    e = z.exp()  # saves e
    r = e.reshape(-1)  # a view of e, saved again by the multiply (for w's gradient)
    out = (r * w).sum()
    buffers = [b for b in saved_buffers(out) if b.kind == "activation"]
    assert len(buffers) == 1 and buffers[0].saved_by == ("exp", "mul") and buffers[0].shape == (4, 6)
    assert saved_bytes(out) == 4 * 6 * 8


def test_two_views_of_one_input_count_once_by_the_base():
    base = np.random.default_rng(2).normal(size=(4, 6))
    x = Tensor(base)
    w1 = Tensor(np.ones((6, 2)), requires_grad=True)
    w2 = Tensor(np.ones((3, 2)), requires_grad=True)
    a = x.reshape(6, 4).T  # (4, 6) view
    b = x.reshape(8, 3)  # another view of the same buffer
    out = (a @ w1).sum() + (b @ w2).sum()
    buffers = saved_buffers(out, inputs=[x])
    inputs = [bf for bf in buffers if bf.kind == "input"]
    assert len(inputs) == 1 and inputs[0].nbytes == base.nbytes and inputs[0].shape == (4, 6)
    assert inputs[0].saved_by == ("matmul", "matmul")
    assert saved_bytes(out, inputs=[x]) == 0


def test_distinct_buffers_of_equal_content_count_twice():
    z = Tensor(np.ones((2, 3)), requires_grad=True)
    out = (z.exp() + z.exp()).sum()  # two exps save two different buffers
    assert len(saved_buffers(out)) == 2
    assert saved_bytes(out) == 2 * 2 * 3 * 8

"""The README's promises of the form "X only when Y", each tested where it could break.

- Linear saves its input only when the weight needs a gradient (a frozen weight: its input is not kept);
- nothing is saved under `no_grad`, nor by an op none of whose inputs needs a gradient;
- an input that needs no gradient gets none, and costs nothing extra (no gradient buffer, no saved weight);
- a frozen weight (`requires_grad = False`) is model state: `parameter` in `saved_buffers` and in the ledger,
  never an activation; the optimiser leaves it alone and keeps no state for it;
- ReLU's saved output is the next Linear's saved input: one buffer, counted once.

Sizes are tiny and float64 so that every byte figure is worked out by hand below.
"""
from __future__ import annotations

import numpy as np
import pytest

import memstudy
from memstudy import nn, optim
from memstudy.autograd import Tensor, layer_scope, no_grad, saved_buffers, saved_bytes
from memstudy.measure.ledger import Ledger
from memstudy.nn import MLP
from memstudy.nn.layers import Linear, Module

B, IN, H, C, ITEM = 5, 4, 6, 3, 8  # batch, in features, hidden, classes, float64


class TwoLinear(Module):
    """L2(L1(x)) with no activation between: L1's output is held for backward only if L2 saves its input."""

    def __init__(self, freeze: str = ""):
        rng = np.random.default_rng(0)
        self.l1 = Linear(IN, H, dtype="float64", seed=rng)
        self.l2 = Linear(H, C, dtype="float64", seed=rng)
        for name in freeze.split(","):
            if name:
                for p in getattr(self, name).parameters():
                    p.requires_grad = False

    def parameter_layers(self) -> list[int | None]:
        return [0, 0, 1, 1]

    def forward(self, x):
        with layer_scope(0):
            h = self.l1(x)
        with layer_scope(1):
            return self.l2(h)


def batch():
    rng = np.random.default_rng(1)
    return Tensor(rng.standard_normal((B, IN))), rng.integers(0, C, size=B)


def kinds(loss, x, y):
    return [(b.kind, b.role, b.layer, b.nbytes) for b in saved_buffers(loss, inputs=[x, y])]


# --- Linear saves its input only when the weight needs a gradient -----------------------------------------

def test_frozen_second_weight_is_a_parameter_and_its_input_is_not_saved():
    model = TwoLinear(freeze="l2")
    x, y = batch()
    loss = nn.cross_entropy(model(x), y)
    # L1 keeps x (its weight needs a gradient); L2 keeps only its weight (to pass the gradient on to L1),
    # not its input h = L1(x) (its weight needs none): so no activation but the softmax probabilities
    assert kinds(loss, x, y) == [
        ("input", "x", 0, B * IN * ITEM),
        ("parameter", "weight", 1, C * H * ITEM),
        ("activation", "probs", None, B * C * ITEM),
        ("input", "labels", None, B * 8),
    ]
    assert saved_bytes(loss, inputs=[x, y]) == B * C * ITEM
    # and the gradient L1 gets through the frozen L2 is the one it gets when L2 trains too
    loss.backward()
    reference = TwoLinear()
    nn.cross_entropy(reference(x), y).backward()
    assert model.l2.weight.grad is None and model.l2.bias.grad is None
    np.testing.assert_array_equal(model.l1.weight.grad, reference.l1.weight.grad)
    np.testing.assert_array_equal(model.l1.bias.grad, reference.l1.bias.grad)


def test_trainable_second_weight_saves_its_input():
    model = TwoLinear()
    x, y = batch()
    loss = nn.cross_entropy(model(x), y)
    assert ("activation", "x", 1, B * H * ITEM) in kinds(loss, x, y)  # h = L1(x), L2's weight needs it


def test_frozen_layer_in_an_mlp_does_not_save_its_input():
    model = MLP(IN, H, 3, C, dtype="float64", seed=0)
    for p in model.hidden_layers[1].parameters():
        p.requires_grad = False
    x, y = batch()
    loss = nn.cross_entropy(model(x), y)
    hidden = [b for b in saved_buffers(loss, inputs=[x, y]) if b.kind == "activation" and b.role == "out"]
    # h0 is saved by ReLU 0 only (the frozen Linear 1 does not need it); h1, h2 by their ReLU and the next Linear
    assert [b.saved_by for b in hidden] == [("relu",), ("relu", "linear"), ("relu", "linear")]
    frozen = [b for b in saved_buffers(loss, inputs=[x, y]) if b.layer == 1 and b.role == "weight"]
    assert [(b.kind, b.nbytes) for b in frozen] == [("parameter", H * H * ITEM)]


# --- a frozen weight is model state, in saved_buffers and in the ledger, measured and predicted ----------

@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_frozen_weight_is_model_state_in_the_ledger_and_the_prediction(optimizer):
    model = TwoLinear(freeze="l2")
    x, y = batch()
    result = memstudy.measure_model(model, x, y, optimizer=optimizer)
    row = result.rows[0]
    l1_bytes = (IN * H + H) * ITEM
    l2_bytes = (H * C + C) * ITEM
    assert row["parameter_bytes"] == l1_bytes + l2_bytes  # frozen ones included: they are held all the same
    assert row["activation_bytes"] == B * C * ITEM  # the probabilities only: L2's weight is no activation
    assert row["optimizer_state_bytes"] == (2 * l1_bytes if optimizer == "adam" else 0)  # nothing for L2
    assert result.account.max_by_category["gradient"] == l1_bytes
    weight = [b for b in result.account.buffers if b.shape == (C, H)]
    assert [(b.category, b.saved_by) for b in weight] == [("parameter", "linear")]
    # the prediction runs the same step on a shape-only copy: it equals the ledger
    predicted = result.predicted
    for field in ("peak_bytes", "step_peak_bytes", "activation_bytes", "saved_tensors"):
        assert getattr(predicted, field) == getattr(result.account, field), field
    assert predicted.registered_bytes == result.account.registered_bytes
    assert predicted.peak_by_category == result.account.peak_by_category
    # the optimiser left the frozen layer alone
    assert model.l2.weight.grad is None


def test_frozen_first_layer_output_is_an_activation_not_model_state():
    # L1 frozen, L2 trainable: L1 records no graph (no input of it needs a gradient), yet its output is made
    # by an op, and L2 saves it: an activation, although no recorded node produced it
    model = TwoLinear(freeze="l1")
    x, y = batch()
    loss = nn.cross_entropy(model(x), y)
    assert kinds(loss, x, y) == [
        ("activation", "x", 1, B * H * ITEM),
        ("activation", "probs", None, B * C * ITEM),
        ("input", "labels", None, B * 8),
    ]
    result = memstudy.measure_model(TwoLinear(freeze="l1"), x, y)
    assert result.rows[0]["activation_bytes"] == (B * H + B * C) * ITEM
    assert result.predicted.activation_bytes == result.account.activation_bytes


def test_frozen_weight_through_detach_stays_what_it_was():
    # a detached op output is still a buffer an op made; a detached parameter is still caller-owned
    w = Tensor(np.ones((H, IN)), requires_grad=True)
    x, _ = batch()
    h = (x @ Tensor(np.ones((IN, H)))).detach()  # an op's output, recorded by no graph
    out = (h @ w).sum()
    assert [(b.kind, b.role) for b in saved_buffers(out, inputs=[x])] == [("activation", "a")]
    frozen = w.detach()
    z = Tensor(np.ones((B, H)), requires_grad=True)
    out = (z @ frozen).sum()
    assert [(b.kind, b.role) for b in saved_buffers(out, inputs=[x])] == [("parameter", "b")]


def test_named_parameters_lists_frozen_ones_and_optimisers_skip_them():
    model = TwoLinear(freeze="l2")
    assert [name for name, _ in model.named_parameters()] == ["l1.weight", "l1.bias", "l2.weight", "l2.bias"]
    frozen_before = model.l2.weight.data.copy()
    x, y = batch()
    for make in (optim.SGD, optim.Momentum, optim.Adam):
        opt = make(model.parameters())  # PyTorch's idiom: every parameter, the frozen ones are skipped
        opt.zero_grad()
        nn.cross_entropy(model(x), y).backward()
        opt.step()
        np.testing.assert_array_equal(model.l2.weight.data, frozen_before)
        assert sum(a.nbytes for a in opt.state_arrays()) <= 2 * (IN * H + H) * ITEM  # none for the frozen layer


# --- nothing is saved under no_grad, nor when no input needs a gradient ------------------------------

def ledger_account(run, model, *inputs) -> tuple:
    """`run()` under a ledger whose baseline is the model's parameters and the inputs (as a measured step's)."""
    ledger = Ledger()
    ledger.register_model(model.parameters(), model.parameter_layers())
    for array in inputs:
        ledger.register(array.data if isinstance(array, Tensor) else array, "input")
    ledger.start()
    try:
        out = run()
        account = ledger.finish()
    finally:
        ledger.stop()
    return out, account


@pytest.mark.parametrize("frozen", [False, True])
def test_nothing_is_saved_under_no_grad_or_without_an_input_that_needs_a_gradient(frozen):
    model = MLP(IN, H, 3, C, dtype="float64", seed=0)
    x, y = batch()
    if frozen:  # grad enabled, but nothing needs a gradient: no graph either
        for p in model.parameters():
            p.requires_grad = False
        out, account = ledger_account(lambda: nn.cross_entropy(model(x), y), model, x, y)
    else:
        with no_grad():
            out, account = ledger_account(lambda: nn.cross_entropy(model(x), y), model, x, y)
    assert out.requires_grad is False and out.is_leaf
    assert [b for b in account.buffers if b.saved_by is not None] == []
    assert account.activation_bytes == 0 and account.saved_tensors == 0
    # each layer's output is freed once the next layer has used it: never more than two (B, H) buffers live
    assert account.max_by_category["temporary"] <= 2 * B * H * ITEM


# --- an input that needs no gradient gets none and costs nothing extra ---------------------------------

def test_input_without_gradient_gets_none_and_costs_nothing_extra():
    def step(x):
        model = MLP(IN, H, 2, C, dtype="float64", seed=0)
        y = np.arange(B) % C
        _, account = ledger_account(lambda: nn.cross_entropy(model(x), y).backward(), model, x, y)
        return account

    rng = np.random.default_rng(2)
    plain = Tensor(rng.standard_normal((B, IN)))
    account = step(plain)
    assert plain.grad is None
    made = [b for b in account.buffers if b.shape == (B, IN) and b.registered is None]
    assert made == []  # no gradient of x was ever made (the only (B, IN) buffer is x itself, registered)
    # the same input requiring a gradient: it gets one, and the first weight is saved to compute it
    wanted = Tensor(plain.data.copy(), requires_grad=True)
    with_grad = step(wanted)
    assert wanted.grad is not None and wanted.grad.shape == (B, IN)
    grads_of_x = [b for b in with_grad.buffers if b.shape == (B, IN) and b.registered is None]
    assert [(b.op, b.category) for b in grads_of_x] == [("linear_backward", "gradient")]
    assert with_grad.max_by_category["gradient"] - account.max_by_category["gradient"] == B * IN * ITEM


def test_first_linear_saves_its_weight_only_when_the_input_needs_a_gradient():
    model = MLP(IN, H, 2, C, dtype="float64", seed=0)
    x, y = batch()
    loss = nn.cross_entropy(model(x), y)
    first = [b for b in saved_buffers(loss, inputs=[x, y]) if b.layer == 0]
    assert [(b.kind, b.role) for b in first] == [("input", "x"), ("activation", "out")]
    z = Tensor(x.data, requires_grad=True)
    loss = nn.cross_entropy(model(z), y)
    first = [b for b in saved_buffers(loss, inputs=[z, y]) if b.layer == 0]
    assert [(b.kind, b.role) for b in first] == [("parameter", "x"), ("parameter", "weight"), ("activation", "out")]


# --- ReLU's saved output is the next Linear's saved input: one buffer, counted once ----------------------

def test_relu_output_and_next_linear_input_are_one_buffer_counted_once():
    depth = 3
    model = MLP(IN, H, depth, C, dtype="float64", seed=0)
    x, y = batch()
    loss = nn.cross_entropy(model(x), y)
    hidden = [b for b in saved_buffers(loss, inputs=[x, y]) if b.kind == "activation" and b.role == "out"]
    assert [b.saved_by for b in hidden] == [("relu", "linear")] * depth
    # the very array objects: what each Linear saved as `x` is the array its ReLU saved as `out`
    nodes = {(n.fn.name, n.layer): n for n in memstudy.autograd.engine.walk(loss)}
    for layer in range(depth):
        relu_out = dict(zip(nodes["relu", layer].saved_roles, nodes["relu", layer].saved))["out"]
        linear_x = dict(zip(nodes["linear", layer + 1].saved_roles, nodes["linear", layer + 1].saved))["x"]
        assert linear_x is relu_out
    # and the ledger counts it once: depth hidden buffers and the probabilities, nothing else
    work_model = MLP(IN, H, depth, C, dtype="float64", seed=0)
    _, account = ledger_account(lambda: nn.cross_entropy(work_model(x), y), work_model, x, y)
    assert account.activation_bytes == (depth * B * H + B * C) * ITEM
    assert account.saved_tensors == depth + 1

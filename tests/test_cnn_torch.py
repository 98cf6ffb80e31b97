"""nn.CNN against the same network in PyTorch: gradients (float64, weights copied by name) and saved bytes."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import rel_error
from memstudy import nn
from memstudy.autograd import Tensor, saved_buffers

torch = pytest.importorskip("torch")

TOL = 1e-9


class TorchBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, batch_norm):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=not batch_norm)
        self.bn = torch.nn.BatchNorm2d(out_channels) if batch_norm else None
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2, 2)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.pool(self.relu(x))


class TorchCNN(torch.nn.Module):
    """The issue's network, module names chosen so that `named_parameters()` matches nn.CNN's."""

    def __init__(self, in_channels, width, depth, classes, batch_norm):
        super().__init__()
        channels = [in_channels] + [width * 2 ** i for i in range(depth)]
        self.features = torch.nn.Sequential(*[TorchBlock(channels[i], channels[i + 1], batch_norm)
                                              for i in range(depth)])
        self.classifier = torch.nn.Linear(channels[-1], classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))  # the global average pool


def pair(batch_norm, depth=3, width=4, in_channels=3, classes=5, conv_save="input", checkpoint="none", seed=3):
    """nn.CNN in float64 and the PyTorch twin with the same weights (copied by name)."""
    ours = nn.CNN(in_channels, width, depth, classes, batch_norm=batch_norm, conv_save=conv_save, dtype="float64",
                  seed=seed, checkpoint=checkpoint)
    theirs = TorchCNN(in_channels, width, depth, classes, batch_norm).double()
    rng = np.random.default_rng(seed + 100)
    with torch.no_grad():
        named = dict(theirs.named_parameters())
        assert sorted(named) == sorted(name for name, _ in ours.named_parameters())
        for name, p in ours.named_parameters():
            if name.endswith("bn.weight") or name.endswith("bn.bias"):  # away from 1 and 0: a real test of γ, β
                p.data[...] = rng.uniform(0.5, 1.5, p.shape) * (1 if name.endswith("weight") else 0.3)
            assert named[name].shape == p.shape, name
            named[name].copy_(torch.from_numpy(p.data))
    return ours, theirs


@pytest.mark.parametrize("conv_save", ["input", "columns"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_gradients_match_pytorch(batch_norm, conv_save):
    ours, theirs = pair(batch_norm, conv_save=conv_save)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 16, 16))
    y = rng.integers(0, 5, size=6)

    loss = nn.cross_entropy(ours(x), y)
    loss.backward()
    t_loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
    t_loss.backward()

    assert rel_error(loss.data, t_loss.item()) < TOL
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        assert rel_error(p.grad, t_params[name].grad.numpy()) < TOL, name
    # the running statistics took the same step (model state: updated in forward, never a gradient)
    t_buffers = dict(theirs.named_buffers())
    for name, array in ours.named_buffers():
        assert rel_error(array, t_buffers[name].numpy()) < TOL, name
    assert len(ours.named_buffers()) == (2 * 3 if batch_norm else 0)


def test_inference_uses_running_statistics_like_pytorch_eval():
    ours, theirs = pair(True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 8, 8))
    ours(x)  # one training forward: the running statistics move away from (0, 1)
    theirs(torch.from_numpy(x))
    ours.eval()
    theirs.eval()
    x2 = rng.normal(size=(3, 3, 8, 8))
    assert rel_error(ours(x2).data, theirs(torch.from_numpy(x2)).detach().numpy()) < TOL


def torch_saved_bytes(model, x):
    """Bytes of the distinct storages PyTorch's autograd saves during model(x), parameters and buffers excluded;
    and the number of pooled elements (outputs of max-pool, whose int64 indices it saves)."""
    excluded = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    storages = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in excluded:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return sum(storages.values()), out


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("image_size", [8, 16])
def test_saved_bytes_match_pytorch_up_to_the_pooling_indices(batch_norm, image_size):
    depth, width, batch = 3, 4, 5
    ours, theirs = pair(batch_norm, depth=depth, width=width)
    x = np.random.default_rng(2).normal(size=(batch, 3, image_size, image_size))

    out = ours(x)
    held = saved_buffers(out, [x])
    our_bytes = sum(b.nbytes for b in held if b.kind in ("activation", "input"))
    their_bytes, _ = torch_saved_bytes(theirs, torch.from_numpy(x))

    # PyTorch's max-pool saves an int64 index per output element, ours a uint8 position in the window
    pooled = sum(batch * width * 2 ** i * (image_size >> (i + 1)) ** 2 for i in range(depth))
    positions = [b for b in held if b.op == "max_pool2d"]
    assert sum(b.nbytes for b in positions) == pooled and all(b.dtype == "uint8" for b in positions)
    assert their_bytes - our_bytes == 7 * pooled

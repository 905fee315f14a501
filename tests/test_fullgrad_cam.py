"""Tests for pytorch_grad_cam.fullgrad_cam.FullGrad."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from snapshot import ModelSnapshot, expect_clean_error

from pytorch_grad_cam import FullGrad


class Net(nn.Module):
    """conv(bias) -> BN -> ReLU -> conv(no bias) -> ReLU -> GAP -> linear: piecewise linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(h)).mean(dim=(2, 3)))


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # non-trivial eval statistics
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _minmax(t):
    dims = tuple(range(1, t.ndim))
    t = t - t.amin(dim=dims, keepdim=True)
    return t / (t.amax(dim=dims, keepdim=True) + 1e-7)


def test_layers_are_the_biased_conv_and_batch_norm(model):
    cam = FullGrad(model)
    assert cam.target_layers == [model.conv1, model.bn]
    assert cam.compute_input_gradient


def test_target_layers_are_ignored_with_a_warning(model):
    with pytest.warns(UserWarning, match="ignored"):
        cam = FullGrad(model, [model.conv2])
    assert model.conv2 not in cam.target_layers


def _bias(layer):
    return FullGrad.get_bias_data(None, layer)


def test_batch_norm_effective_bias(model):
    bn = model.bn
    expected = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(_bias(bn), expected)
    x = torch.randn(1, 3, 2, 2)  # BN(x) = x * scale + effective bias
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(bn(x), x * scale[:, None, None] + _bias(bn)[:, None, None], atol=1e-6)


def test_completeness(model):
    """Paper, eq. 2: for a piecewise-linear net y = grad_x.x + sum of grad_b.b over all biases."""
    x = torch.randn(2, 2, 8, 8)
    cam = FullGrad(model)
    cam(x, targets=[1])
    y = model(x)[:, 1]
    total = (cam.input_gradient * x).sum(dim=(1, 2, 3)) + model.fc.bias[1]
    for layer, grads in zip(cam.target_layers, cam.activations_and_grads.gradients):
        total = total + (grads * _bias(layer)[:, None, None]).sum(dim=(1, 2, 3))
    assert torch.allclose(total, y, atol=1e-5)


def test_matches_hand_computation(model):
    torch.manual_seed(1)
    x = torch.randn(2, 2, 8, 8)
    maps = FullGrad(model)(x, targets=[2])

    # oracle: plain backward with retained gradients
    xr = x.clone().requires_grad_()
    z1 = model.conv1(xr)
    z2 = model.bn(z1)
    z1.retain_grad()
    z2.retain_grad()
    out = model.fc(torch.relu(model.conv2(torch.relu(z2))).mean(dim=(2, 3)))
    out[:, 2].sum().backward()

    def channel_maps(t):  # |t|, min-max per image and channel, summed over channels
        return _minmax(t.abs().flatten(0, 1)).reshape(t.shape).sum(dim=1)

    total = channel_maps(xr.grad * x)
    total = total + channel_maps(z1.grad * model.conv1.bias[:, None, None])
    total = total + channel_maps(z2.grad * _bias(model.bn)[:, None, None])
    assert torch.allclose(torch.from_numpy(maps), _minmax(total.detach()), atol=1e-5)


def test_layer_maps_are_resized_not_renormalised(model):
    """Per-layer maps are summed as they are: a map is resized bilinearly to the input."""
    cam = FullGrad(model)
    small = torch.tensor([[[0.0, 2.0], [1.0, 3.0]]])
    resized = cam.scale_layer_cam(small, (4, 4))
    expected = F.interpolate(small[:, None], size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(resized, expected[:, 0])
    assert resized.max() > 1  # not min-max normalised


def test_output_and_model_unchanged(model):
    model.train()
    model.fc.weight.requires_grad_(False)
    x = torch.randn(2, 2, 8, 8)
    cam = FullGrad(model)
    maps = cam(x)
    assert maps.shape == (2, 8, 8) and maps.dtype.name == "float32"
    assert maps.min() == 0 and maps.max() == pytest.approx(1, abs=1e-5)
    for smoothed in (cam(x, aug_smooth=True), cam(x, eigen_smooth=True)):
        assert smoothed.shape == (2, 8, 8) and 0 <= smoothed.min() < smoothed.max() <= 1
    assert all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert not x.requires_grad
    cam.release()
    assert all(not m._forward_hooks for m in model.modules())


class TwoOutputs(Net):
    """Net plus a conv run only in training mode and a second output the targets ignore."""

    def __init__(self):
        super().__init__()
        self.aux = nn.Conv2d(3, 2, 1)  # e.g. an auxiliary classifier: skipped in eval mode
        self.seg = nn.Conv2d(3, 2, 1)  # a second head: no gradient from the logits

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        logits = self.fc(torch.relu(self.conv2(h)).mean(dim=(2, 3)))
        if self.training:
            logits = logits + self.aux(h).mean()
        return logits, self.seg(h)


def test_layers_not_run_or_not_reached_add_nothing(model):
    two = TwoOutputs().eval()
    two.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 2, 8, 8)
    cam = FullGrad(two)
    assert two.aux in cam.target_layers and two.seg in cam.target_layers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-gradient warning for the second head
        for _ in range(2):  # decided per call: the skipped layer stays a target layer
            maps = cam(x, targets=[1])
            assert np.allclose(maps, FullGrad(model)(x, targets=[1]), atol=1e-6)
    assert cam.target_layers == [two.conv1, two.bn, two.aux, two.seg]
    two.train()
    trained = cam(x, targets=[1])  # now aux runs (and the CAM still runs in eval mode)
    assert np.allclose(trained, maps, atol=1e-6)
    assert not two.aux._forward_hooks
    cam.release()
    assert all(not m._forward_hooks for m in two.modules())


def test_model_without_biases_raises():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 1, 5, 5))  # materialise the lazy layer (the snapshot copies it)
    expect_clean_error(model, lambda: FullGrad(model), ValueError, "bias")


def test_reshape_transform_is_ignored_with_a_warning():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    x = torch.rand(1, 3, 8, 8)
    plain = FullGrad(model)(x, targets=None)
    with pytest.warns(UserWarning, match="reshape_transform is ignored"):
        cam = FullGrad(model, reshape_transform=lambda t: t[:, :, 0])
    np.testing.assert_allclose(cam(x), plain)


class Switchable(Net):
    """Net with a biased 1x1 conv after the batch norm that runs only while ``extra`` is on
    (a switch that is not the training flag, so it skips the layer in eval mode too)."""

    def __init__(self):
        super().__init__()
        self.extra = nn.Conv2d(3, 3, 1)
        self.use_extra = True

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        if self.use_extra:
            h = torch.relu(self.extra(h))
        return self.fc(torch.relu(self.conv2(h)).mean(dim=(2, 3)))


def test_a_layer_skipped_in_one_call_counts_again_in_a_later_one(model):
    switchable = Switchable()
    switchable.load_state_dict(model.state_dict(), strict=False)
    switchable.train()  # in train mode going in: every call runs it in eval mode, restored
    before = ModelSnapshot.of(switchable)
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    cam = FullGrad(switchable)
    assert switchable.extra in cam.target_layers
    with_extra = cam(x, targets=[1])
    switchable.use_extra = False
    without = cam(x, targets=[1])
    switchable.use_extra = True
    again = cam(x, targets=[1])
    np.testing.assert_allclose(again, with_extra, atol=1e-6)  # extra's bias counts again
    np.testing.assert_allclose(again, FullGrad(switchable)(x, targets=[1]), atol=1e-6)
    assert not np.allclose(without, with_extra, atol=1e-3)
    switchable.use_extra = False
    np.testing.assert_allclose(without, FullGrad(switchable)(x, targets=[1]), atol=1e-6)
    before.assert_unchanged(switchable)  # train flags, BN statistics, .grad as they were

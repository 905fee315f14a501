"""3-D inputs (B, C, D, H, W): every gradient method gives (B, D, H, W), resized trilinearly."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.find_layers import find_target_layer

GRADIENT_METHODS = [
    "GradCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenGradCAM",
    "ShapleyCAM",
    "FinerCAM",
    "FullGrad",
]
SIZE = (6, 8, 10)  # D, H, W: all different, so a wrong axis order shows


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.Conv3d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


@pytest.mark.parametrize("name", GRADIENT_METHODS)
@pytest.mark.filterwarnings("ignore:FullGrad uses every")
def test_every_gradient_method_gives_volumes(model, name):
    x = torch.randn(2, 1, *SIZE)
    maps = getattr(pgc, name)(model, [model[3]])(x, targets=[1])
    assert maps.shape == (2, *SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() - m.min() > 0.5 for m in maps)


@pytest.mark.parametrize("name", ["EigenCAM", "KPCA_CAM"])
def test_gradient_free_projections_give_volumes(model, name):
    maps = getattr(pgc, name)(model, [model[3]])(torch.randn(2, 1, *SIZE))
    assert maps.shape == (2, *SIZE)


def test_resize_is_trilinear(model):
    x = torch.randn(2, 1, *SIZE)
    layer = model[3]
    maps = pgc.GradCAM(model, [layer])(x, targets=[2])

    acts = model[:4](x).detach().requires_grad_()  # the layer's output
    grads = torch.autograd.grad(model[4:](acts)[:, 2].sum(), acts)[0]
    raw = (grads.mean(dim=(2, 3, 4))[:, :, None, None, None] * acts).sum(dim=1).clamp_min(0)
    raw = raw - raw.amin(dim=(1, 2, 3), keepdim=True)
    raw = (raw / raw.amax(dim=(1, 2, 3), keepdim=True)).detach()
    assert raw.shape == (2, 3, 4, 5)
    for mode, close in (("trilinear", True), ("nearest", False)):
        resized = F.interpolate(raw[:, None], size=SIZE, mode=mode)[:, 0]  # align_corners=False
        resized = resized - resized.amin(dim=(1, 2, 3), keepdim=True)  # final min-max
        resized = resized / resized.amax(dim=(1, 2, 3), keepdim=True)
        assert np.allclose(maps, resized.numpy(), atol=1e-5) == close


def test_find_target_layer_on_volumes(model):
    assert find_target_layer(model) == ([model[3]], None)

"""Tests for KPCA_CAM and utils.svd_on_activations.get_2d_projection_kernel."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from pytorch_grad_cam import KPCA_CAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_kernel

KERNELS = ["sigmoid", "rbf", "poly", "linear"]


@pytest.fixture
def acts():
    torch.manual_seed(0)
    return torch.randn(2, 5, 4, 3) + torch.linspace(0, 2, 12).reshape(1, 1, 4, 3)


def _centred(a):
    x = a.flatten(2).transpose(1, 2).double()
    return x - x.mean(dim=1, keepdim=True)


def test_linear_kernel_is_eigen_cam(acts):
    assert torch.allclose(
        get_2d_projection_kernel(acts, "linear"), get_2d_projection(acts), atol=1e-5
    )


def test_poly_kernel_is_pca_of_its_explicit_features(acts):
    """(x.y)^2 = <vec(x x^T), vec(y y^T)>: kernel PCA = linear PCA of the outer products."""
    x = _centred(acts)
    features = (x[..., :, None] * x[..., None, :]).flatten(2)  # (B, P, C*C)
    oracle = get_2d_projection(features.transpose(1, 2).float()).double()
    got = get_2d_projection_kernel(acts, "poly", gamma=1.0, degree=2, coef0=0.0).flatten(1)
    sign = torch.sign((got.double() * oracle).sum(dim=1, keepdim=True))
    assert torch.allclose(got.double(), sign * oracle, atol=1e-3 * oracle.abs().max())


def test_sigmoid_kernel_by_hand(acts):
    """Default kernel: tanh(x.y / C + 1), double-centred; eigenvector * sqrt(eigenvalue)."""
    x = _centred(acts)[0].numpy()
    k = np.tanh(x @ x.T / 5 + 1)
    n = len(k)
    one = np.full((n, n), 1 / n)
    kc = k - one @ k - k @ one + one @ k @ one
    values, vectors = np.linalg.eigh(kc)
    oracle = vectors[:, -1] * np.sqrt(values[-1])
    oracle *= np.sign(oracle @ x.sum(axis=1))  # sign rule: correlate with the channel sum
    got = get_2d_projection_kernel(acts.numpy())[0].ravel()
    assert np.allclose(got, oracle, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sign_rule_and_shift_invariance(acts, kernel):
    proj = get_2d_projection_kernel(acts, kernel)
    assert proj.shape == (2, 4, 3) and proj.dtype == torch.float32
    channel_sum = _centred(acts).sum(dim=2)
    assert ((proj.flatten(1).double() * channel_sum).sum(dim=1) >= 0).all()
    shifted = acts + torch.arange(5.0)[None, :, None, None]  # per-channel offsets are centred
    assert torch.allclose(get_2d_projection_kernel(shifted, kernel), proj, atol=1e-4)


@pytest.mark.parametrize("kernel", KERNELS)
def test_constant_and_nan_activations(kernel):
    a = torch.ones(1, 3, 2, 2)
    a[0, 0, 0, 0] = float("nan")  # NaN -> 0, like get_2d_projection
    proj = get_2d_projection_kernel(a, kernel)
    assert torch.isfinite(proj).all()
    assert torch.allclose(
        get_2d_projection_kernel(torch.ones(1, 3, 2, 2), kernel), torch.zeros(1, 2, 2)
    )


def test_volumes_and_numpy(acts):
    vol = torch.randn(1, 4, 2, 3, 2)
    assert get_2d_projection_kernel(vol).shape == (1, 2, 3, 2)
    out = get_2d_projection_kernel(acts.numpy(), "rbf")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


def test_bad_arguments(acts):
    with pytest.raises(ValueError, match="kernel"):
        get_2d_projection_kernel(acts, "cosine")
    with pytest.raises(ValueError, match="activation_batch"):
        get_2d_projection_kernel(torch.ones(3, 4))
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="kernel"):
        KPCA_CAM(model, [model[0]], kernel="cosine")
    with pytest.raises(ValueError, match="gamma"):
        KPCA_CAM(model, [model[0]], gamma=0)


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf"])
def test_cam_is_the_projection_of_the_layer(kernel):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )
    x = torch.randn(2, 3, 5, 5)
    cam = KPCA_CAM(model, [model[0]], kernel=kernel, gamma=0.3)
    maps = cam(x)
    expected = get_2d_projection_kernel(model[0](x).detach(), kernel, 0.3).clamp_min(0)
    expected = expected - expected.amin(dim=(1, 2), keepdim=True)
    expected = expected / (expected.amax(dim=(1, 2), keepdim=True) + 1e-7)
    assert np.allclose(maps, expected.numpy(), atol=1e-5)
    assert np.array_equal(cam(x, targets=[ClassifierOutputTarget(3)]), maps)  # class-agnostic
    assert all(p.grad is None for p in model.parameters())

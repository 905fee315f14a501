"""Grad-CAM: w_k = mean over positions of dy/dA_k; map = ReLU(sum_k w_k A_k)."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, ProbeNet, check_against_oracle, project

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


def weighted(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """The terms w_k * A_k of the paper, (B, C, *grid)."""
    return grads.mean(axis=tuple(range(2, grads.ndim)), keepdims=True) * acts


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(GradCAM, ORACLE_CASES[name](), lambda a, g: weighted(a, g).sum(axis=1))


@pytest.mark.parametrize("name", ["per-image-targets", "two-layers", "volume-5d"])
def test_eigen_smooth_projects_the_weighted_activations(name):
    check_against_oracle(
        GradCAM, ORACLE_CASES[name](), lambda a, g: project(weighted(a, g)), eigen_smooth=True
    )


def test_hand_computed_example():
    # One channel, A = [[1, 2], [3, 4]] (stride 1: the input is A), y_0 = A[0,0] + A[1,1]:
    # dy/dA = [[1, 0], [0, 1]], w = mean = 0.5, map = 0.5 * A, min-max -> (A - 1) / 3.
    model = ProbeNet(channels=1, grid=(2, 2), classes=2, stride=1)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 0.0]] * 2]]))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    cam = GradCAM(model, [model.probe])(x, [ClassifierOutputTarget(0)])
    np.testing.assert_allclose(cam[0], [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)


def test_negative_mean_gradient_gives_an_all_zero_map():
    # w = -0.5 < 0 on a positive A: the weighted sum is negative everywhere, ReLU -> 0.
    model = ProbeNet(channels=1, grid=(2, 2), classes=1, stride=1)
    with torch.no_grad():
        model.head.weight.fill_(-0.5)
    cam = GradCAM(model, [model.probe])(torch.rand(1, 1, 2, 2) + 1, [ClassifierOutputTarget(0)])
    assert np.all(cam == 0)


def test_weights_are_the_spatial_mean_of_the_gradients(probe_case):
    cam = GradCAM(probe_case.model, probe_case.layers)
    grads = torch.from_numpy(probe_case.grads[0]).float()
    acts = torch.from_numpy(probe_case.acts[0]).float()
    weights = cam.get_cam_weights(probe_case.x, probe_case.layers[0], None, acts, grads)
    assert weights.shape == grads.shape[:2]
    np.testing.assert_allclose(weights.numpy(), probe_case.grads[0].mean(axis=(2, 3)), atol=1e-6)

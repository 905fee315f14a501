"""HiResCAM: map = ReLU(sum_k dy/dA_k * A_k), element-wise (no averaging of the gradients)."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, ProbeNet, check_against_oracle, make_probe_case, project

from pytorch_grad_cam import GradCAM, HiResCAM


def weighted(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return grads * acts


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(HiResCAM, ORACLE_CASES[name](), lambda a, g: weighted(a, g).sum(axis=1))


@pytest.mark.parametrize("name", ["per-image-targets", "two-layers"])
def test_eigen_smooth_projects_the_weighted_activations(name):
    check_against_oracle(
        HiResCAM, ORACLE_CASES[name](), lambda a, g: project(weighted(a, g)), eigen_smooth=True
    )


def test_equals_grad_cam_when_gradients_are_constant_per_channel():
    # A head that weights each channel uniformly over positions (global average pooling +
    # linear layer) has dy/dA_k constant in space: then sum_k g_k A_k is Grad-CAM's map.
    case = make_probe_case()
    with torch.no_grad():
        head = case.model.head.weight
        head.copy_(head.mean(dim=(2, 3), keepdim=True).expand_as(head))
    hires = HiResCAM(case.model, case.layers)(case.x, case.targets)
    grad_cam = GradCAM(case.model, case.layers)(case.x, case.targets)
    np.testing.assert_allclose(hires, grad_cam, atol=1e-6)


def test_differs_from_grad_cam_when_gradients_vary_in_space(probe_case):
    hires = HiResCAM(probe_case.model, probe_case.layers)(probe_case.x, probe_case.targets)
    grad_cam = GradCAM(probe_case.model, probe_case.layers)(probe_case.x, probe_case.targets)
    assert np.abs(hires - grad_cam).max() > 0.05


def test_hand_computed_example():
    # A = [[1, 2], [3, 4]], dy/dA = [[1, 0], [0, -1]]: g*A = [[1, 0], [0, -4]] -> ReLU
    # [[1, 0], [0, 0]] -> min-max: the same.
    model = ProbeNet(channels=1, grid=(2, 2), classes=1, stride=1)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]]]))
    cam = HiResCAM(model, [model.probe])(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    np.testing.assert_allclose(cam[0], [[1, 0], [0, 0]], atol=1e-6)

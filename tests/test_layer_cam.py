"""LayerCAM: map = ReLU(sum_k ReLU(dy/dA_k) * A_k), one weight per position."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, ProbeNet, check_against_oracle, project

from pytorch_grad_cam import LayerCAM


def weighted(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return np.maximum(grads, 0) * acts


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(LayerCAM, ORACLE_CASES[name](), lambda a, g: weighted(a, g).sum(axis=1))


@pytest.mark.parametrize("name", ["per-image-targets", "two-layers"])
def test_eigen_smooth_projects_the_weighted_activations(name):
    check_against_oracle(
        LayerCAM, ORACLE_CASES[name](), lambda a, g: project(weighted(a, g)), eigen_smooth=True
    )


def test_hand_computed_example():
    # A = [[4, 2], [3, 1]], dy/dA = [[-1, 1], [2, 0]]: ReLU(g) * A = [[0, 2], [6, 0]]
    # -> min-max [[0, 1/3], [1, 0]] (the negative gradient at (0, 0) is dropped).
    model = ProbeNet(channels=1, grid=(2, 2), classes=1, stride=1)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[[[-1.0, 1.0], [2.0, 0.0]]]]))
    cam = LayerCAM(model, [model.probe])(torch.tensor([[[[4.0, 2.0], [3.0, 1.0]]]]))
    np.testing.assert_allclose(cam[0], [[0, 1 / 3], [1, 0]], atol=1e-6)

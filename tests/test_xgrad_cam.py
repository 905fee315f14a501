"""XGrad-CAM: w_k = sum_ij(dy/dA_k * A_k) / (sum_ij A_k + 1e-7); map = ReLU(sum_k w_k A_k)."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, check_against_oracle, make_probe_case, project

from pytorch_grad_cam import GradCAM, XGradCAM


def weighted(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    spatial = tuple(range(2, grads.ndim))
    w = (grads * acts).sum(axis=spatial, keepdims=True) / (
        acts.sum(axis=spatial, keepdims=True) + 1e-7
    )
    return w * acts


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(XGradCAM, ORACLE_CASES[name](), lambda a, g: weighted(a, g).sum(axis=1))


@pytest.mark.parametrize("name", ["per-image-targets", "two-layers"])
def test_eigen_smooth_projects_the_weighted_activations(name):
    check_against_oracle(
        XGradCAM, ORACLE_CASES[name](), lambda a, g: project(weighted(a, g)), eigen_smooth=True
    )


def test_hand_computed_weights():
    # A = [1, 3], g = [2, 1]: (2*1 + 1*3) / (1 + 3) = 1.25.  A = [0, 4], g = [5, -1]: -4/4 = -1.
    acts = torch.tensor([[[[1.0, 3.0]], [[0.0, 4.0]]]])
    grads = torch.tensor([[[[2.0, 1.0]], [[5.0, -1.0]]]])
    case = make_probe_case()
    w = XGradCAM(case.model, case.layers).get_cam_weights(case.x, None, None, acts, grads)
    np.testing.assert_allclose(w.numpy(), [[1.25, -1.0]], rtol=1e-6)


def test_equals_grad_cam_for_constant_gradients_and_positive_activations():
    # g_k constant in space: w_k = g_k * S_k / S_k = g_k, Grad-CAM's weight.
    case = make_probe_case()
    with torch.no_grad():
        head = case.model.head.weight
        head.copy_(head.mean(dim=(2, 3), keepdim=True).expand_as(head))
    x = case.x.abs() + 0.1
    xgrad = XGradCAM(case.model, case.layers)(x, case.targets)
    np.testing.assert_allclose(xgrad, GradCAM(case.model, case.layers)(x, case.targets), atol=1e-5)

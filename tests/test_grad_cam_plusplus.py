"""Grad-CAM++: alpha = g^2 / (2 g^2 + S_k g^3 + 1e-6) (0 where g = 0), S_k = sum_ij A_k;
w_k = sum_ij alpha * ReLU(g); map = ReLU(sum_k w_k A_k)."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, check_against_oracle, make_probe_case, project

from pytorch_grad_cam import GradCAMPlusPlus


def weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    spatial = tuple(range(2, grads.ndim))
    sums = acts.sum(axis=spatial, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = grads**2 / (2 * grads**2 + sums * grads**3 + 1e-6)
    alpha = np.where(grads != 0, alpha, 0.0)
    return (alpha * np.maximum(grads, 0)).sum(axis=spatial)


def weighted(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    w = weights(acts, grads)
    return w.reshape(*w.shape, *[1] * (acts.ndim - 2)) * acts


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(
        GradCAMPlusPlus, ORACLE_CASES[name](), lambda a, g: weighted(a, g).sum(axis=1)
    )


@pytest.mark.parametrize("name", ["per-image-targets", "two-layers"])
def test_eigen_smooth_projects_the_weighted_activations(name):
    check_against_oracle(
        GradCAMPlusPlus,
        ORACLE_CASES[name](),
        lambda a, g: project(weighted(a, g)),
        eigen_smooth=True,
    )


def test_hand_computed_weights():
    # Channel 0: A = [1, 3] (S = 4), g = [1, -2]: alpha_0 = 1 / (2 + 4 + 1e-6) and
    #   ReLU(-2) = 0, so w_0 = 1/6.
    # Channel 1: A = [2, 2] (S = 4), g = [0.5, 0.5]: alpha = 0.25 / (0.5 + 0.5 + 1e-6),
    #   w_1 = 2 * 0.25 * 0.5 = 0.25.
    # Channel 2: g = 0 everywhere: alpha = 0, w_2 = 0.
    acts = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]], [[5.0, 1.0]]]])
    grads = torch.tensor([[[[1.0, -2.0]], [[0.5, 0.5]], [[0.0, 0.0]]]])
    case = make_probe_case()
    cam = GradCAMPlusPlus(case.model, case.layers)
    w = cam.get_cam_weights(case.x, case.layers[0], None, acts, grads)
    np.testing.assert_allclose(w.numpy(), [[1 / 6, 0.25, 0.0]], rtol=1e-5)


def test_zero_gradients_give_zero_weights_not_nan():
    case = make_probe_case()
    cam = GradCAMPlusPlus(case.model, case.layers)
    acts = torch.tensor(case.acts[0]).float()
    w = cam.get_cam_weights(case.x, case.layers[0], None, acts, torch.zeros_like(acts))
    assert torch.equal(w, torch.zeros(acts.shape[:2]))


def test_oracle_case_has_zero_and_negative_gradients(probe_case):
    # The oracle cases exercise both special branches of the formula.
    assert (probe_case.grads[0] == 0).any() and (probe_case.grads[0] < 0).any()

"""Element-wise Grad-CAM: map = ReLU(sum_k ReLU(dy/dA_k * A_k))."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, ProbeNet, check_against_oracle, make_probe_case, project

from pytorch_grad_cam import GradCAMElementWise, HiResCAM


def weighted(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return np.maximum(grads * acts, 0)


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(
        GradCAMElementWise, ORACLE_CASES[name](), lambda a, g: weighted(a, g).sum(axis=1)
    )


@pytest.mark.parametrize("name", ["per-image-targets", "two-layers"])
def test_eigen_smooth_projects_the_weighted_activations(name):
    check_against_oracle(
        GradCAMElementWise,
        ORACLE_CASES[name](),
        lambda a, g: project(weighted(a, g)),
        eigen_smooth=True,
    )


def test_equals_hirescam_when_every_term_is_non_negative():
    case = make_probe_case()
    with torch.no_grad():
        case.model.head.weight.abs_()
    x = case.x.abs()
    elementwise = GradCAMElementWise(case.model, case.layers)(x, case.targets)
    np.testing.assert_allclose(elementwise, HiResCAM(case.model, case.layers)(x, case.targets))


def test_negative_terms_do_not_cancel_positive_ones():
    # Two channels, three positions. Terms g*A: channel 0 = [2, 1, 0], channel 1 = [-2, 0, 0].
    # Element-wise: [2, 1, 0] -> min-max [1, 0.5, 0]. HiResCAM: [0, 1, 0] -> [0, 1, 0].
    model = ProbeNet(channels=2, grid=(1, 3), classes=1, stride=1)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[[[1.0, 1.0, 0.0]], [[-1.0, 0.0, 0.0]]]]))
    x = torch.tensor([[[[2.0, 1.0, 7.0]], [[2.0, 5.0, 3.0]]]])
    cam = GradCAMElementWise(model, [model.probe])(x)
    np.testing.assert_allclose(cam[0], [[1, 0.5, 0]], atol=1e-6)
    np.testing.assert_allclose(HiResCAM(model, [model.probe])(x)[0], [[0, 1, 0]], atol=1e-6)

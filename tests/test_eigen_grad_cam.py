"""Eigen-Grad-CAM: map = ReLU(first principal component of dy/dA * A)."""

import numpy as np
import pytest
from conftest import ORACLE_CASES, check_against_oracle, make_probe_case, project

from pytorch_grad_cam import EigenCAM, EigenGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(EigenGradCAM, ORACLE_CASES[name](), lambda a, g: project(g * a))


def test_is_class_discriminative_unlike_eigen_cam():
    case = make_probe_case(batch=1)
    cam = EigenGradCAM(case.model, case.layers)
    first = cam(case.x, [ClassifierOutputTarget(0)])
    second = cam(case.x, [ClassifierOutputTarget(2)])
    assert np.abs(first - second).max() > 0.05
    eigen = EigenCAM(case.model, case.layers)
    np.testing.assert_array_equal(
        eigen(case.x, [ClassifierOutputTarget(0)]), eigen(case.x, [ClassifierOutputTarget(2)])
    )

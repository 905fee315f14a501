"""Seg-Eigen-CAM: map = ReLU(p), p = first principal component of |dy/dA| * A, negated when
|min p| > |max p|."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, ProbeNet, check_against_oracle, project

from pytorch_grad_cam import EigenCAM, SegEigenCAM


def sign_corrected(maps: np.ndarray) -> np.ndarray:
    """numpy oracle of the sign rule on projections (B, *grid)."""
    flat = maps.reshape(len(maps), -1)
    flip = np.abs(flat.min(axis=1)) > np.abs(flat.max(axis=1))
    return np.where(flip.reshape(-1, *[1] * (maps.ndim - 1)), -maps, maps)


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(
        SegEigenCAM, ORACLE_CASES[name](), lambda a, g: sign_corrected(project(np.abs(g) * a))
    )


def test_hand_computed_sign_rule():
    # One channel, positions s = [0, 0, 0, -4] times gradient magnitude 1: the centred values
    # are [1, 1, 1, -3]; |-3| > |1|, so the map is [-1, -1, -1, 3] -> ReLU, min-max [0, 0, 0, 1]
    # (Eigen-CAM's rule, entries of the component summing to >= 0, keeps [1, 1, 1, -3] for
    # these activations -> [1, 1, 1, 0]).
    model = ProbeNet(channels=1, grid=(1, 4), classes=1, stride=1)
    with torch.no_grad():
        model.head.weight.fill_(-1.0)  # |gradient| = 1, gradient = -1
    x = torch.tensor([[[[0.0, 0.0, 0.0, -4.0]]]])
    np.testing.assert_allclose(
        SegEigenCAM(model, [model.probe])(x, [0])[0], [[0, 0, 0, 1]], atol=1e-6
    )
    np.testing.assert_allclose(EigenCAM(model, [model.probe])(x)[0], [[1, 1, 1, 0]], atol=1e-6)


def test_absolute_gradients_make_it_sign_blind():
    case = ORACLE_CASES["per-image-targets"]()
    got = SegEigenCAM(case.model, case.layers)(case.x, case.targets)
    with torch.no_grad():
        case.model.head.weight.neg_()
    np.testing.assert_allclose(SegEigenCAM(case.model, case.layers)(case.x, case.targets), got)

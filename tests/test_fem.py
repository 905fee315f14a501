"""FEM: w_c = share of positions where A_c > mean(A_c) + k std(A_c);  map = ReLU(sum_c w_c A_c)."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, ProbeNet, check_against_oracle
from snapshot import expect_clean_error

from pytorch_grad_cam import FEM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


def fem_raw_map(acts: np.ndarray, k: float) -> np.ndarray:
    """numpy oracle: the k-sigma share of each channel (population std) times the channel."""
    flat = acts.reshape(*acts.shape[:2], -1)
    mean, std = flat.mean(axis=2, keepdims=True), flat.std(axis=2, keepdims=True)
    weights = (flat > mean + k * std).mean(axis=2)
    return (weights.reshape(*weights.shape, *[1] * (acts.ndim - 2)) * acts).sum(axis=1)


def at_k(k):
    class FEMk(FEM):
        def __init__(self, model, target_layers, reshape_transform=None):
            super().__init__(model, target_layers, reshape_transform, k=k)

    return FEMk


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    case = ORACLE_CASES[name]()
    check_against_oracle(at_k(1.0), case, lambda a, g: fem_raw_map(a, 1.0))


@pytest.mark.parametrize("k", [0.0, 0.5, 2.0])
def test_the_threshold_follows_k(k):
    case = ORACLE_CASES["per-image-targets"]()
    check_against_oracle(at_k(k), case, lambda a, g: fem_raw_map(a, k))


def test_hand_computed_weights():
    # channel 0 = [0, 0, 0, 8]: mean 2, std sqrt(12) ~ 3.46, one position of four above
    # mean + 1 std (5.46): weight 1/4. channel 1 = [1, 1, 1, 1]: std 0, none above: weight 0.
    model = ProbeNet(channels=2, grid=(2, 2), classes=1, stride=1)
    x = torch.tensor([[[[0.0, 0.0], [0.0, 8.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    cam = FEM(model, [model.probe], k=1)
    weights = cam.get_cam_weights(x, model.probe, None, x.numpy(), None)
    np.testing.assert_allclose(weights, [[0.25, 0.0]])
    np.testing.assert_allclose(cam(x)[0], [[0, 0], [0, 1]], atol=1e-6)


def test_ignores_targets_and_needs_no_gradients():
    case = ORACLE_CASES["per-image-targets"]()
    cam = FEM(case.model, case.layers, k=1)
    assert not cam.uses_gradients
    first = cam(case.x, [ClassifierOutputTarget(0)])
    np.testing.assert_array_equal(first, cam(case.x, [ClassifierOutputTarget(3)]))
    assert all(p.grad is None for p in case.model.parameters())


def test_k_must_be_a_number():
    model = ProbeNet()
    expect_clean_error(
        model, lambda: FEM(model, [model.probe], k="2"), TypeError, "k must be a number"
    )

"""RandomCAM: w_k ~ Uniform(-1, 1); map = ReLU(sum_k w_k A_k) (a baseline for the metrics)."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES

from pytorch_grad_cam import RandomCAM


@pytest.mark.parametrize("name", ["per-image-targets", "two-layers", "volume-5d"])
def test_matches_oracle_with_the_same_random_draws(name):
    case = ORACLE_CASES[name]()
    torch.manual_seed(7)
    got = RandomCAM(case.model, case.layers)(case.x, case.targets)
    torch.manual_seed(7)  # one (B, C) draw per layer, in layer order
    raws = []
    for acts in case.acts:
        w = (torch.rand(acts.shape[:2]) * 2 - 1).double().numpy()
        raws.append((w.reshape(*w.shape, *[1] * (acts.ndim - 2)) * acts).sum(axis=1))
    np.testing.assert_allclose(got, case.expected(raws), atol=1e-5)


def test_weights_are_uniform_in_minus_one_one(probe_case):
    cam = RandomCAM(probe_case.model, probe_case.layers)
    acts = torch.zeros(64, 32, 2, 2)
    w = cam.get_cam_weights(probe_case.x, None, None, acts, None)
    assert w.shape == (64, 32)
    assert w.min() >= -1 and w.max() <= 1
    assert w.min() < -0.9 and w.max() > 0.9 and abs(float(w.mean())) < 0.1


def test_needs_no_gradients_and_changes_between_calls(probe_case):
    cam = RandomCAM(probe_case.model, probe_case.layers)
    assert cam.uses_gradients is False
    first, second = cam(probe_case.x), cam(probe_case.x)
    assert first.shape == (2, 9, 12) and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 1
    assert not np.array_equal(first, second)

"""Eigen-CAM: map = ReLU(projection of A on its first principal component); no gradients."""

import numpy as np
import pytest
import torch
from conftest import ORACLE_CASES, ProbeNet, check_against_oracle, make_probe_case, project
from torch import nn

from pytorch_grad_cam import EigenCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_numpy_oracle(name):
    check_against_oracle(EigenCAM, ORACLE_CASES[name](), lambda a, g: project(a))


def test_eigen_smooth_changes_nothing(probe_case):
    check_against_oracle(EigenCAM, probe_case, lambda a, g: project(a), eigen_smooth=True)


def test_hand_computed_rank_one_example():
    # A_k = v_k * s over positions, with s = [0, 1, 2, 3] and v = (2, 1): the centred rows are
    # (s - 1.5) * v, the top right-singular vector is v / |v| (entries sum > 0), the projection
    # is (s - 1.5) * |v| -> ReLU and min-max give [0, 0, 1/3, 1].
    model = ProbeNet(channels=2, grid=(2, 2), classes=1, stride=1)
    s = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    x = torch.stack([2 * s, s])[None]
    cam = EigenCAM(model, [model.probe])(x)
    np.testing.assert_allclose(cam[0], [[0, 0], [1 / 3, 1]], atol=1e-6)


def test_is_class_agnostic_and_needs_no_targets(probe_case):
    cam = EigenCAM(probe_case.model, probe_case.layers)
    first = cam(probe_case.x, [ClassifierOutputTarget(0)])
    np.testing.assert_array_equal(first, cam(probe_case.x, [ClassifierOutputTarget(4)]))
    np.testing.assert_array_equal(first, cam(probe_case.x))


class NoGradCheck(nn.Module):
    """Fails if the forward pass after the target layer runs with autograd enabled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        return x


def test_forward_runs_without_autograd_and_no_backward():
    case = make_probe_case()
    model = nn.Sequential(case.model.sub, case.model.probe, NoGradCheck(), case.model.head)
    got = EigenCAM(model, [model[1]])(case.x)
    np.testing.assert_allclose(got, case.expected([project(case.acts[0])]), atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_works_with_an_output_no_target_can_read():
    # A model returning a dict without 'logits': gradient methods need a target; EigenCAM not.
    case = make_probe_case()

    class DictOut(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"scores": self.net(x)}

    model = DictOut(case.model)
    got = EigenCAM(model, [case.model.probe])(case.x)
    np.testing.assert_allclose(got, case.expected([project(case.acts[0])]), atol=1e-5)

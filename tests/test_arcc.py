"""ARCC and its parts on hand-made maps."""

import numpy as np
import pytest
import torch
from conftest import make_probe_case

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.arcc import ARCC, Coherency, Complexity, batch_pearson_coherency
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget


def test_pearson_of_hand_made_pairs():
    a = np.array([[[0.0, 1.0], [2.0, 3.0]]] * 3)
    b = np.stack([2 * a[0] + 1, -a[0], np.ones((2, 2))])
    np.testing.assert_allclose(batch_pearson_coherency(a, b), [1.0, -1.0, 0.0], atol=1e-7)
    # [0, 1, 2, 3] against [0, 1, 3, 2]: centred dot 4, norms sqrt(5) each -> 0.8
    c = np.array([[[0.0, 1.0], [3.0, 2.0]]])
    np.testing.assert_allclose(batch_pearson_coherency(a[:1], c), [0.8], atol=1e-7)


def test_complexity_is_the_mean_absolute_value():
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, :2] = 1.0  # half the pixels at 1
    maps[1, 0, 0] = 0.8
    np.testing.assert_allclose(Complexity()(maps), [0.5, 0.05], atol=1e-7)


class Replay:
    """A stand-in CAM object: returns fixed maps and records what it was called with."""

    def __init__(self, maps):
        self.maps, self.calls = maps, []

    def __call__(self, input_tensor, targets):
        self.calls.append((input_tensor, targets))
        return self.maps


def test_coherency_runs_the_cam_on_the_masked_image():
    case = make_probe_case()
    cams = np.random.default_rng(0).random((2, 9, 12)).astype(np.float32)
    again = np.stack([cams[0], 1 - cams[1]])  # the same map, then the inverted one
    replay = Replay(again)
    got = Coherency()(case.x, cams, case.targets, case.model, replay)
    np.testing.assert_allclose(got, [1.0, 0.0], atol=1e-6)
    ((masked, targets),) = replay.calls
    torch.testing.assert_close(masked, case.x * torch.from_numpy(cams)[:, None])
    assert targets is case.targets


def test_arcc_is_the_harmonic_mean_with_clamps():
    case = make_probe_case(batch=3)
    cams = np.zeros((3, 9, 12), np.float32)
    cams[:, :3] = 1.0  # complexity 1/3
    arcc = ARCC(Replay(cams))  # coherency 1
    # LeRF - MoRF = 0.5, -0.2, 1.6
    arcc.road = lambda x, maps, targets, model: np.array([0.25, -0.1, 0.8])
    expected_first = 3 / (1 / 1.0 + 1 / (2 / 3) + 1 / 0.5)
    expected_second = 3 / (1 + 1.5 + 1e8)  # a negative ROAD term is clamped at 1e-8
    expected_third = 3 / (1 + 1.5 + 1)  # a ROAD term above 1 is clipped to 1
    np.testing.assert_allclose(
        arcc(case.x, cams, case.targets, case.model),
        [expected_first, expected_second, expected_third],
        rtol=1e-5,
    )


def test_arcc_with_a_real_cam_and_road():
    case = make_probe_case()
    targets = [ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(3)]
    cam = GradCAM(case.model, case.layers)
    maps = cam(case.x, targets)
    got = ARCC(cam, road_percentiles=[50])(case.x, maps, targets, case.model)
    assert got.shape == (2,) and got.dtype == np.float32 and np.all((got > 0) & (got <= 1))


def test_base_method_must_be_a_cam_object():
    with pytest.raises(TypeError, match="base_method must be a CAM object"):
        ARCC(GradCAM)

"""Deletion / insertion curves and their area under the curve, against numpy oracles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from snapshot import expect_clean_error
from torch import nn

from pytorch_grad_cam.metrics.deletion_insertion import (
    DeletionCurve,
    InsertionCurve,
    area_under_curve,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


def linear_model(channels: int, height: int, width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, 3)).eval()


def expected_curves(model, x, baseline, cams, classes, n_steps, insertion):
    """Score of the linear model after changing the floor(s * N / n_steps) top-CAM pixels."""
    w = model[1].weight.detach().double().numpy()
    bias = model[1].bias.detach().double().numpy()
    curves = []
    for b, k in enumerate(classes):
        order = np.argsort(-cams[b].ravel(), kind="stable")
        pixels = order.size
        row = []
        for s in range(n_steps + 1):
            changed = np.zeros(pixels, bool)
            changed[order[: s * pixels // n_steps]] = True
            changed = changed.reshape(cams[b].shape)[None]
            if insertion:
                image = np.where(changed, x[b], baseline[b])
            else:
                image = np.where(changed, baseline[b], x[b])
            row.append(w[k] @ image.ravel() + bias[k])
        curves.append(row)
    return np.array(curves)


@pytest.mark.parametrize("insertion", [False, True])
@pytest.mark.parametrize("n_steps", [3, 4, 6])
def test_curves_of_a_linear_model(insertion, n_steps):
    model = linear_model(2, 2, 3)
    x = torch.rand(2, 2, 2, 3)
    cams = np.random.default_rng(n_steps).random((2, 2, 3)).astype(np.float32)
    classes = [1, 2]
    targets = [ClassifierOutputTarget(k) for k in classes]
    metric_class = InsertionCurve if insertion else DeletionCurve
    metric = metric_class(n_steps=n_steps, baseline=0.25, batch_size=5)
    auc, curves = metric(x, cams, targets, model, return_curves=True)
    baseline = np.full(x.shape, 0.25)
    expected = expected_curves(
        model, x.double().numpy(), baseline, cams, classes, n_steps, insertion
    )
    assert curves.shape == (2, n_steps + 1) and curves.dtype == np.float32
    np.testing.assert_allclose(curves, expected, atol=1e-5)
    np.testing.assert_allclose(auc, area_under_curve(expected), atol=1e-5)


def test_chunking_does_not_change_the_curves():
    model = linear_model(1, 4, 4)
    x = torch.rand(3, 1, 4, 4)
    cams = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    targets = [ClassifierOutputTarget(0)]
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    small = DeletionCurve(n_steps=8, batch_size=4).curves(x, cams, targets, model)
    assert max(seen) == 4 and sum(seen) == 3 * 9
    large = DeletionCurve(n_steps=8, batch_size=100).curves(x, cams, targets, model)
    np.testing.assert_allclose(small, large, atol=1e-6)


def test_end_points_and_default_baselines():
    model = linear_model(3, 16, 16)
    x = torch.rand(2, 3, 16, 16)
    cams = np.random.default_rng(1).random((2, 16, 16)).astype(np.float32)
    targets = [ClassifierOutputTarget(2)]
    deletion = DeletionCurve(n_steps=5).curves(x, cams, targets, model)
    insertion = InsertionCurve(n_steps=5).curves(x, cams, targets, model)
    blurred = np.stack(
        [
            cv2.GaussianBlur(img, (11, 11), 5, borderType=cv2.BORDER_REFLECT_101).transpose(2, 0, 1)
            for img in x.numpy().transpose(0, 2, 3, 1)
        ]
    )
    with torch.no_grad():
        original = model(x)[:, 2].numpy()
        zeros = model(torch.zeros_like(x))[:, 2].numpy()
        blur = model(torch.from_numpy(blurred))[:, 2].numpy()
    np.testing.assert_allclose(deletion[:, 0], original, atol=1e-5)
    np.testing.assert_allclose(deletion[:, -1], zeros, atol=1e-5)
    np.testing.assert_allclose(insertion[:, 0], blur, atol=1e-4)
    np.testing.assert_allclose(insertion[:, -1], original, atol=1e-5)
    means = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    for baseline in ("mean", lambda images: images.mean(dim=(2, 3), keepdim=True)):
        curve = DeletionCurve(n_steps=2, baseline=baseline).curves(x, cams, targets, model)
        with torch.no_grad():
            np.testing.assert_allclose(curve[:, -1], model(means)[:, 2].numpy(), atol=1e-5)


def test_area_under_curve():
    curves = np.array([[0.0, 0.25, 0.5, 0.75, 1.0], [0.3] * 5, [0, 1, 0, 1, 0]])
    np.testing.assert_allclose(area_under_curve(curves), [0.5, 0.3, 0.5])
    np.testing.assert_allclose(area_under_curve(torch.tensor([[1.0, 0.0]])), [0.5])
    with pytest.raises(ValueError, match="curves"):
        area_under_curve(np.ones((2, 1)))


@pytest.mark.parametrize("kwargs", [{"n_steps": 0}, {"batch_size": 0}, {"baseline": "noise"}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DeletionCurve(**kwargs)


# ---------------------------------------------------------------- reliability


@pytest.mark.parametrize("metric", [DeletionCurve, InsertionCurve])
def test_an_empty_batch_gives_empty_curves(metric):
    model = linear_model(2, 4, 4)
    auc, curves = metric(n_steps=4)(
        torch.rand(0, 2, 4, 4), np.zeros((0, 4, 4)), [0], model, return_curves=True
    )
    assert auc.shape == (0,) and curves.shape == (0, 5)


@pytest.mark.parametrize("metric", [DeletionCurve, InsertionCurve])
def test_nan_maps_raise(metric):
    cams = np.zeros((2, 4, 4), np.float32)
    cams[1, 0, 0] = np.inf
    model = linear_model(2, 4, 4)
    expect_clean_error(
        model,
        lambda: metric()(torch.rand(2, 2, 4, 4), cams, [ClassifierOutputTarget(0)], model),
        ValueError,
        r"cams contain NaN or Inf values \(image 1\)",
    )

"""Tests for pytorch_grad_cam.finer_cam.FinerCAM and the FinerWeightedTarget."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from snapshot import expect_clean_error

from pytorch_grad_cam import AblationCAM, FinerCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 7),
    )


def _closest(logits, main, ranks):
    """Classes by closeness of logit to the main class's (the main class itself first)."""
    others = sorted((abs(v - logits[main]), c) for c, v in enumerate(logits) if c != main)
    order = [main] + [c for _, c in others]
    return [order[r] for r in ranks]


def test_weighted_target_value():
    logits = torch.tensor([0.0, 5.0, 3.0, 4.5, 1.0])
    target = FinerWeightedTarget(2, [3, 1], alpha=0.5)
    assert target(logits).item() == pytest.approx(3.0 - 0.5 * (4.5 + 5.0) / 2)
    batch = torch.stack([logits, logits + 1])
    assert target(batch).tolist() == pytest.approx([0.625, 1.125])
    with pytest.raises(IndexError, match="category 9"):
        FinerWeightedTarget(0, [9])(logits)
    with pytest.raises(ValueError, match="comparison_categories"):
        FinerWeightedTarget(0, [])


@pytest.mark.parametrize("target_idx,ranks,alpha", [(None, [1, 2, 3], 1.0), (4, [1, 3], 0.7)])
def test_default_targets_pick_the_closest_classes(model, target_idx, ranks, alpha):
    x = torch.randn(3, 3, 8, 8)
    logits = model(x).detach()
    targets = []
    for row in logits.tolist():
        main = int(np.argmax(row)) if target_idx is None else target_idx
        targets.append(FinerWeightedTarget(main, _closest(row, main, ranks), alpha))
    expected = GradCAM(model, [model[2]])(x, targets=targets)
    cam = FinerCAM(model, [model[2]])
    got = cam(x, alpha=alpha, comparison_categories=ranks, target_idx=target_idx)
    assert np.allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, GradCAM(model, [model[2]])(x), atol=1e-3)  # differs from top-1


def test_perturbation_base_scores_the_classes_of_the_clean_image(model):
    """AblationCAM scores ablated copies: the classes must come from the unablated logits."""
    torch.manual_seed(1)
    x = torch.randn(3, 3, 8, 8)
    logits = model(x).detach().tolist()
    targets = [
        FinerWeightedTarget(int(np.argmax(row)), _closest(row, int(np.argmax(row)), [1, 2, 3]))
        for row in logits
    ]
    expected = AblationCAM(model, [model[2]])(x, targets=targets)
    got = FinerCAM(model, [model[2]], base_method=AblationCAM)(x)
    assert np.allclose(got, expected, atol=1e-6)


def test_alpha_zero_is_the_base_method(model):
    x = torch.randn(2, 3, 8, 8)
    got = FinerCAM(model, [model[2]], base_method=GradCAMPlusPlus)(x, alpha=0)
    assert np.allclose(got, GradCAMPlusPlus(model, [model[2]])(x), atol=1e-6)


def test_explicit_targets_are_used(model):
    x = torch.randn(2, 3, 8, 8)
    targets = [ClassifierOutputTarget(3), FinerWeightedTarget(1, [2, 5])]
    got = FinerCAM(model, [model[2]])(x, targets=targets, comparison_categories=[0])
    assert np.allclose(got, GradCAM(model, [model[2]])(x, targets=targets), atol=1e-6)


def test_bad_arguments(model):
    x = torch.randn(1, 3, 8, 8)
    cam = FinerCAM(model, [model[2]])
    for kwargs, error in (
        ({"comparison_categories": [0, 1]}, ValueError),
        ({"comparison_categories": [7]}, IndexError),
        ({"target_idx": 7}, IndexError),
    ):
        expect_clean_error(model, lambda kwargs=kwargs: cam(x, **kwargs), error, next(iter(kwargs)))
    expect_clean_error(
        model, lambda: FinerCAM(model, [model[2]], base_method=len), TypeError, "base_method"
    )
    assert all(not m._forward_hooks for m in model.modules())  # released after the errors


def test_wrapper_delegates_and_releases(model):
    with FinerCAM(model, [model[2]]) as cam:
        cam.forward(torch.randn(1, 3, 8, 8))
        assert cam.target_layers == [model[2]]
        assert cam.outputs.shape == (1, 7)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target_idx": 2.7}, TypeError, "target_idx must be an integer class index"),
        ({"target_idx": np.float64(2)}, TypeError, "target_idx must be an integer class index"),
        ({"comparison_categories": [1, 2.5]}, TypeError, r"comparison_categories\[1\] must be"),
        ({"alpha": float("nan")}, ValueError, "alpha must be a finite number"),
        ({"alpha": "1"}, ValueError, "alpha must be a finite number"),
    ],
)
def test_bad_arguments_are_rejected_before_the_model_runs(model, kwargs, error, match):
    runs = []
    handle = model.register_forward_pre_hook(lambda module, args: runs.append(1))
    cam = FinerCAM(model, [model[2]])
    try:
        expect_clean_error(model, lambda: cam(torch.randn(1, 3, 8, 8), **kwargs), error, match)
    finally:
        handle.remove()
    assert runs == []


def test_numpy_and_torch_integer_arguments_are_accepted(model):
    x = torch.randn(2, 3, 8, 8)
    cam = FinerCAM(model, [model[2]])
    expected = cam(x, target_idx=3, comparison_categories=[1, 2])
    got = cam(x, target_idx=np.int64(3), comparison_categories=[torch.tensor(1), np.int32(2)])
    np.testing.assert_array_equal(got, expected)

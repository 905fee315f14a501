"""CAM-multiplication metrics and the shared PerturbationConfidenceMetric plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from snapshot import expect_clean_error
from torch import nn

from pytorch_grad_cam._targets import target_scores
from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
    multiply_tensor_with_cam,
)
from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 5, 3)).eval()


def expected_change(model: nn.Module, x: torch.Tensor, cams: np.ndarray, classes) -> np.ndarray:
    """Linear model: score(x * cam) - score(x) = w_k . (x * (cam - 1))."""
    w = model[1].weight.detach().double().numpy()
    xs = x.double().numpy()
    return np.array([w[k] @ (xs[b] * (cams[b][None] - 1)).ravel() for b, k in enumerate(classes)])


@pytest.fixture
def case():
    model = linear_model()
    x = torch.rand(3, 2, 4, 5)
    cams = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    return model, x, cams


def test_confidence_change_of_a_linear_model(case):
    model, x, cams = case
    classes = [0, 2, 1]
    targets = [ClassifierOutputTarget(k) for k in classes]
    change = CamMultImageConfidenceChange()(x, cams, targets, model)
    assert change.shape == (3,) and change.dtype == np.float32
    np.testing.assert_allclose(change, expected_change(model, x, cams, classes), atol=1e-5)
    drop = DropInConfidence()(x, cams, targets, model)
    np.testing.assert_allclose(drop, np.maximum(-change, 0), atol=1e-6)
    increase = IncreaseInConfidence()(x, cams, targets, model)
    np.testing.assert_array_equal(increase, np.float32(change > 0))
    assert set(increase.tolist()) <= {0.0, 1.0}


def test_a_cam_of_ones_changes_nothing(case):
    model, x, _ = case
    ones = np.ones((3, 4, 5), np.float32)
    targets = [ClassifierOutputSoftmaxTarget(1)]  # one target for every image
    np.testing.assert_allclose(
        CamMultImageConfidenceChange()(x, ones, targets, model), 0, atol=1e-6
    )
    np.testing.assert_array_equal(IncreaseInConfidence()(x, ones, targets, model), 0)


def test_visualization_and_absolute_scores(case):
    model, x, cams = case
    targets = [ClassifierOutputTarget(1)] * 3
    scores, images = DropInConfidence()(x, cams, targets, model, return_visualization=True)
    assert torch.allclose(images, x * torch.from_numpy(cams)[:, None])
    assert scores.shape == (3,)
    after = CamMultImageConfidenceChange()(x, cams, targets, model, return_diff=False)
    with torch.no_grad():
        np.testing.assert_allclose(after, model(images)[:, 1].numpy(), atol=1e-6)
    single = multiply_tensor_with_cam(x[0], torch.from_numpy(cams[0]))
    assert torch.equal(single, images[0])


def test_model_state_is_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.rand(2, 3, 6, 6)
    model(x)  # materialise the lazy layer
    model.train()
    model[0].weight.requires_grad_(False)
    stats = model[1].running_mean.clone()
    cams = np.random.default_rng(0).random((2, 6, 6)).astype(np.float32)
    first = CamMultImageConfidenceChange()(x, cams, [ClassifierOutputTarget(0)], model)
    second = CamMultImageConfidenceChange()(x, cams, [ClassifierOutputTarget(0)], model)
    np.testing.assert_array_equal(first, second)  # ran in eval mode: dropout off
    assert all(m.training for m in model.modules())
    assert torch.equal(model[1].running_mean, stats)
    assert not model[0].weight.requires_grad and model[4].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_structured_outputs_and_custom_targets():
    class DictModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = linear_model()

        def forward(self, x):
            return {"logits": self.inner(x), "aux": x.mean()}

    model = DictModel().eval()
    x = torch.rand(2, 2, 4, 5)
    cams = np.random.default_rng(2).random((2, 4, 5)).astype(np.float32)
    targets = [ClassifierOutputTarget(2), lambda out: out["logits"][0] * 2]
    change = CamMultImageConfidenceChange()(x, cams, targets, model)
    reference = expected_change(model.inner, x, cams, [2, 0]) * np.array([1, 2])
    np.testing.assert_allclose(change, reference, atol=1e-5)


def test_batched_target_scores_equal_per_image_scores():
    logits = torch.randn(5, 4)
    targets = [ClassifierOutputSoftmaxTarget(k) for k in (3, 0, 3, 1, 2)]
    batched = target_scores(logits, targets)
    per_image = target_scores(logits, [lambda out, t=t: t(out) for t in targets])
    torch.testing.assert_close(batched, per_image)
    with pytest.raises(IndexError, match="out of range"):
        target_scores(logits, [ClassifierOutputTarget(4)] * 5)


def test_batch_size_splits_the_forward_passes(case):
    model, x, cams = case
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    targets = [ClassifierOutputTarget(0)]
    full = CamMultImageConfidenceChange()(x, cams, targets, model)
    seen.clear()
    split = CamMultImageConfidenceChange(batch_size=2)(x, cams, targets, model)
    assert max(seen) == 2
    np.testing.assert_allclose(full, split, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"cams": np.ones((2, 4, 5))}, ValueError, "cams must have shape"),
        ({"targets": None}, ValueError, "targets is required"),
        ({"targets": [ClassifierOutputTarget(0)] * 2}, ValueError, "one target per image"),
        ({"targets": ["cat"]}, TypeError, "targets\\[0\\]"),
        ({"input_tensor": torch.rand(2, 4, 5)}, ValueError, "input_tensor"),
        ({"model": "resnet"}, TypeError, "model"),
    ],
)
def test_bad_inputs_raise(case, kwargs, error, match):
    model, x, cams = case
    args = {"input_tensor": x, "cams": cams, "targets": [ClassifierOutputTarget(0)], "model": model}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        CamMultImageConfidenceChange()(**args)
    with pytest.raises(ValueError, match="batch_size"):
        PerturbationConfidenceMetric(multiply_tensor_with_cam, batch_size=0)(
            x, cams, [ClassifierOutputTarget(0)], model
        )


# ---------------------------------------------------------------- reliability


@pytest.mark.parametrize(
    "metric", [CamMultImageConfidenceChange, DropInConfidence, IncreaseInConfidence]
)
def test_an_empty_batch_gives_empty_scores_without_running_the_model(case, metric):
    model, x, cams = case
    runs = []
    handle = model.register_forward_pre_hook(lambda module, args: runs.append(1))
    try:
        got = metric()(x[:0], cams[:0], [ClassifierOutputTarget(0)], model)
        scores, images = metric()(x[:0], cams[:0], [0], model, return_visualization=True)
        assert metric()(x[:0], cams[:0], [], model).shape == (0,)  # no image, no target
    finally:
        handle.remove()
    assert got.shape == (0,) and got.dtype == np.float32 and scores.shape == (0,)
    assert images.shape == (0, 2, 4, 5) and runs == []


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"cams": "nan"}, ValueError, r"cams contain NaN or Inf values \(image 1\)"),
        ({"input_tensor": "uint8"}, TypeError, "input_tensor has dtype torch.uint8"),
        (
            {"input_tensor": "nan"},
            ValueError,
            r"input_tensor contains NaN or Inf values \(image 2\)",
        ),
        ({"targets": [2.5]}, TypeError, r"targets\[0\] must be an integer class index"),
    ],
)
def test_bad_values_raise_and_leave_the_model_unchanged(case, change, error, match):
    model, x, cams = case
    args = {"input_tensor": x, "cams": cams, "targets": [ClassifierOutputTarget(0)], "model": model}
    if change.get("cams") == "nan":
        args["cams"] = cams.copy()
        args["cams"][1, 0, 0] = np.nan
    elif change.get("input_tensor") == "uint8":
        args["input_tensor"] = (x * 255).to(torch.uint8)
    elif change.get("input_tensor") == "nan":
        args["input_tensor"] = x.clone()
        args["input_tensor"][2, 0, 0, 0] = float("inf")
    else:
        args.update(change)
    expect_clean_error(model, lambda: DropInConfidence()(**args), error, match)


def test_float64_inputs_are_cast_to_the_model(case):
    model, x, cams = case
    targets = [ClassifierOutputTarget(1)]
    np.testing.assert_array_equal(
        DropInConfidence()(x.double(), cams, targets, model),
        DropInConfidence()(x, cams, targets, model),
    )

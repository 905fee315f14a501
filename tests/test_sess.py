"""SESS: window layout, scales, and the fusion of weighted window maps, against numpy oracles."""

import cv2
import numpy as np
import pytest
import torch
from conftest import minmax
from torch import nn

from pytorch_grad_cam import SESS, BaseCAM, GradCAM
from pytorch_grad_cam.sess import gaussian_blur, sliding_window, window_starts
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


@pytest.mark.parametrize(
    "length, step, window, starts",
    [
        (10, 3, 4, [0, 3, 6]),
        (10, 4, 4, [0, 4, 6]),  # the last window moved back flush with the end
        (10, 5, 4, [0, 5]),  # already flush
        (10, 7, 4, [0, 6]),
        (10, 10, 4, [0]),  # one step covers it: the second start would be past the end
        (15, 7, 4, [0, 7, 11]),
        (4, 2, 4, [0]),
        (3, 2, 4, [0]),  # shorter than the window
    ],
)
def test_window_starts(length, step, window, starts):
    assert window_starts(length, step, window) == starts


def test_sliding_window_is_x_y_row_by_row():
    assert sliding_window(10, 8, 3, 4) == [
        (0, 0), (3, 0), (4, 0), (0, 3), (3, 3), (4, 3), (0, 6), (3, 6), (4, 6)
    ]  # fmt: skip


class MeanNet(nn.Module):
    """logits = (mean of x, 0); ``probe`` passes the input through (the explained layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.probe = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.probe(x) * self.scale
        mean = a.mean(dim=(1, 2, 3))
        return torch.stack([mean, torch.zeros_like(mean)], dim=1)


class InputCAM(BaseCAM):
    """A base method whose map is the layer output's first channel: here the window itself."""

    uses_gradients = False

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        return activations[:, 0]


def fusion_oracle(image, window, step, ratio=0.0, theta=0.0, pool="mean"):
    """numpy SESS at one scale (the image itself): scores = window means, no smoothing."""
    corners = sliding_window(*image.shape, step, window)
    crops = [image[y : y + window, x : x + window] for x, y in corners]
    scores = np.array([c.mean() for c in crops])
    kept = np.argsort(scores, kind="stable")[int(len(crops) * ratio) :]
    pasted = []
    for i in kept:
        canvas = np.zeros_like(image)
        x, y = corners[i]
        canvas[y : y + window, x : x + window] = (
            minmax(crops[i][None])[0] * scores[i] / scores.max()
        )
        pasted.append(canvas)
    pasted = np.stack(pasted)
    if pool == "max":  # theta does not apply (grad-cam's rule)
        fused = pasted.max(axis=0)
    else:  # the mean of the values above theta
        pasted = np.where(pasted > theta, pasted, 0)
        fused = pasted.sum(axis=0) / np.maximum((pasted > 0).sum(axis=0), 1)
    return minmax(fused[None])[0]


@pytest.mark.parametrize(
    "step, ratio, theta, pool",
    [(6, 0.0, 0.0, "mean"), (3, 0.0, 0.0, "mean"), (3, 0.5, 0.0, "mean"), (3, 0.0, 0.4, "mean"),
     (3, 0.3, 0.2, "max"), (3, 0.0, 0.5, "max")],
)  # fmt: skip
def test_fusion_matches_numpy_oracle(step, ratio, theta, pool):
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 1.0, size=(6, 12)).astype(np.float32)
    model = MeanNet()
    sess = SESS(
        model, [model.probe], base_method=InputCAM, scales=[6], window_size=6, step_size=step,
        pre_filter_ratio=ratio, theta=theta, pool=pool, smooth=False, use_softmax_scores=False,
    )  # fmt: skip
    got = sess(torch.from_numpy(image)[None, None], [ClassifierOutputTarget(0)])
    expected = fusion_oracle(image.astype(np.float64), 6, step, ratio, theta, pool)
    np.testing.assert_allclose(got[0], expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(12, 20), (4, 5), (1, 7)])
def test_smoothing_is_opencv_gaussian_blur(shape):
    maps = np.random.default_rng(1).random((2, *shape)).astype(np.float32)
    got = gaussian_blur(torch.from_numpy(maps), 11, 5.0).numpy()
    expected = np.stack([cv2.GaussianBlur(m, (11, 11), 5) for m in maps])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_scales():
    model = MeanNet()
    sess = SESS(model, [model.probe], base_method=InputCAM)
    assert sess.get_scales(16) == [16, 21, 26, 31, 36, 41, 46, 51, 56, 61, 66, 71]
    sess.num_scales, sess.scale_step_ratio = 3, 0.5
    assert sess.get_scales(5) == [5, 7, 9]  # round(2.5) = 2
    sess.scales = [30, 40]
    assert sess.get_scales(16) == [30, 40]


@pytest.fixture
def conv_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5),
    ).eval()  # fmt: skip
    return model


def test_multiscale_batched_and_per_image_targets(conv_model):
    x = torch.randn(2, 3, 12, 16, generator=torch.Generator().manual_seed(2))
    sess = SESS(conv_model, [conv_model[2]], scales=[12, 15], window_size=8, step_size=4)
    sess.batch_size = 8
    batches = []
    handle = conv_model.register_forward_pre_hook(lambda m, args: batches.append(len(args[0])))
    try:
        targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]
        got = sess(x, targets)
    finally:
        handle.remove()
    assert got.dtype == np.float32 and got.shape == (2, 12, 16)
    assert got.min() >= 0 and np.allclose(got.max(axis=(1, 2)), 1, atol=1e-6)
    # windows: 12 x 16 -> 2 rows x 3; 15 x 20 -> 3 x 4: 18 per image, 36 in all, scored in
    # batches of 8, then explained in batches of 8
    assert batches == [8, 8, 8, 8, 4] * 2
    for i in range(2):
        alone = sess(x[i : i + 1], targets[i : i + 1])
        np.testing.assert_allclose(got[i], alone[0], atol=1e-5)
    assert not any(m._forward_hooks for m in conv_model.modules())
    assert all(p.grad is None for p in conv_model.parameters())


def test_top_class_targets_by_default(conv_model):
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    sess = SESS(conv_model, [conv_model[2]], num_scales=2, base_method=GradCAM)
    top = conv_model(x).argmax(dim=1).tolist()
    np.testing.assert_allclose(sess(x), sess(x, [ClassifierOutputTarget(c) for c in top]))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"pre_filter_ratio": 1.0}, "pre_filter_ratio must be in"),
        ({"pool": "median"}, "pool must be 'mean' or 'max'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"step_size": 0}, "step_size must be a positive integer"),
    ],
)
def test_bad_options_are_named(conv_model, options, message):
    with pytest.raises(ValueError, match=message):
        SESS(conv_model, [conv_model[2]], **options)


def test_bad_inputs_are_named(conv_model):
    sess = SESS(conv_model, [conv_model[2]], scales=[6], window_size=8)
    with pytest.raises(ValueError, match="every scale must be at least the window size 8"):
        sess(torch.rand(1, 3, 12, 12), [0])
    with pytest.raises(ValueError, match=r"input_tensor must be a batch of shape \(B, C, H, W\)"):
        sess(torch.rand(3, 12, 12), [0])

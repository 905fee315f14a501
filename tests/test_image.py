"""Tests for pytorch_grad_cam.utils.image."""

import warnings

import cv2
import numpy as np
import pytest
import torch

from pytorch_grad_cam.utils.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    deprocess_image,
    preprocess_image,
    scale_cam_image,
    show_cam_on_image,
)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _scale_oracle(cams, target_size):
    """numpy + OpenCV reference: min-max normalise each map then cv2.resize bilinearly."""
    out = []
    for cam in cams:
        cam = cam - cam.min()
        cam = cam / (cam.max() + 1e-7)
        if target_size is not None:
            cam = cv2.resize(cam, tuple(target_size), interpolation=cv2.INTER_LINEAR)
        out.append(cam)
    return np.float32(out)


# ---------------------------------------------------------------- scale_cam_image


@pytest.mark.parametrize(
    "shape, target_size",
    [
        ((2, 7, 5), (20, 13)),  # upsizing, non-square, (W, H) order
        ((3, 31, 17), (6, 10)),  # downsizing by a non-integer factor
        ((1, 16, 12), (6, 8)),  # downsizing by exactly 2
        ((2, 6, 9), (9, 6)),  # transposed aspect ratio
        ((2, 5, 5), None),  # normalisation only
    ],
)
def test_scale_cam_image_matches_cv2_oracle(rng, shape, target_size):
    cams = rng.normal(size=shape).astype(np.float32) * 3 + 1
    got = scale_cam_image(cams, target_size)
    expected = _scale_oracle(cams, target_size)
    assert isinstance(got, np.ndarray)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_scale_cam_image_on_one_2d_map_equals_a_batch_of_one(rng):
    cam = rng.normal(size=(7, 5)).astype(np.float32)
    got = scale_cam_image(cam, (20, 13))  # (W, H)
    assert got.shape == (13, 20)
    np.testing.assert_allclose(got, _scale_oracle(cam[None], (20, 13))[0], atol=1e-5)
    torch.testing.assert_close(
        scale_cam_image(torch.from_numpy(cam)), torch.from_numpy(scale_cam_image(cam))
    )


def test_scale_cam_image_torch_in_torch_out(rng):
    cams = rng.random((2, 4, 6)).astype(np.float32)
    got_np = scale_cam_image(cams, (12, 8))
    got_t = scale_cam_image(torch.from_numpy(cams), (12, 8))
    assert isinstance(got_t, torch.Tensor)
    assert tuple(got_t.shape) == (2, 8, 12)
    np.testing.assert_allclose(got_t.numpy(), got_np, atol=1e-6)


def test_scale_cam_image_3d_volume(rng):
    vols = rng.random((2, 3, 4, 5)).astype(np.float32)
    normalised = scale_cam_image(vols)
    assert normalised.shape == vols.shape
    for v in normalised:
        assert v.min() == pytest.approx(0.0, abs=1e-6)
        assert v.max() == pytest.approx(1.0, abs=1e-6)
    resized = scale_cam_image(vols, (10, 8, 6))  # (W, H, D)
    assert resized.shape == (2, 6, 8, 10)
    assert resized.min() >= -1e-6 and resized.max() <= 1 + 1e-6


# ---------------------------------------------------------------- preprocess / deprocess


def test_preprocess_image_defaults_are_grad_cams_half_mean_and_std(rng):
    img = rng.random((5, 7, 3)).astype(np.float32)
    tensor = preprocess_image(img)
    assert tensor.shape == (1, 3, 5, 7)
    assert tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor[0].numpy(), img.transpose(2, 0, 1) * 2 - 1, atol=1e-6)


def test_preprocess_image_normalises_each_channel(rng):
    img = rng.random((5, 7, 3)).astype(np.float32)
    tensor = preprocess_image(img, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for c in range(3):
        expected = (img[:, :, c] - MEAN[c]) / STD[c]
        np.testing.assert_allclose(tensor[0, c].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_preprocess_image_round_trip(rng):
    img = rng.random((4, 6, 3))
    tensor = preprocess_image(img, mean=[0.5, 0.25, 0.0], std=[0.5, 2.0, 1.0])
    back = tensor[0].numpy().transpose(1, 2, 0) * np.array([0.5, 2.0, 1.0]) + [0.5, 0.25, 0.0]
    np.testing.assert_allclose(back, img, atol=1e-6)


def test_preprocess_image_uint8_is_divided_by_255(rng):
    img_u8 = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    from_u8 = preprocess_image(img_u8)
    from_float = preprocess_image(img_u8.astype(np.float32) / 255.0)
    torch.testing.assert_close(from_u8, from_float)


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (1, 4, 4, 3)])
def test_preprocess_image_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match="img"):
        preprocess_image(np.zeros(shape, dtype=np.float32))


def test_deprocess_image_properties(rng):
    grads = rng.normal(size=(6, 5, 3)) * 1e-3
    out = deprocess_image(grads)
    assert out.dtype == np.uint8 and out.shape == grads.shape
    # Standardisation makes the result invariant to affine rescaling of the input.
    np.testing.assert_allclose(out.astype(int), deprocess_image(grads * 50 + 3).astype(int), atol=1)
    # Order is preserved (monotone map) and the centre value is mapped near 127.
    flat_in, flat_out = grads.ravel(), out.ravel().astype(int)
    order = np.argsort(flat_in)
    assert np.all(np.diff(flat_out[order]) >= 0)
    assert abs(np.median(flat_out) - 127.5) <= 3


def test_deprocess_image_hand_values():
    # mean 0, std 1 -> x * 0.1 + 0.5, clipped.
    x = np.array([-1.0, 1.0, -1.0, 1.0])
    expected = np.uint8(np.clip(x / (1 + 1e-5) * 0.1 + 0.5, 0, 1) * 255)
    np.testing.assert_array_equal(deprocess_image(x), expected)
    assert deprocess_image(np.full((2, 2), 7.0)).tolist() == [[127, 127], [127, 127]]
    extreme = deprocess_image(np.array([0.0] * 99 + [1.0]))
    assert extreme[-1] == 255 and extreme[0] < 127


# ---------------------------------------------------------------- show_cam_on_image


def _jet(value):
    """BGR float colour of the JET colormap for a mask value in [0, 1]."""
    return cv2.applyColorMap(np.uint8([[255 * value]]), cv2.COLORMAP_JET)[0, 0] / 255.0


def test_show_cam_on_image_hand_computation():
    img = np.full((2, 3, 3), 0.2, dtype=np.float32)
    img[0, 0] = [1.0, 0.0, 0.5]
    mask = np.zeros((2, 3), dtype=np.float32)
    mask[1, 2] = 1.0
    out = show_cam_on_image(img, mask, image_weight=0.25)

    blend = np.empty((2, 3, 3), dtype=np.float64)
    for i in range(2):
        for j in range(3):
            blend[i, j] = 0.75 * _jet(mask[i, j]) + 0.25 * img[i, j]
    expected = np.uint8(255 * blend / blend.max())
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_allclose(out.astype(int), expected.astype(int), atol=1)
    # JET at 0 is pure dark blue in BGR: after normalisation the blue channel of a 0.2-gray
    # pixel is (0.75 * 128/255 + 0.05) / max.
    assert out[1, 0, 0] > out[1, 0, 2]


def test_show_cam_on_image_use_rgb_swaps_heatmap_channels(rng):
    img = np.full((4, 5, 3), 0.3, dtype=np.float32)  # gray: channel order does not matter
    mask = rng.random((4, 5)).astype(np.float32)
    bgr = show_cam_on_image(img, mask, use_rgb=False)
    rgb = show_cam_on_image(img, mask, use_rgb=True)
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])


def test_show_cam_on_image_weights_extremes(rng):
    img = rng.random((3, 3, 3)).astype(np.float32)
    mask = rng.random((3, 3)).astype(np.float32)
    only_img = show_cam_on_image(img, mask, image_weight=1.0)
    np.testing.assert_array_equal(only_img, np.uint8(255 * img / img.max()))
    only_heat = show_cam_on_image(img, mask, image_weight=0.0)
    heat = cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET) / 255.0
    np.testing.assert_allclose(only_heat.astype(int), np.uint8(255 * heat / heat.max()), atol=1)


def test_show_cam_on_image_accepts_grayscale_and_tensors(rng):
    gray = rng.random((4, 4)).astype(np.float32)
    mask = rng.random((4, 4)).astype(np.float32)
    expected = show_cam_on_image(np.repeat(gray[:, :, None], 3, axis=2), mask)
    np.testing.assert_array_equal(show_cam_on_image(gray, mask), expected)
    from_tensors = show_cam_on_image(torch.from_numpy(gray).repeat(3, 1, 1).permute(1, 2, 0), mask)
    np.testing.assert_array_equal(from_tensors, expected)
    np.testing.assert_array_equal(show_cam_on_image(gray, torch.from_numpy(mask)), expected)
    np.testing.assert_array_equal(show_cam_on_image(gray, mask[None]), expected)


@pytest.mark.parametrize(
    "img, mask, kwargs, name",
    [
        (np.full((4, 4, 3), 200.0), np.zeros((4, 4)), {}, "img"),  # 0..255 image
        (np.full((4, 4, 3), -0.1), np.zeros((4, 4)), {}, "img"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4)), {}, "img"),  # 4 channels
        (np.zeros((4, 4, 3)), np.zeros((4, 4)), {"image_weight": 1.5}, "image_weight"),
        (np.zeros((4, 4, 3)), np.zeros((4, 4)), {"image_weight": -0.1}, "image_weight"),
        (np.zeros((4, 4, 3)), np.full((4, 4), 2.0), {}, "mask"),
        (np.zeros((4, 4, 3)), np.full((4, 4), -0.5), {}, "mask"),
        (np.zeros((4, 4, 3)), np.full((4, 4), np.nan), {}, "mask"),
        (np.zeros((4, 4, 3)), np.zeros((4, 5)), {}, "mask"),  # size mismatch
        (np.zeros((4, 4, 3)), np.zeros((2, 4, 4)), {}, "mask"),
    ],
)
def test_show_cam_on_image_rejects_bad_inputs(img, mask, kwargs, name):
    with pytest.raises(ValueError, match=name):
        show_cam_on_image(img, mask, **kwargs)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "img, error, match",
    [
        (
            np.full((4, 4, 3), 200.0, np.float32),
            ValueError,
            r"values in \[0, 1\].*\[200.0, 200.0\]",
        ),
        (np.full((4, 4, 3), -0.5, np.float32), ValueError, r"values in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan, np.float32), ValueError, "img contains NaN or Inf"),
        (np.zeros((4, 4, 3), np.uint16), TypeError, "got dtype uint16"),
        (np.zeros((4, 4, 3), np.int64), TypeError, "got dtype int64"),
        (np.zeros((4, 4, 3), bool), TypeError, "got dtype bool"),
        (np.zeros((0, 4, 3), np.float32), ValueError, "non-empty HxWx3"),
    ],
)
def test_preprocess_image_rejects_images_it_cannot_scale(img, error, match):
    with pytest.raises(error, match=match):
        preprocess_image(img)


@pytest.mark.parametrize(
    "kwargs", [{"std": (0.5, 0.0, 0.5)}, {"std": (0.5, -0.2, 0.5)}, {"mean": (0.5, np.nan, 0.5)}]
)
def test_preprocess_image_rejects_zero_std_and_non_finite_statistics(kwargs):
    with pytest.raises(ValueError, match="std finite and positive"):
        preprocess_image(np.zeros((4, 4, 3), np.float32), **kwargs)


@pytest.mark.parametrize(
    "target_size, error, match",
    [
        (64, TypeError, r"target_size must be a \(width, height\) pair.*got 64"),
        ("64", TypeError, "target_size must be"),
        ((64, 0), ValueError, "positive integers"),
        ((64.5, 32), ValueError, "positive integers"),
        ((64, 32, 8), ValueError, "target_size must have 2 entries"),
    ],
)
def test_scale_cam_image_rejects_bad_target_sizes(target_size, error, match):
    with pytest.raises(error, match=match):
        scale_cam_image(np.zeros((2, 4, 4), np.float32), target_size=target_size)


def test_scale_cam_image_accepts_numpy_and_torch_sizes(rng):
    cams = rng.random((2, 4, 5)).astype(np.float32)
    expected = scale_cam_image(cams, (7, 6))
    np.testing.assert_array_equal(scale_cam_image(cams, np.array([7, 6])), expected)
    np.testing.assert_array_equal(scale_cam_image(cams, torch.Size([7, 6])), expected)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0)])
def test_show_cam_on_image_on_an_empty_image_raises_instead_of_crashing_opencv(shape):
    # cv2.applyColorMap on a (0, 0) map kills the interpreter with SIGFPE: checked before.
    with pytest.raises(ValueError, match=r"img is empty \(shape"):
        show_cam_on_image(np.zeros((*shape, 3), np.float32), np.zeros(shape, np.float32))


# ---------------------------------------------------------------- factorization helpers
from pytorch_grad_cam.utils.image import (  # noqa: E402
    concept_colors,
    create_labels_legend,
    scale_accross_batch_and_channels,
    show_factorization_on_image,
)


def test_scale_accross_batch_and_channels_scales_every_map(rng):
    maps = rng.random((2, 3, 4, 5)).astype(np.float32)
    got = scale_accross_batch_and_channels(maps, (10, 8))
    assert got.shape == (2, 3, 8, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got[1, 2], _scale_oracle(maps[1, 2][None], (10, 8))[0], atol=1e-6)
    as_torch = scale_accross_batch_and_channels(torch.from_numpy(maps), None)
    assert isinstance(as_torch, torch.Tensor) and as_torch.shape == maps.shape


def test_factorization_overlay_hand_made():
    # pixel (0, 0): concept 0 (pure red) at 0.5 -> HSV value 127 -> (127, 0, 0);
    # pixel (0, 1): concept 1 (pure blue) at 1.0 -> (0, 0, 255); blended half with grey 0.2
    maps = np.zeros((2, 1, 2), np.float32)
    maps[0, 0, 0], maps[1, 0, 1] = 0.5, 1.0
    before = maps.copy()
    colors = [np.array([1.0, 0, 0]), np.array([0, 0, 1.0])]
    img = np.full((1, 2, 3), 0.2, np.float32)
    pure = show_factorization_on_image(img, maps, colors=colors, image_weight=0.0)
    np.testing.assert_array_equal(pure[0], [[127, 0, 0], [0, 0, 255]])
    blend = show_factorization_on_image(img, maps, colors=colors, image_weight=0.5)
    np.testing.assert_array_equal(blend[0], [[89, 25, 25], [25, 25, 153]])
    np.testing.assert_array_equal(maps, before)  # the explanations are not modified
    legend = show_factorization_on_image(img, maps, colors=colors, concept_labels=["a", "b\nc"])
    assert legend.shape == (1, 4, 3) and legend.dtype == np.uint8


def test_factorization_overlay_default_colours_and_errors():
    colors = concept_colors(3)
    assert len(colors) == 3 and np.allclose(colors[0], [1.0, 0.0, 0.16])
    assert len({tuple(np.round(c, 3)) for c in colors}) == 3
    with pytest.raises(ValueError, match=r"explanations must have shape \(K, H, W\)"):
        show_factorization_on_image(np.zeros((4, 4, 3)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="img must be a float image with values in"):
        show_factorization_on_image(np.full((4, 4, 3), 255.0), np.zeros((2, 4, 4)))


def test_labels_legend():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])
    labels = {0: "cat", 1: "dog", 2: "car"}
    assert create_labels_legend(scores, labels) == ["dog:0.70\ncar:0.20", "cat:0.50\ncar:0.40"]
    assert create_labels_legend(scores, labels, top_k=1) == ["dog:0.70", "cat:0.50"]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_scale_cam_image_names_non_finite_maps(bad):
    cams = np.random.default_rng(0).random((3, 7, 7)).astype(np.float32)
    cams[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"cam contains NaN or Inf values \(image 1\)"):
        scale_cam_image(cams)
    with pytest.raises(ValueError, match=r"cam contains NaN or Inf values \(image 0\)"):
        scale_cam_image(np.full((1, 7, 7), np.nan, np.float32), (5, 5))


def test_scale_cam_image_names_empty_maps_and_keeps_empty_batches():
    with pytest.raises(ValueError, match=r"cam has empty maps \(shape \(1, 0, 0\)\)"):
        scale_cam_image(np.zeros((1, 0, 0), np.float32), (5, 5))
    assert scale_cam_image(np.zeros((0, 7, 7), np.float32), (5, 4)).shape == (0, 4, 5)


def test_deprocess_image_names_non_finite_values():
    img = np.random.default_rng(0).random((4, 4, 3))
    img[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="img contains NaN or Inf values"):
        deprocess_image(img)


def test_deprocess_image_names_an_empty_image():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clear error, not numpy's "mean of empty slice"
        with pytest.raises(ValueError, match=r"img is empty \(shape \(0, 0, 3\)\)"):
            deprocess_image(np.zeros((0, 0, 3)))


def test_show_cam_on_image_checks_the_colormap():
    img, mask = np.zeros((4, 5, 3), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"colormap must be one of OpenCV's .*COLORMAP_JET.*999"):
        show_cam_on_image(img, mask, colormap=999)
    viridis = show_cam_on_image(img, mask, colormap=cv2.COLORMAP_VIRIDIS, image_weight=0.0)
    lookup = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)  # greys
    grey = show_cam_on_image(img, mask, colormap=lookup, image_weight=0.0)
    assert viridis.shape == grey.shape == (4, 5, 3)
    assert (grey == 255).all() and not (viridis == 255).all()

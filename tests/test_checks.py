"""The shared validation helpers (pytorch_grad_cam._checks)."""

import numpy as np
import pytest
import torch
from conftest import conv_net
from torch import nn
from torchvision.models.convnext import LayerNorm2d

from pytorch_grad_cam._checks import (
    CallHealth,
    all_finite,
    check_channels_first,
    check_finite_scores,
    checked_batch,
    class_index,
    describe_images,
    grid_fits,
    per_image,
)


@pytest.mark.parametrize(
    "value", [3, np.int64(3), np.uint8(3), torch.tensor(3), np.array(3), torch.tensor(3).short()]
)
def test_class_index_accepts_integers_of_python_numpy_and_torch(value):
    got = class_index(value, "category")
    assert got == 3 and type(got) is int


@pytest.mark.parametrize(
    "value", [2.7, 2.0, np.float32(2.0), torch.tensor(2.0), np.array(2.5), float("nan")]
)
def test_class_index_rejects_floats_instead_of_truncating_them(value):
    with pytest.raises(TypeError, match="my_arg must be an integer class index; got the float"):
        class_index(value, "my_arg")


@pytest.mark.parametrize("value", ["3", None, [3], torch.tensor([3])])
def test_class_index_rejects_other_types(value):
    with pytest.raises(TypeError, match="my_arg must be an integer class index; got"):
        class_index(value, "my_arg")


def test_describe_images():
    assert describe_images([False, True]) == "image 1"
    assert describe_images([True, False, True]) == "images 0, 2"
    assert describe_images([True] * 10).endswith("... (10 of 10)")


def test_checked_batch_casts_floats_and_keeps_the_values():
    model = conv_net()
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    got = checked_batch(x, model)
    assert got.dtype == torch.float32 and torch.equal(got, x.float())
    assert checked_batch(x.float(), model.double()).dtype == torch.float64
    no_parameters = nn.Sequential(nn.ReLU())
    assert checked_batch(x, no_parameters).dtype == torch.float64  # nothing to cast to
    with torch.inference_mode():
        frozen = torch.rand(1, 3, 4, 4)
    assert not checked_batch(frozen, model).is_inference()


@pytest.mark.parametrize(
    "value, error, match",
    [
        (np.zeros((1, 3, 4, 4)), TypeError, "input_tensor must be a torch.Tensor; got ndarray"),
        (torch.zeros(3, 4, 4), ValueError, r"unsqueeze\(0\)"),
        (torch.zeros(1, 1, 3, 4, 4, 4), ValueError, r"\(B, C, H, W\) or \(B, C, D, H, W\)"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), TypeError, "dtype torch.uint8"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.complex64), TypeError, "floating-point"),
        (torch.zeros(1, 3, 4, 4, device="meta"), ValueError, "input_tensor is on the meta device"),
    ],
)
def test_checked_batch_errors(value, error, match):
    with pytest.raises(error, match=match):
        checked_batch(value, conv_net())


def test_a_model_on_the_meta_device_is_named():
    model = conv_net().to("meta")
    with pytest.raises(ValueError, match=r"the model is on the meta device.*to_empty"):
        checked_batch(torch.zeros(1, 3, 4, 4), model)


def test_checked_batch_names_the_argument_and_the_images_with_nan():
    x = torch.zeros(4, 3, 4, 4)
    x[2, 1, 0, 0] = float("-inf")
    x[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"input_img contains NaN or Inf values \(images 2, 3\)"):
        checked_batch(x, conv_net(), "input_img", ndims=(4,))
    with pytest.raises(ValueError, match=r"input_img must be a batch of shape \(B, C, H, W\);"):
        checked_batch(torch.zeros(1, 1, 2, 2, 2), conv_net(), "input_img", ndims=(4,))


@pytest.mark.parametrize(
    "grid, size, fits",
    [
        ((7, 7), (224, 224), True),
        ((2, 2), (33, 64), True),  # strided rounding
        ((8, 15), (225, 449), True),
        ((1, 1), (20, 28), True),
        ((4, 16), (32, 128), True),
        ((8, 8), (16, 64), False),  # 64 tokens laid out square for a 1:4 input
        ((11, 11), (64, 128), False),
        ((5, 5, 5), (20, 20, 40), False),
    ],
)
def test_grid_fits(grid, size, fits):
    assert grid_fits(grid, size) is fits


def test_channels_last_outputs_are_told_apart_from_channels_first_ones():
    tokens = torch.zeros(2, 4, 4, 8)  # (B, H, W, C = 8)
    with pytest.raises(ValueError, match="channels-last .*swinT_reshape_transform"):
        check_channels_first(tokens, nn.LayerNorm(8), "layer")
    with pytest.raises(ValueError, match="its last layer has 8 features"):
        check_channels_first(tokens, nn.Sequential(nn.Linear(3, 8), nn.Dropout()), "layer")
    with pytest.raises(ValueError, match=r"permute\(0, 4, 1, 2, 3\)"):
        check_channels_first(torch.zeros(1, 2, 3, 4, 8), nn.LayerNorm(8), "layer")
    with pytest.raises(ValueError, match="channels-last"):  # 8 channels, 8x8 grid: the norm tells
        check_channels_first(torch.zeros(1, 8, 8, 8), nn.LayerNorm(8), "layer")
    channels_first = torch.zeros(2, 8, 4, 8)  # (B, C = 8, H, W = 8)
    for layer in (nn.Conv2d(3, 8, 1), LayerNorm2d(8), nn.BatchNorm2d(8), nn.LayerNorm([8, 4, 8])):
        check_channels_first(channels_first, layer, "layer")
    check_channels_first(torch.zeros(2, 8, 4, 5), nn.Identity(), "layer")  # unknown: no claim


def test_the_input_size_tells_channels_last_outputs_of_layers_without_a_channel_count():
    with pytest.raises(ValueError, match="its 7x7 grid before the last axis is what fits the 224"):
        check_channels_first(torch.zeros(1, 7, 7, 96), nn.GELU(), "layer", (224, 224))
    with pytest.raises(ValueError, match=r"permute\(0, 4, 1, 2, 3\)"):
        check_channels_first(torch.zeros(1, 4, 4, 4, 48), nn.Dropout(), "layer", (32, 32, 32))
    # the grid fits only as (B, C, H, W): no claim, even from a Linear of the width
    check_channels_first(torch.zeros(1, 16, 32, 32), nn.Linear(4, 32), "layer", (32, 32))
    with pytest.raises(ValueError, match="its LayerNorm normalises 8"):  # both fit: the norm tells
        check_channels_first(torch.zeros(1, 8, 8, 8), nn.LayerNorm(8), "layer", (32, 32))


def test_call_health_reads_every_flag_at_once():
    health = CallHealth(3)
    health.add("a", 0, torch.tensor([True, False, True]))
    health.add("b", 1, torch.tensor(True))  # a scalar counts for every image
    health.add("c", 0, per_image("range", torch.tensor([[0.0, 2.0], [1.0, 1.0], [3.0, -1.0]])))
    assert health.read() == {
        ("a", 0): [1.0, 0.0, 1.0],
        ("b", 1): [1.0, 1.0, 1.0],
        ("c", 0): [2.0, 0.0, 4.0],
    }
    assert CallHealth(2).read() == {}


def test_per_image_reductions():
    t = torch.tensor([[[0.0, 0.0]], [[0.0, float("nan")]], [[-1.0, 3.0]]])
    assert per_image("nonzero", t).tolist() == [False, True, True]
    assert per_image("finite", t).tolist() == [True, False, True]
    assert per_image("peak", t)[2] == 3.0
    assert per_image("range", t)[2] == 4.0


def test_check_finite_scores_names_the_target_image_and_column():
    targets = ["t0", "t1"]
    check_finite_scores(torch.tensor([1.0, 2.0]), targets)
    with pytest.raises(ValueError, match=r"targets\[1\] \('t1'\) gives a non-finite score \(inf\)"):
        check_finite_scores(torch.tensor([1.0, float("inf")]), targets)
    scores = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, float("nan")]])
    with pytest.raises(ValueError, match=r"for image 1 with channel 2 removed;"):
        check_finite_scores(scores, targets, " with channel {k} removed")


def test_all_finite_sees_nan_and_both_infinities():
    x = torch.rand(2, 3, 4)
    assert bool(all_finite(x)) and bool(all_finite(torch.zeros(0))) and bool(all_finite(x.long()))
    for bad in (float("nan"), float("inf"), float("-inf")):
        y = x.clone()
        y[1, 2, 3] = bad
        assert not bool(all_finite(y)) and not bool(all_finite(y.half()))

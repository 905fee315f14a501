"""Tests for pytorch_grad_cam.utils.reshape_transforms."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from pytorch_grad_cam.utils.reshape_transforms import (
    fasterrcnn_reshape_transform,
    swinT_reshape_transform,
    vit_reshape_transform,
)


def _position_code(batch, channels, height, width):
    """Tensor (B, C, H, W) whose value encodes (b, c, i, j)."""
    b = torch.arange(batch).view(-1, 1, 1, 1) * 10000
    c = torch.arange(channels).view(1, -1, 1, 1) * 1000
    i = torch.arange(height).view(1, 1, -1, 1) * 100
    j = torch.arange(width).view(1, 1, 1, -1)
    return (b + c + i + j).float()


def _tokens(grid, num_prefix):
    """ViT tokens (B, P + H*W, C): patch (i, j) is token P + i*W + j; prefix tokens are -1."""
    batch, channels, height, width = grid.shape
    patches = grid.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    prefix = torch.full((batch, num_prefix, channels), -1.0)
    return torch.cat([prefix, patches], dim=1)


# ---------------------------------------------------------------- ViT


@pytest.mark.parametrize("num_prefix", [0, 1, 2, 5])
def test_vit_explicit_grid_places_every_token(num_prefix):
    grid = _position_code(2, 5, 3, 4)
    tokens = _tokens(grid, num_prefix)
    out = vit_reshape_transform(tokens, height=3, width=4)
    assert out.shape == (2, 5, 3, 4)
    torch.testing.assert_close(out, grid)
    out = vit_reshape_transform(tokens, height=3, width=4, num_prefix_tokens=num_prefix)
    torch.testing.assert_close(out, grid)


@pytest.mark.parametrize(
    "num_prefix, side",
    [(1, 4), (0, 4), (2, 4), (5, 4), (1, 14), (2, 14), (0, 3)],
    ids=["cls", "no-prefix", "distilled", "registers", "vit-224", "deit-distilled", "tiny"],
)
def test_vit_infers_square_grid_and_prefix(num_prefix, side):
    grid = _position_code(1, 3, side, side)
    out = vit_reshape_transform(_tokens(grid, num_prefix))
    torch.testing.assert_close(out, grid)


def test_vit_one_side_given():
    grid = _position_code(1, 2, 2, 6)
    out = vit_reshape_transform(_tokens(grid, 1), height=2)
    torch.testing.assert_close(out, grid)
    out = vit_reshape_transform(_tokens(grid, 1), width=6)
    torch.testing.assert_close(out, grid)


def test_vit_explicit_prefix_overrides_inference():
    # 17 tokens would be inferred as 1 prefix + 4x4; with 8 register-like prefix tokens
    # the remaining 9 form a 3x3 grid.
    grid = _position_code(1, 2, 3, 3)
    out = vit_reshape_transform(_tokens(grid, 8), num_prefix_tokens=8)
    torch.testing.assert_close(out, grid)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((1, 60, 4), {}),  # 52..60 contains no perfect square
        ((1, 17, 4), {"height": 5, "width": 5}),  # more patches than tokens
        ((1, 17, 4), {"num_prefix_tokens": 2}),  # 15 is not square
        ((1, 17, 4), {"height": 3, "width": 5, "num_prefix_tokens": 1}),
    ],
)
def test_vit_no_fitting_grid_raises(shape, kwargs):
    with pytest.raises(ValueError, match="height and width"):
        vit_reshape_transform(torch.zeros(shape), **kwargs)


def test_vit_rejects_non_token_input():
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        vit_reshape_transform(torch.zeros(1, 3, 4, 4))


def test_vit_transform_is_differentiable():
    tokens = torch.randn(2, 1 + 9, 4, requires_grad=True)
    out = vit_reshape_transform(tokens)
    (out * 2).sum().backward()
    assert torch.all(tokens.grad[:, 0] == 0)
    assert torch.all(tokens.grad[:, 1:] == 2)


# ---------------------------------------------------------------- Swin


def test_swin_channels_last():
    grid = _position_code(2, 3, 4, 5)
    channels_last = grid.permute(0, 2, 3, 1).contiguous()
    out = swinT_reshape_transform(channels_last)
    assert out.shape == (2, 3, 4, 5)
    torch.testing.assert_close(out, grid)
    torch.testing.assert_close(swinT_reshape_transform(channels_last, 4, 5), grid)


def test_swin_tokens_square_and_explicit():
    square = _position_code(1, 3, 7, 7)
    torch.testing.assert_close(swinT_reshape_transform(_tokens(square, 0)), square)
    rect = _position_code(2, 3, 2, 5)
    torch.testing.assert_close(swinT_reshape_transform(_tokens(rect, 0), height=2, width=5), rect)


def test_swin_errors():
    with pytest.raises(ValueError, match="height and width"):
        swinT_reshape_transform(torch.zeros(1, 10, 3))  # 10 tokens: not a square
    with pytest.raises(ValueError, match="height"):
        swinT_reshape_transform(torch.zeros(1, 4, 4, 3), height=7, width=7)
    with pytest.raises(ValueError, match="Swin"):
        swinT_reshape_transform(torch.zeros(3, 4))


# ---------------------------------------------------------------- Faster R-CNN


def test_fasterrcnn_resizes_to_pool_and_concatenates():
    big = torch.randn(1, 2, 8, 8)
    mid = -torch.ones(1, 3, 4, 4) * 3  # abs() makes it +3
    pool = torch.randn(1, 1, 2, 2)
    x = OrderedDict([("0", big), ("1", mid), ("pool", pool)])
    out = fasterrcnn_reshape_transform(x)
    assert out.shape == (1, 6, 2, 2)
    # Bilinear 8 -> 2 with half-pixel centres samples at 4i + 1.5: mean of pixels 4i+1, 4i+2.
    a = big.abs()
    for i in range(2):
        for j in range(2):
            window = a[0, :, 4 * i + 1 : 4 * i + 3, 4 * j + 1 : 4 * j + 3]
            torch.testing.assert_close(out[0, :2, i, j], window.mean(dim=(1, 2)))
    torch.testing.assert_close(out[:, 2:5], torch.full((1, 3, 2, 2), 3.0))
    torch.testing.assert_close(out[:, 5:], pool.abs())


def test_fasterrcnn_without_pool_uses_smallest_map():
    x = OrderedDict([("a", torch.ones(2, 1, 6, 6)), ("b", torch.ones(2, 2, 3, 3))])
    out = fasterrcnn_reshape_transform(x)
    assert out.shape == (2, 3, 3, 3)
    torch.testing.assert_close(out, torch.ones(2, 3, 3, 3))


def test_fasterrcnn_is_differentiable():
    feat = torch.randn(1, 2, 4, 4, requires_grad=True)
    out = fasterrcnn_reshape_transform(OrderedDict([("0", feat), ("pool", torch.ones(1, 1, 2, 2))]))
    out.sum().backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0


def test_vit_given_height_and_width_must_account_for_every_token():
    tokens = torch.rand(1, 197, 8)
    with pytest.raises(ValueError, match="leave 148 of the 197 tokens as prefix"):
        vit_reshape_transform(tokens, height=7, width=7)
    assert vit_reshape_transform(tokens, 14, 14).shape == (1, 8, 14, 14)
    # an explicit num_prefix_tokens says it is meant
    assert vit_reshape_transform(tokens, 7, 7, num_prefix_tokens=148).shape == (1, 8, 7, 7)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"height": 14.0, "width": 14},
            TypeError,
            r"height must be an integer .*float 14\.0 \(pass 14\)",
        ),
        ({"height": 14, "width": "14"}, TypeError, "width must be an integer number of patches"),
        ({"height": True, "width": 14}, TypeError, "height must be an integer"),
        ({"height": 0, "width": 14}, ValueError, "height must be at least 1 patch; got 0"),
    ],
)
def test_vit_grid_sides_must_be_positive_integers(kwargs, error, match):
    tokens = torch.rand(2, 197, 8)
    with pytest.raises(error, match=match):
        vit_reshape_transform(tokens, **kwargs)
    with pytest.raises(error, match=match):
        swinT_reshape_transform(tokens[:, 1:], **kwargs)


def test_vit_grid_sides_may_be_numpy_integers():
    tokens = torch.rand(2, 197, 8)
    got = vit_reshape_transform(tokens, height=np.int64(14), width=np.int32(14))
    torch.testing.assert_close(got, vit_reshape_transform(tokens, height=14, width=14))

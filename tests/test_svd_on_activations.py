"""get_2d_projection: first principal component of (B, C, *spatial) activations."""

import numpy as np
import pytest
import torch
from conftest import project

from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection


@pytest.mark.parametrize(
    "shape",
    [
        (2, 3, 4, 5),  # more positions than channels
        (2, 40, 3, 2),  # more channels than positions
        (1, 6, 2, 3, 2),  # volumes
        (3, 1, 4, 4),  # one channel: the centred activations themselves
    ],
)
def test_matches_numpy_svd(shape):
    rng = np.random.default_rng(0)
    acts = rng.normal(size=shape).astype(np.float32) + rng.normal(
        size=shape[:2] + (1,) * (len(shape) - 2)
    )
    got = get_2d_projection(acts)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == shape[:1] + shape[2:]
    np.testing.assert_allclose(got, project(acts), atol=1e-4)


def test_torch_in_torch_out_and_batched_images_are_independent():
    acts = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    got = get_2d_projection(acts)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    for i in range(3):
        torch.testing.assert_close(got[i : i + 1], get_2d_projection(acts[i : i + 1]))


def test_hand_computed_rank_one():
    # Rows (positions) = s_p * v with v = (3, 4): centred rows (s_p - mean s) * v, v/|v| is the
    # top right-singular vector (entries sum > 0), the projection is (s - mean s) * 5.
    s = np.array([1.0, 2.0, 6.0, 3.0])
    acts = (np.array([3.0, 4.0])[:, None] * s[None]).reshape(1, 2, 2, 2)
    np.testing.assert_allclose(get_2d_projection(acts)[0].ravel(), (s - 3) * 5, atol=1e-5)


def test_sign_makes_the_singular_vector_sum_non_negative():
    # Negated activations: v flips to keep sum(v) >= 0, so the projection changes sign.
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(1, 4, 3, 3)) + np.arange(4)[None, :, None, None]
    np.testing.assert_allclose(get_2d_projection(-acts), -get_2d_projection(acts), atol=1e-4)


def test_nan_becomes_zero():
    acts = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) % 5
    with_nan = acts.copy()
    with_nan[0, 1, 2, 3] = np.nan
    zeroed = acts.copy()
    zeroed[0, 1, 2, 3] = 0
    got = get_2d_projection(with_nan)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, get_2d_projection(zeroed), atol=1e-5)


def test_rejects_inputs_without_spatial_dims():
    with pytest.raises(ValueError, match="activation_batch"):
        get_2d_projection(np.zeros((2, 3)))


# ---------------------------------------------------------------- sign correction
from pytorch_grad_cam.utils.svd_on_activations import (  # noqa: E402
    get_2d_projection_with_sign_correction,
)


def test_sign_correction_makes_the_largest_magnitude_positive():
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(6, 4, 3, 5)).astype(np.float32)
    got = get_2d_projection_with_sign_correction(acts)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (6, 3, 5)
    flat = got.reshape(6, -1)
    assert np.all(np.abs(flat.max(axis=1)) >= np.abs(flat.min(axis=1)))
    # the same principal component up to sign
    np.testing.assert_allclose(np.abs(got), np.abs(project(acts)), atol=1e-4)


def test_sign_correction_hand_example_and_torch_in_torch_out():
    # one channel [0, 0, 0, -4]: centred [1, 1, 1, -3]; |min| = 3 > |max| = 1: negated
    acts = torch.tensor([[[[0.0, 0.0, 0.0, -4.0]]]])
    got = get_2d_projection_with_sign_correction(acts)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, torch.tensor([[[-1.0, -1.0, -1.0, 3.0]]]))
    flipped = get_2d_projection_with_sign_correction(-acts)  # centred [-1, -1, -1, 3]: kept
    torch.testing.assert_close(flipped, got)

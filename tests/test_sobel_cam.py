"""sobel_cam: |Sobel_x| / 2 + |Sobel_y| / 2 of the grey image, saturated to uint8."""

import numpy as np
import pytest

from pytorch_grad_cam.sobel_cam import sobel_cam


def test_hand_computed_edges():
    img = np.zeros((6, 6, 3), np.uint8)
    img[:, 3:] = 10  # a vertical step of 10 grey levels
    edges = sobel_cam(img)
    assert edges.dtype == np.uint8 and edges.shape == (6, 6)
    # the 3x3 Sobel response across the step is 4 * 10 = 40 -> 40 / 2 = 20; 0 elsewhere
    np.testing.assert_array_equal(edges[2], [0, 0, 20, 20, 0, 0])
    np.testing.assert_array_equal(sobel_cam(img.transpose(1, 0, 2))[:, 2], [0, 0, 20, 20, 0, 0])


def test_saturates_and_uses_rgb_luminance():
    img = np.zeros((5, 5, 3), np.uint8)
    img[:, 2:, 2] = 255  # a step in the blue channel: grey 0.114 * 255 = 29
    np.testing.assert_array_equal(sobel_cam(img)[2], [0, 58, 58, 0, 0])
    img[:, 2:] = 255  # white: 4 * 255 saturates at 255 -> 255 / 2
    np.testing.assert_array_equal(sobel_cam(img)[2], [0, 128, 128, 0, 0])


def test_needs_an_rgb_image():
    with pytest.raises(ValueError, match="img must be an HxWx3 RGB image"):
        sobel_cam(np.zeros((4, 4), np.uint8))

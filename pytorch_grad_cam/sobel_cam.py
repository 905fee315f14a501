"""Sobel edges: a model-free baseline "CAM" for the metrics."""

import cv2
import numpy as np


def sobel_cam(img: np.ndarray) -> np.ndarray:
    """The Sobel edge magnitude of an RGB image: a map that ignores the model entirely, to
    compare CAMs against (a faithful CAM should score better than this on the metrics).

    gray = RGB -> gray;  map = |Sobel_x(gray)| / 2 + |Sobel_y(gray)| / 2, 3x3 kernels,
    saturated to uint8 (as ``cv2.convertScaleAbs`` and ``cv2.addWeighted`` do).

    Args:
        img: HxWx3 RGB image (uint8, or float; float values are used as they are).

    Returns:
        uint8 HxW edge map.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((5, 6, 3), np.uint8)
        >>> img[:, 3:] = 200  # a vertical edge between columns 2 and 3
        >>> sobel_cam(img)[2]
        array([  0,   0, 128, 128,   0,   0], dtype=uint8)
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"img must be an HxWx3 RGB image; got an array of shape {img.shape}")
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    grad_x = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3))
    grad_y = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3))
    return cv2.addWeighted(grad_x, 0.5, grad_y, 0.5, 0)

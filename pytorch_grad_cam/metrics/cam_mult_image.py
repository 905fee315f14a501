"""Confidence change when the image is multiplied by its CAM.

Keeping only what the CAM highlights (``image * cam``) should keep the target's score: a
faithful CAM loses little confidence, or even gains some. These are the absolute-score
versions of the "average drop" and "increase in confidence" of Grad-CAM++ (Chattopadhay et
al., WACV 2018, arXiv:1710.11063), reported per image (average them over a data set).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric


def multiply_tensor_with_cam(input_tensor: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """``image * cam`` for (B, C, H, W) images and (B, H, W) maps (or (C, H, W) and (H, W))."""
    return input_tensor * cam.unsqueeze(-3)


class CamMultImageConfidenceChange(PerturbationConfidenceMetric):
    """score(target, image * cam) - score(target, image), per image.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))  # score: the sum of the pixels
        >>> _ = nn.init.ones_(model[1].weight), nn.init.zeros_(model[1].bias)
        >>> x = torch.ones(1, 3, 2, 2)  # score 12
        >>> cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # the top row is relevant
        >>> CamMultImageConfidenceChange()(x, cam, [ClassifierOutputTarget(0)], model)  # 6 - 12
        array([-6.], dtype=float32)
    """

    def __init__(self, batch_size: int | None = None) -> None:
        super().__init__(multiply_tensor_with_cam, batch_size)


class DropInConfidence(CamMultImageConfidenceChange):
    """max(0, -change): the drop of the target score as a positive number (lower is better).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))  # score: the sum of the pixels
        >>> _ = nn.init.ones_(model[1].weight), nn.init.zeros_(model[1].bias)
        >>> x = torch.ones(1, 3, 2, 2)  # score 12
        >>> cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # the top row is relevant
        >>> DropInConfidence()(x, cam, [ClassifierOutputTarget(0)], model)
        array([6.], dtype=float32)
    """

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
        result = super().__call__(*args, **kwargs)
        if isinstance(result, tuple):
            return np.maximum(-result[0], 0), result[1]
        return np.maximum(-result, 0)


class IncreaseInConfidence(CamMultImageConfidenceChange):
    """1.0 where the target score increased, else 0.0 (higher is better).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))  # score: the sum of the pixels
        >>> _ = nn.init.ones_(model[1].weight), nn.init.zeros_(model[1].bias)
        >>> x = torch.ones(1, 3, 2, 2)  # score 12
        >>> cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # the top row is relevant
        >>> IncreaseInConfidence()(x, cam, [ClassifierOutputTarget(0)], model)
        array([0.], dtype=float32)
    """

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
        result = super().__call__(*args, **kwargs)
        if isinstance(result, tuple):
            return np.float32(result[0] > 0), result[1]
        return np.float32(result > 0)

"""ARCC: Average ROAD, Coherency and Complexity.

ADCC (Poppi et al., "Revisiting The Evaluation of Class Activation Mapping for Explainability:
A Novel Metric and Experimental Analysis", CVPR Workshops 2021, arXiv:2104.10252) scores a CAM
by the harmonic mean of three terms: its *coherency* (the CAM of the CAM-masked image should
be the same CAM), its *complexity* (a good CAM is sparse) and its faithfulness (the average
drop of confidence). ARCC replaces the average drop by ROAD (``ROADCombined``), which does not
reward the model reacting to the mask's shape itself:

ARCC = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / road),  road = LeRF - MoRF

(``2 * ROADCombined``, clipped to [0, 1] as in grad-cam), each term clamped below at 1e-8.
Higher is better; every term, and so ARCC, is at most 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam._arrays import as_numpy, as_tensor
from pytorch_grad_cam.metrics.road import ROADCombined

EPS = 1e-8


def batch_pearson_coherency(
    A: np.ndarray | torch.Tensor, B: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Pearson correlation of each pair of maps, (B,) float32 (0 where a map is constant).

    Args:
        A, B: (B, *spatial) maps (numpy or torch).

    Example:
        >>> import numpy as np
        >>> maps = np.array([[[0.0, 1.0], [2.0, 3.0]]])
        >>> batch_pearson_coherency(maps, 2 * maps + 1), batch_pearson_coherency(maps, -maps)
        (array([1.], dtype=float32), array([-1.], dtype=float32))
    """
    a, b = as_tensor(A).double(), as_tensor(B).double()
    a, b = a.flatten(1), b.to(a.device).flatten(1)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    scale = a.norm(dim=1) * b.norm(dim=1)
    correlation = (a * b).sum(dim=1) / scale.clamp_min(torch.finfo(scale.dtype).tiny)
    return as_numpy(torch.where(scale > 0, correlation, 0.0))


class Complexity:
    """The mean of |cam| over the pixels, per image (lower: a sparser map).

    Example:
        >>> import numpy as np
        >>> Complexity()(np.array([[[1.0, 0.0], [0.0, 0.0]]]))
        array([0.25], dtype=float32)
    """

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        """(B,) float32 complexity of (B, *spatial) maps."""
        cams = as_tensor(grayscale_cams).float()
        return as_numpy(cams.abs().flatten(1).mean(dim=1))


class Coherency:
    """(1 + Pearson(cam, cam of image * cam)) / 2, per image (higher: more coherent).

    ``base_method`` is the CAM object that made the maps; it is run on the CAM-masked images
    with the same targets.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import GradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> cam = GradCAM(model, [model.target_layer])
        >>> Coherency()(x, cam(x, [0, 1]), [0, 1], model, cam).shape
        (2,)
    """

    def __call__(
        self,
        input_tensor: torch.Tensor,
        grayscale_cams: np.ndarray,
        targets: Sequence[Callable] | None,
        model: nn.Module,
        base_method: Callable[..., Any],
    ) -> np.ndarray:
        """(B,) float32 coherency."""
        _check_cam_object(base_method)
        cams = as_tensor(grayscale_cams, input_tensor.device).to(input_tensor.dtype)
        masked_cams = base_method(input_tensor=input_tensor * cams.unsqueeze(1), targets=targets)
        return (batch_pearson_coherency(cams, masked_cams) + 1) / 2


class ARCC:
    """Average ROAD, Coherency and Complexity: the harmonic mean of coherency,
    1 - complexity and LeRF - MoRF of ROAD (see the module docstring).

    Args:
        base_method: the CAM object that made the maps (for the coherency).
        road_percentiles: the ROAD thresholds averaged over.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import GradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> from pytorch_grad_cam.metrics.arcc import ARCC
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
        >>> model, x = load_demo_model(), torch.rand(1, 3, 64, 64)
        >>> cam, targets = GradCAM(model, [model.target_layer]), [ClassifierOutputSoftmaxTarget(0)]
        >>> ARCC(cam)(x, cam(x, targets), targets, model).shape
        (1,)
    """

    def __init__(
        self, base_method: Callable[..., Any], road_percentiles: Sequence[float] = (20, 40, 60, 80)
    ) -> None:
        _check_cam_object(base_method)
        self.base_method = base_method
        self.road = ROADCombined(percentiles=road_percentiles)

    def __call__(
        self,
        input_tensor: torch.Tensor,
        grayscale_cams: np.ndarray,
        targets: Sequence[Callable] | None,
        model: nn.Module,
    ) -> np.ndarray:
        """(B,) float32 ARCC."""
        coherency = Coherency()(input_tensor, grayscale_cams, targets, model, self.base_method)
        simplicity = 1 - Complexity()(grayscale_cams)
        road = np.clip(2 * self.road(input_tensor, grayscale_cams, targets, model), 0, 1)
        terms = np.stack([coherency, simplicity, road]).astype(np.float64)
        return np.float32(3 / (1 / np.maximum(terms, EPS)).sum(axis=0))


def _check_cam_object(base_method: Any) -> None:
    if isinstance(base_method, type) or not callable(base_method):
        raise TypeError(
            "base_method must be a CAM object, e.g. GradCAM(model, target_layers), called as "
            f"base_method(input_tensor=..., targets=...); got {base_method!r}"
        )

"""Deletion and insertion curves (Petsiuk et al., BMVC 2018, "RISE", arXiv:1806.07421).

Pixels are ordered by decreasing CAM value. *Deletion* replaces them, most relevant first, by
a baseline (zeros by default) in ``n_steps`` equal steps; *insertion* starts from the baseline
(a blurred copy by default) and puts them back in the same order. The curve is the target's
score after each step (step 0 = no pixel changed); its area under the curve (trapezoid rule,
x-axis normalised to [0, 1]) summarises it: low deletion AUC and high insertion AUC mean a
faithful CAM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from pytorch_grad_cam._model_state import eval_mode
from pytorch_grad_cam._targets import target_scores
from pytorch_grad_cam.metrics.perturbation_confidence import prepare_inputs

Baseline = str | float | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


class DeletionCurve:
    """Deletion curve and AUC of each image (lower AUC is better).

    Args:
        n_steps: number of equal steps in which all H*W pixels are changed.
        baseline: what replaced pixels become: "zeros", "blur" (Gaussian, 11x11, sigma 5),
            "mean" (per-image channel means), a number, a tensor broadcastable to the input,
            or a function of the (B, C, H, W) input.
        batch_size: most perturbed images per forward pass of the model.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))  # score: the sum of the pixels
        >>> _ = nn.init.ones_(model[1].weight), nn.init.zeros_(model[1].bias)
        >>> x = torch.ones(1, 3, 2, 2)  # score 12
        >>> cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # the top row is relevant
        >>> auc, curves = DeletionCurve(n_steps=2)(
        ...     x, cam, [ClassifierOutputTarget(0)], model, return_curves=True
        ... )
        >>> curves  # all pixels, then without the top row, then none
        array([[12.,  6.,  0.]], dtype=float32)
        >>> auc
        array([6.], dtype=float32)
    """

    insertion = False

    def __init__(self, n_steps: int = 50, baseline: Baseline = "zeros", batch_size: int = 64):
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be a positive integer; got {n_steps}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
        if isinstance(baseline, str) and baseline not in ("zeros", "blur", "mean"):
            raise ValueError(f"baseline must be 'zeros', 'blur' or 'mean'; got {baseline!r}")
        self.n_steps = int(n_steps)
        self.baseline = baseline
        self.batch_size = int(batch_size)

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray | torch.Tensor,
        targets: Any,
        model: nn.Module,
        return_curves: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """AUC (B,) of each image, and the (B, n_steps + 1) curves if ``return_curves``."""
        curves = self.curves(input_tensor, cams, targets, model)
        auc = area_under_curve(curves)
        return (auc, curves) if return_curves else auc

    def curves(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray | torch.Tensor,
        targets: Any,
        model: nn.Module,
    ) -> np.ndarray:
        """float32 (B, n_steps + 1) target scores after 0, 1, ..., n_steps steps."""
        images, cam_t, targets = prepare_inputs(input_tensor, cams, targets, model)
        batch, _, height, width = images.shape
        pixels, steps = height * width, self.n_steps + 1
        if not batch:  # an empty batch: no curves
            return np.zeros((0, steps), dtype=np.float32)
        device = images.device
        with eval_mode(model), torch.no_grad():
            changed = self._baseline(images)
            start, end = (changed, images) if self.insertion else (images, changed)
            order = cam_t.flatten(1).argsort(dim=1, descending=True, stable=True)
            rank = torch.empty_like(order).scatter_(
                1, order, torch.arange(pixels, device=device).expand(batch, pixels)
            )
            # pixels changed after each step
            counts = torch.arange(steps, device=device) * pixels // self.n_steps
            scores = []
            for first in range(0, batch * steps, self.batch_size):
                job = torch.arange(
                    first, min(first + self.batch_size, batch * steps), device=device
                )
                image, step = job // steps, job % steps
                mask = (rank[image] < counts[step][:, None]).reshape(-1, 1, height, width)
                perturbed = torch.where(mask, end[image], start[image])
                chunk_targets = [targets[i] for i in image.tolist()]
                scores.append(target_scores(model(perturbed), chunk_targets).float())
        return torch.cat(scores).reshape(batch, steps).cpu().numpy()

    def _baseline(self, images: torch.Tensor) -> torch.Tensor:
        baseline = self.baseline
        if isinstance(baseline, str):
            if baseline == "zeros":
                return torch.zeros_like(images)
            if baseline == "mean":
                return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
            return gaussian_blur(images, kernel_size=[11, 11], sigma=[5.0, 5.0])
        if callable(baseline):
            baseline = baseline(images)
        return torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images)


class InsertionCurve(DeletionCurve):
    """Insertion curve and AUC of each image (higher AUC is better).

    Same arguments as :class:`DeletionCurve`; the baseline defaults to a blurred copy.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))  # score: the sum of the pixels
        >>> _ = nn.init.ones_(model[1].weight), nn.init.zeros_(model[1].bias)
        >>> x = torch.ones(1, 3, 2, 2)  # score 12
        >>> cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # the top row is relevant
        >>> InsertionCurve(n_steps=2, baseline="zeros").curves(
        ...     x, cam, [ClassifierOutputTarget(0)], model
        ... )
        array([[ 0.,  6., 12.]], dtype=float32)
    """

    insertion = True

    def __init__(self, n_steps: int = 50, baseline: Baseline = "blur", batch_size: int = 64):
        super().__init__(n_steps, baseline, batch_size)


def area_under_curve(curves: np.ndarray | torch.Tensor) -> np.ndarray:
    """Trapezoid-rule area of (B, S) curves sampled at S equally spaced points of [0, 1].

    Example:
        >>> import numpy as np
        >>> area_under_curve(np.array([[1.0, 0.5, 0.0]]))
        array([0.5], dtype=float32)
    """
    c = np.asarray(curves.detach().cpu() if isinstance(curves, torch.Tensor) else curves)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"curves must have shape (B, S) with S >= 2; got {c.shape}")
    return np.float32((c[:, :-1] + c[:, 1:]).sum(axis=1) / (2 * (c.shape[1] - 1)))

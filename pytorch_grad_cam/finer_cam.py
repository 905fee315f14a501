"""Finer-CAM."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam._arrays import as_numpy
from pytorch_grad_cam._checks import class_index
from pytorch_grad_cam._composition import ComposedCAM
from pytorch_grad_cam._outputs import logits_of
from pytorch_grad_cam._targets import TargetsFromOutputs
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

DEFAULT_COMPARISON_CATEGORIES = (1, 2, 3)


class FinerCAM(ComposedCAM):
    """Finer-CAM (Zhang et al., CVPR 2025, "Finer-CAM: Spotting the Difference Reveals Finer
    Details for Visual Explanation", arXiv:2501.11309).

    Explains y_target - alpha * mean(y_similar) with ``base_method`` (Grad-CAM by default):
    subtracting the classes the model finds most similar keeps what tells the target apart.
    With ``targets=None``, per image, the target is the top class (or ``target_idx``) and the
    similar classes are those whose logits are closest to the target's: rank r in
    ``comparison_categories`` is the r-th closest (1 = the runner-up for the top class). The
    classes are read from the logits of the image itself, before any perturbation, so
    perturbation methods (ScoreCAM, AblationCAM) score every masked input for the same classes.

    Args:
        model, target_layers, reshape_transform: as in BaseCAM.
        base_method: the BaseCAM subclass that computes the maps.
        **kwargs: other options of ``base_method``.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import FinerCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> maps = FinerCAM(model, [model.target_layer])(torch.rand(1, 3, 64, 64),
        ...                                             comparison_categories=[1])
        >>> maps.shape
        (1, 64, 64)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], Any] | None = None,
        base_method: type[BaseCAM] = GradCAM,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, base_method, **kwargs)

    def forward(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Callable] | None = None,
        eigen_smooth: bool = False,
        alpha: float = 1.0,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
        aug_smooth: bool = False,
    ) -> np.ndarray:
        """Compute the maps (B, H, W) in [0, 1] (numpy of ``compute``).

        Args:
            input_tensor: (B, C, H, W) or (B, C, D, H, W) batch.
            targets: explicit targets (e.g. ``FinerWeightedTarget``); the arguments below are
                then unused.
            eigen_smooth: passed to the base method.
            alpha: weight of the similar classes' mean logit.
            comparison_categories: ranks (>= 1) of the similar classes by closeness of logit
                (default ``DEFAULT_COMPARISON_CATEGORIES``).
            target_idx: the class to explain; None = each image's top class.
            aug_smooth: passed to the base method.
        """
        maps = self.compute(
            input_tensor,
            targets,
            aug_smooth,
            eigen_smooth,
            alpha=alpha,
            comparison_categories=comparison_categories,
            target_idx=target_idx,
        )
        return as_numpy(maps)

    def composed_maps(
        self,
        input_tensor: torch.Tensor,
        targets: Any,
        aug_smooth: bool,
        eigen_smooth: bool,
        keep_graph: bool,
        *,
        alpha: float = 1.0,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
    ) -> torch.Tensor:
        """The base method's maps of the targets chosen from each image's logits (``forward``
        describes the options)."""
        chosen: Any = targets
        if targets is None:
            if comparison_categories is None:
                comparison_categories = DEFAULT_COMPARISON_CATEGORIES
            ranks = [
                class_index(r, f"comparison_categories[{i}]")
                for i, r in enumerate(comparison_categories)
            ]
            if target_idx is not None:
                target_idx = class_index(target_idx, "target_idx")
            if isinstance(alpha, bool) or not isinstance(alpha, Real) or not math.isfinite(alpha):
                raise ValueError(f"alpha must be a finite number; got {alpha!r}")
            if not ranks or min(ranks) < 1:
                raise ValueError(
                    "comparison_categories must be non-empty ranks >= 1 (1 = the class whose "
                    f"logit is closest to the target's); got {list(comparison_categories)}"
                )
            chosen = TargetsFromOutputs(
                lambda outputs, batch: list(
                    similar_class_targets(outputs, batch, target_idx, ranks, float(alpha))
                )
            )
        return self.base_cam.compute(
            input_tensor, chosen, aug_smooth, eigen_smooth, keep_graph=keep_graph
        )

    __call__ = forward


def similar_class_targets(
    outputs: Any, batch: int, target_idx: int | None, ranks: list[int], alpha: float
) -> list[FinerWeightedTarget]:
    """A FinerWeightedTarget per image: its top class (or ``target_idx``) against the classes
    whose logits are at closeness ``ranks`` to it."""
    logits = logits_of(outputs).detach()
    if logits.ndim != 2 or logits.shape[0] != batch:
        raise ValueError(
            f"FinerCAM expects (B, num_classes) logits; the model returned a tensor of shape "
            f"{tuple(logits.shape)} for {batch} images"
        )
    classes = logits.shape[1]
    if target_idx is not None and not 0 <= target_idx < classes:
        raise IndexError(f"target_idx {target_idx} is out of range for {classes} classes")
    if max(ranks) >= classes:
        raise IndexError(
            f"comparison_categories {ranks} has a rank >= the number of classes ({classes})"
        )
    if target_idx is None:
        main = logits.argmax(dim=1, keepdim=True)
    else:
        main = torch.full((batch, 1), int(target_idx), device=logits.device)
    distance = (logits - logits.gather(1, main)).abs()
    distance.scatter_(1, main, -1.0)  # the target itself is rank 0, even if another logit ties
    order = distance.argsort(dim=1, stable=True)[:, ranks]
    return [
        FinerWeightedTarget(m, similar, alpha)
        for m, similar in zip(main[:, 0].tolist(), order.tolist())
    ]

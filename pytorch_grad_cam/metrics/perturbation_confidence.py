"""Confidence change of a model when the input is perturbed according to a CAM.

The building blocks of the ROAD and CAM-multiplication metrics: a *perturbation* maps a batch
of images (B, C, H, W) and their CAMs (B, H, W) to perturbed images; an *imputer* replaces the
pixels a binary mask marks as removed (mask 1 = keep, 0 = remove).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam._checks import checked_batch, describe_images
from pytorch_grad_cam._model_state import eval_mode
from pytorch_grad_cam._targets import broadcast_targets, resolve_targets
from pytorch_grad_cam._targets import target_scores as scores_of_batch

Perturbation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Imputer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PerturbationConfidenceMetric:
    """Target score of the perturbed images minus that of the original images.

    Args:
        perturbation: ``perturbation(images, cams) -> perturbed images``, batched:
            (B, C, H, W) and (B, H, W) tensors on the model's device.
        batch_size: most images per forward pass of the model (None: all at once).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))  # score: the sum of the pixels
        >>> _ = nn.init.ones_(model[1].weight), nn.init.zeros_(model[1].bias)
        >>> x = torch.ones(1, 3, 2, 2)  # score 12
        >>> cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # the top row is relevant
        >>> def darken(images, cams):  # a perturbation: halve the relevant pixels
        ...     return images * (1 - cams[:, None] / 2)
        >>> PerturbationConfidenceMetric(darken)(x, cam, [ClassifierOutputTarget(0)], model)
        array([-3.], dtype=float32)
    """

    def __init__(self, perturbation: Perturbation, batch_size: int | None = None) -> None:
        self.perturbation = perturbation
        self.batch_size = batch_size

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray | torch.Tensor,
        targets: Any,
        model: nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
        """Score the CAMs.

        Args:
            input_tensor: (B, C, H, W) images, as given to the CAM.
            cams: (B, H, W) maps in [0, 1], as returned by the CAM.
            targets: one target per image (or one for all), e.g. ClassifierOutputSoftmaxTarget.
            model: the classifier; run in eval mode under no_grad, its flags restored after.
            return_visualization: also return the perturbed images (a tensor on the device).
            return_diff: return the score change (True) or the perturbed score (False).

        Returns:
            float32 (B,) scores, and the perturbed (B, C, H, W) images if asked.
        """
        images, cam_t, targets = prepare_inputs(input_tensor, cams, targets, model)
        if not len(images):  # an empty batch: nothing to score
            empty = np.zeros(0, dtype=np.float32)
            return (empty, images) if return_visualization else empty
        with eval_mode(model), torch.no_grad():
            perturbed = self.perturbation(images, cam_t)
            scores = target_scores(model, perturbed, targets, self.batch_size)
            if return_diff:
                scores = scores - target_scores(model, images, targets, self.batch_size)
        result = scores.cpu().numpy()
        return (result, perturbed) if return_visualization else result


class RemoveMostRelevantFirst:
    """Perturbation that imputes the most relevant pixels and keeps the rest.

    With a number, the pixels whose CAM value is at or above the ``percentile``-th percentile
    of the image's CAM are removed, i.e. the (100 - percentile)% most relevant ones.
    With ``"auto"`` the threshold is Otsu's on the CAM quantised to 256 levels.

    Args:
        percentile: in [0, 100], or "auto".
        imputer: ``imputer(images, keep_mask) -> images``, with (B, H, W) mask 1 = keep.

    Example:
        >>> import torch
        >>> def fill_with_zeros(images, keep):  # an imputer: 0 where keep is 0
        ...     return images * keep[:, None]
        >>> remove = RemoveMostRelevantFirst(percentile=50, imputer=fill_with_zeros)
        >>> cam = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])
        >>> remove(torch.ones(1, 1, 2, 2), cam)[0, 0]  # the two most relevant pixels imputed
        tensor([[0., 1.],
                [0., 1.]])
    """

    def __init__(self, percentile: float | str, imputer: Imputer) -> None:
        if percentile != "auto" and not (
            isinstance(percentile, (int, float)) and 0 <= percentile <= 100
        ):
            raise ValueError(f"percentile must be a number in [0, 100] or 'auto'; got {percentile}")
        self.percentile = percentile
        self.imputer = imputer

    def __call__(self, input_tensor: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
        """Impute the removed pixels of (B, C, H, W) images ((C, H, W) with an (H, W) cam)."""
        single = input_tensor.ndim == 3
        if single:
            input_tensor, cams = input_tensor[None], torch.as_tensor(cams)[None]
        result = self.imputer(input_tensor, self.keep_mask(cams, input_tensor.device))
        return result[0] if single else result

    def keep_mask(self, cams: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """float (B, H, W) mask of the pixels kept: 1 below the threshold, 0 at or above."""
        cams = torch.as_tensor(cams, device=device).float()
        flat = cams.flatten(1)
        if self.percentile == "auto":
            threshold = otsu_threshold(flat)
        else:
            threshold = percentile(flat, float(self.percentile))
        return (cams < threshold.reshape(-1, *[1] * (cams.ndim - 1))).float()


class RemoveLeastRelevantFirst(RemoveMostRelevantFirst):
    """Perturbation that imputes the least relevant pixels: ``RemoveMostRelevantFirst(1 - cam)``.

    With a number, the (100 - percentile)% least relevant pixels are removed.

    Example:
        >>> import torch
        >>> def fill_with_zeros(images, keep):
        ...     return images * keep[:, None]
        >>> remove = RemoveLeastRelevantFirst(50, imputer=fill_with_zeros)
        >>> remove(torch.ones(1, 1, 2, 2), torch.tensor([[[0.9, 0.1], [0.8, 0.2]]]))[0, 0]
        tensor([[1., 0.],
                [1., 0.]])
    """

    def keep_mask(self, cams: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        return super().keep_mask(1 - torch.as_tensor(cams, device=device), device)


class AveragerAcrossThresholds:
    """Mean of a metric over several percentiles.

    When the metrics are ``PerturbationConfidenceMetric``s that remove pixels with one shared
    imputer, all percentiles are imputed in one batched call (P times the memory of a batch);
    see :func:`score_changes`.

    Args:
        imputer: ``imputer(percentile) -> metric``, e.g. ``ROADMostRelevantFirst``.
        percentiles: the percentiles to average over.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))  # score: the sum of the pixels
        >>> _ = nn.init.ones_(model[1].weight), nn.init.zeros_(model[1].bias)
        >>> x = torch.ones(1, 3, 2, 2)  # score 12
        >>> cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # the top row is relevant
        >>> def metric(percentile):  # zero the pixels at or above the percentile
        ...     imputer = lambda images, keep: images * keep[:, None]
        ...     return PerturbationConfidenceMetric(RemoveMostRelevantFirst(percentile, imputer))
        >>> cam = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])
        >>> AveragerAcrossThresholds(metric, [25, 75])(x, cam, [ClassifierOutputTarget(0)], model)
        array([-6.], dtype=float32)
    """

    def __init__(
        self,
        imputer: Callable[[float], Any],
        percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    ) -> None:
        self.imputer = imputer
        self.percentiles = list(percentiles)
        if not self.percentiles:
            raise ValueError("percentiles is empty; pass at least one percentile")

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray | torch.Tensor,
        targets: Any,
        model: nn.Module,
    ) -> np.ndarray:
        """The (B,) mean score over the percentiles."""
        metrics = [self.imputer(p) for p in self.percentiles]
        return score_changes(metrics, input_tensor, cams, targets, model).mean(axis=0)


def score_changes(
    metrics: Sequence[Any],
    input_tensor: torch.Tensor,
    cams: np.ndarray | torch.Tensor,
    targets: Any,
    model: nn.Module,
) -> np.ndarray:
    """float32 (M, B) scores of M metrics, each called as ``metric(input_tensor, cams, ...)``.

    When they are all ``PerturbationConfidenceMetric``s, the original images are scored once;
    if they also all remove pixels with one shared imputer, every metric's images are imputed
    in one batched call (M times the memory of a batch).
    """
    if not all(type(m).__call__ is PerturbationConfidenceMetric.__call__ for m in metrics):
        return np.asarray([m(input_tensor, cams, targets, model) for m in metrics], np.float32)
    images, cam_t, targets = prepare_inputs(input_tensor, cams, targets, model)
    if not len(images):
        return np.zeros((len(metrics), 0), dtype=np.float32)
    batch_size = metrics[0].batch_size
    perturbations = [m.perturbation for m in metrics]
    imputer = getattr(perturbations[0], "imputer", None)
    with eval_mode(model), torch.no_grad():
        base = target_scores(model, images, targets, batch_size)
        if imputer is not None and all(
            isinstance(p, RemoveMostRelevantFirst) and p.imputer is imputer for p in perturbations
        ):  # one imputer call for all metrics: (M * B) images, metric-major
            keep = torch.cat([p.keep_mask(cam_t, images.device) for p in perturbations])
            perturbed = imputer(images.repeat(len(metrics), 1, 1, 1), keep)
            scores = target_scores(model, perturbed, targets, batch_size)
        else:
            scores = torch.cat(
                [target_scores(model, p(images, cam_t), targets, batch_size) for p in perturbations]
            )
    return (scores.reshape(len(metrics), -1) - base).cpu().numpy()


# --------------------------------------------------------------------- helpers
def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row q-th percentile of (B, N) values, linear interpolation like ``np.percentile``."""
    ordered = values.sort(dim=1).values
    position = q / 100 * (values.shape[1] - 1)
    low = int(np.floor(position))
    high = min(low + 1, values.shape[1] - 1)
    return ordered[:, low] + (ordered[:, high] - ordered[:, low]) * (position - low)


def otsu_threshold(values: torch.Tensor) -> torch.Tensor:
    """Per-row Otsu threshold of (B, N) values in [0, 1], quantised to 256 levels.

    Returns the threshold in [0, 1] units such that ``values < threshold`` is the darker class.
    """
    levels = (values.clamp(0, 1) * 255).long()
    hist = torch.zeros(values.shape[0], 256, device=values.device)
    hist.scatter_add_(1, levels, torch.ones_like(values))
    p = hist / values.shape[1]
    omega = p.cumsum(1)  # weight of levels <= t
    mu = (p * torch.arange(256, device=values.device)).cumsum(1)
    between = (mu[:, -1:] * omega - mu) ** 2 / (omega * (1 - omega)).clamp_min(1e-12)
    return (between.argmax(dim=1) + 1).float() / 255


def prepare_inputs(
    input_tensor: torch.Tensor, cams: Any, targets: Any, model: nn.Module
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Check the metric inputs; move images and cams to the model's device; one target each."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    images = checked_batch(input_tensor, model, ndims=(4,)).detach()
    cam_t = torch.as_tensor(
        cams.detach() if isinstance(cams, torch.Tensor) else np.asarray(cams),
        device=images.device,
    ).float()
    expected = (images.shape[0], *images.shape[2:])
    if tuple(cam_t.shape) != expected:
        raise ValueError(
            f"cams must have shape (B, H, W) = {expected} to match input_tensor; "
            f"got {tuple(cam_t.shape)}"
        )
    if cam_t.numel() and not bool(torch.isfinite(cam_t).all()):
        bad = (~torch.isfinite(cam_t)).flatten(1).any(dim=1).tolist()
        raise ValueError(
            f"cams contain NaN or Inf values ({describe_images(bad)}); a metric of such a map "
            "means nothing"
        )
    if targets is None:
        raise ValueError(
            "targets is required: one target per image, e.g. [ClassifierOutputSoftmaxTarget(k)]"
        )
    if not len(images):  # nothing to score: no targets ([]) is as good as one for all
        return images, cam_t, [] if isinstance(targets, (list, tuple)) else resolve_targets(targets)
    return images, cam_t, broadcast_targets(resolve_targets(targets), len(images))


def target_scores(
    model: nn.Module, images: torch.Tensor, targets: list, batch_size: int | None = None
) -> torch.Tensor:
    """float32 (N,) target scores of N images; ``targets[i % len(targets)]`` scores image i.

    The model runs on chunks of at most ``batch_size`` images (None: all at once).
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size}")
    n, size = images.shape[0], batch_size or images.shape[0]
    index = torch.arange(n) % len(targets)
    scores = []
    for start in range(0, n, size):
        outputs = model(images[start : start + size])
        chunk = [targets[i] for i in index[start : start + size].tolist()]
        scores.append(scores_of_batch(outputs, chunk))
    return torch.cat(scores).float()

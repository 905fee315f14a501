"""Targets: callables that turn one image's model output into the scalar a CAM explains.

A target receives the output of the model for a single image (for a classifier, a 1-D
tensor of logits) and returns a tensor; the CAM methods sum it if it is not a scalar.
The classification targets also accept a 2-D (B, N) output and then return one score per row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchvision

from pytorch_grad_cam._checks import class_index
from pytorch_grad_cam._outputs import logits_of


def _check_category(target: object, category: int, logits: torch.Tensor) -> None:
    """Raise ``IndexError`` if ``category`` is not a valid class index for ``logits``."""
    if logits.ndim == 0:
        raise IndexError(f"{target!r}: the model output is a scalar; expected a vector of scores")
    n = logits.shape[-1]
    if not 0 <= category < n:
        raise IndexError(
            f"{target!r}: category {category} is out of range for a model output with {n} "
            f"classes (expected 0 <= category < {n})"
        )


class _CategoryTarget:
    """Base of the targets parameterised by a single class index."""

    def __init__(self, category: int) -> None:
        self.category = class_index(category, f"{type(self).__name__}'s category")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(category={self.category})"


class ClassifierOutputTarget(_CategoryTarget):
    """The raw score (logit) of one class.

    Example:
        >>> import torch
        >>> ClassifierOutputTarget(1)(torch.tensor([0.5, 2.0, -1.0]))
        tensor(2.)
    """

    def __call__(self, model_output: Any) -> torch.Tensor:
        logits = logits_of(model_output)
        _check_category(self, self.category, logits)
        return logits[..., self.category]


class ClassifierOutputSoftmaxTarget(_CategoryTarget):
    """The softmax probability of one class.

    Example:
        >>> import torch
        >>> ClassifierOutputSoftmaxTarget(0)(torch.tensor([0.0, 0.0]))
        tensor(0.5000)
    """

    def __call__(self, model_output: Any) -> torch.Tensor:
        logits = logits_of(model_output)
        _check_category(self, self.category, logits)
        return torch.softmax(logits, dim=-1)[..., self.category]


class ClassifierOutputReST(_CategoryTarget):
    """The ReST score of one class: its logit minus the cross-entropy w.r.t. that class.

    Per sample this is ``z[c] + log_softmax(z)[c]`` (arXiv 2501.06261).

    Example:
        >>> import torch
        >>> ClassifierOutputReST(0)(torch.tensor([0.0, 0.0]))  # 0 + log(1/2)
        tensor(-0.6931)
    """

    def __call__(self, model_output: Any) -> torch.Tensor:
        logits = logits_of(model_output)
        _check_category(self, self.category, logits)
        log_probs = torch.log_softmax(logits, dim=-1)
        return logits[..., self.category] + log_probs[..., self.category]


class BinaryClassifierOutputTarget(_CategoryTarget):
    """The output of a single-logit binary classifier, negated unless ``category == 1``.

    Example:
        >>> import torch
        >>> BinaryClassifierOutputTarget(0)(torch.tensor([1.5]))  # explains "class 0": -logit
        tensor([-1.5000])
    """

    def __call__(self, model_output: Any) -> torch.Tensor:
        sign = 1 if self.category == 1 else -1
        return logits_of(model_output) * sign


class SoftmaxOutputTarget:
    """The softmax of the output over its last dimension (all classes).

    Example:
        >>> import torch
        >>> SoftmaxOutputTarget()(torch.tensor([0.0, 0.0]))
        tensor([0.5000, 0.5000])
    """

    def __call__(self, model_output: Any) -> torch.Tensor:
        return torch.softmax(logits_of(model_output), dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RawScoresOutputTarget:
    """The model output, unchanged.

    Example:
        >>> import torch
        >>> RawScoresOutputTarget()(torch.tensor([3.0]))
        tensor([3.])
    """

    def __call__(self, model_output: Any) -> Any:
        return model_output

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SemanticSegmentationTarget:
    """Sum of one class's segmentation scores inside a mask.

    Args:
        category: class channel of the (C, H, W) model output.
        mask: HxW weights (numpy array or tensor), usually a binary mask of the region.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> scores = torch.arange(8.0).reshape(2, 2, 2)  # (classes, H, W)
        >>> mask = np.array([[1, 0], [0, 1]], dtype=np.float32)
        >>> SemanticSegmentationTarget(1, mask)(scores)  # 4 + 7
        tensor(11.)
    """

    def __init__(self, category: int, mask: np.ndarray | torch.Tensor) -> None:
        self.category = class_index(category, "SemanticSegmentationTarget's category")
        self.mask = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask)

    def __call__(self, model_output: Any) -> torch.Tensor:
        scores = logits_of(model_output)
        if scores.ndim != 3:
            raise ValueError(
                f"{self!r}: expected a (C, H, W) model output; got shape {tuple(scores.shape)}"
            )
        if not 0 <= self.category < scores.shape[0]:
            raise IndexError(
                f"{self!r}: category {self.category} is out of range for a model output with "
                f"{scores.shape[0]} classes (expected 0 <= category < {scores.shape[0]})"
            )
        if tuple(self.mask.shape) != tuple(scores.shape[1:]):
            raise ValueError(
                f"{self!r}: mask shape {tuple(self.mask.shape)} does not match the output's "
                f"spatial size {tuple(scores.shape[1:])}"
            )
        mask = self.mask.to(device=scores.device, dtype=scores.dtype)
        return (scores[self.category, :, :] * mask).sum()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(category={self.category}, mask_shape={tuple(self.mask.shape)})"
        )


class FasterRCNNBoxScoreTarget:
    """Score of detections that match reference boxes, for torchvision detection models.

    For every reference box, the predicted box with the highest IoU is found; if that IoU
    exceeds ``iou_threshold`` and the labels agree, ``IoU + score`` of the prediction is added.

    Args:
        labels: reference labels, one per box.
        bounding_boxes: reference boxes, shape (K, 4), in (x1, y1, x2, y2) format.
        iou_threshold: minimum IoU (exclusive) for a prediction to count.

    Example:
        >>> import torch
        >>> detections = {
        ...     "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]]),
        ...     "labels": torch.tensor([3, 1]),
        ...     "scores": torch.tensor([0.9, 0.4]),
        ... }
        >>> target = FasterRCNNBoxScoreTarget(labels=[3], bounding_boxes=[[10, 10, 50, 50]])
        >>> target(detections)  # IoU 1 + score 0.9
        tensor(1.9000)
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        bounding_boxes: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
        iou_threshold: float = 0.5,
    ) -> None:
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = float(iou_threshold)

    def __call__(self, model_output: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pred_boxes = model_output["boxes"]
        pred_labels = model_output["labels"]
        pred_scores = model_output["scores"]
        total = pred_scores.sum() * 0
        if len(pred_boxes) == 0:
            return total
        ref_boxes = (
            torch.as_tensor(
                np.asarray(self.bounding_boxes)
                if not torch.is_tensor(self.bounding_boxes)
                else self.bounding_boxes
            )
            .to(device=pred_boxes.device, dtype=pred_boxes.dtype)
            .reshape(-1, 4)
        )
        ref_labels = [int(label) for label in self.labels]
        if len(ref_labels) != len(ref_boxes):
            raise ValueError(
                f"{self!r}: got {len(ref_labels)} labels for {len(ref_boxes)} bounding boxes"
            )
        ious = torchvision.ops.box_iou(ref_boxes, pred_boxes)
        for row, label in zip(ious, ref_labels):
            index = int(row.argmax())
            if row[index] > self.iou_threshold and int(pred_labels[index]) == label:
                total = total + row[index] + pred_scores[index]
        return total

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(labels={list(int(label) for label in self.labels)}, "
            f"num_boxes={len(self.bounding_boxes)}, iou_threshold={self.iou_threshold})"
        )


class SimilarityToConceptTarget:
    """Cosine similarity between an embedding (the model output) and a concept vector.

    Args:
        features: the concept embedding, a vector (tensor or numpy array) of the output's size;
            moved to the output's device and dtype when called.

    Example:
        >>> import torch
        >>> SimilarityToConceptTarget(torch.tensor([1.0, 0.0]))(torch.tensor([2.0, 2.0]))
        tensor(0.7071)
    """

    def __init__(self, features: np.ndarray | torch.Tensor) -> None:
        concept = torch.as_tensor(
            np.asarray(features) if not torch.is_tensor(features) else features.detach()
        )
        if concept.ndim != 1 or concept.numel() == 0:
            raise ValueError(
                f"features must be a non-empty 1-D concept vector; got shape {tuple(concept.shape)}"
            )
        self.features = concept

    def __call__(self, model_output: Any) -> torch.Tensor:
        embedding = logits_of(model_output)
        if embedding.ndim == 0 or embedding.shape[-1] != self.features.shape[0]:
            raise ValueError(
                f"{self!r}: the model output of shape {tuple(embedding.shape)} is not an embedding "
                f"of size {self.features.shape[0]} (expected (D,) or (B, D))"
            )
        concept = self.features.to(device=embedding.device, dtype=embedding.dtype)
        return torch.nn.functional.cosine_similarity(embedding, concept, dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.features.shape[0]})"


class FinerWeightedTarget:
    """Finer-CAM score: one class's logit minus ``alpha`` times the mean of similar classes'.

    ``z[main] - alpha * mean(z[c] for c in comparison_categories)`` (Zhang et al., CVPR 2025).

    Args:
        main_category: the class to explain.
        comparison_categories: the similar classes it is contrasted with (class indices).
        alpha: weight of the comparison; 0 gives the plain logit.

    Example:
        >>> import torch
        >>> FinerWeightedTarget(0, [1, 2], alpha=1.0)(torch.tensor([5.0, 1.0, 3.0]))  # 5 - 2
        tensor(3.)
    """

    def __init__(
        self, main_category: int, comparison_categories: Sequence[int], alpha: float = 1.0
    ) -> None:
        self.main_category = class_index(main_category, "main_category")
        self.comparison_categories = [
            class_index(c, f"comparison_categories[{i}]")
            for i, c in enumerate(comparison_categories)
        ]
        if not self.comparison_categories:
            raise ValueError("comparison_categories must contain at least one class index")
        self.alpha = float(alpha)
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number; got {alpha!r}")

    def __call__(self, model_output: Any) -> torch.Tensor:
        logits = logits_of(model_output)
        for category in [self.main_category, *self.comparison_categories]:
            _check_category(self, category, logits)
        comparison = logits[..., self.comparison_categories].mean(dim=-1)
        return logits[..., self.main_category] - self.alpha * comparison

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(main_category={self.main_category}, "
            f"comparison_categories={self.comparison_categories}, alpha={self.alpha})"
        )

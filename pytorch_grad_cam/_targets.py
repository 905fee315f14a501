"""Targets: normalising what callers pass, one target per image, and scoring them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from numbers import Number
from typing import Any

import numpy as np
import torch

from pytorch_grad_cam._checks import class_index
from pytorch_grad_cam._outputs import describe_output, flatten_tensors, logits_of, select_image
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)

Target = Callable[[Any], Any]
MISSING: Any = object()  # "argument not given" (None has a meaning for targets)

# Targets that score every row of a (B, N) output at once.
ROW_TARGETS = (ClassifierOutputTarget, ClassifierOutputSoftmaxTarget, ClassifierOutputReST)


class TargetsFromOutputs:
    """Targets chosen from the model's own output on the explained batch.

    ``choose(outputs, batch) -> list of targets`` runs after the CAM's forward pass, before
    any perturbation, so a method that wraps another (e.g. FinerCAM) can pick classes from the
    logits without a forward pass of its own.
    """

    def __init__(self, choose: Callable[[Any, int], Sequence[Target]]) -> None:
        self.choose = choose


def resolve_targets(targets: Any, target_category: Any = MISSING) -> Any:
    """Normalise ``targets`` (and the 2021 ``target_category``) to a list of targets, None
    (each image's top class) or a ``TargetsFromOutputs``.

    Class indices (an int, or a list of ints) become ``ClassifierOutputTarget``s and a single
    callable a one-element list.
    """
    if target_category is not MISSING:
        warnings.warn(
            "target_category= is deprecated; use targets=[ClassifierOutputTarget(k)]",
            DeprecationWarning,
            stacklevel=3,
        )
        if targets is not None:
            raise ValueError("pass either targets or target_category, not both")
        targets = target_category
    if targets is None or isinstance(targets, TargetsFromOutputs):
        return targets
    if isinstance(targets, (torch.Tensor, np.ndarray)) and targets.ndim > 1:
        raise ValueError(
            f"targets as an array must hold one class index per image; got shape "
            f"{tuple(targets.shape)}"
        )
    if _is_scalar(targets):
        return [ClassifierOutputTarget(class_index(targets, "targets"))]
    if callable(targets):
        return [targets]
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
        raise TypeError(
            "targets must be None (each image's top class), a class index, a target such as "
            f"ClassifierOutputTarget(k), or a list of them; got {type(targets).__name__}"
        )
    targets = list(targets)
    if not targets:
        raise ValueError("targets is empty; pass None for the top class, or one target per image")
    resolved = []
    for i, target in enumerate(targets):
        if _is_scalar(target):
            target = ClassifierOutputTarget(class_index(target, f"targets[{i}]"))
        elif not callable(target):
            raise TypeError(
                f"targets[{i}] must be a callable target such as ClassifierOutputTarget(k), or a "
                f"class index; got {type(target).__name__}"
            )
        resolved.append(target)
    return resolved


def _is_scalar(value: Any) -> bool:
    """A number (or 0-dim array/tensor) where a class index may stand: checked by
    ``class_index`` (which rejects floats)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 0
    return isinstance(value, (Number, np.number))


def broadcast_targets(targets: Sequence[Target], batch: int) -> list[Target]:
    """One target per image: a single target is used for every image."""
    targets = list(targets)
    if len(targets) == 1:
        return targets * batch
    if len(targets) != batch:
        raise ValueError(
            f"targets has {len(targets)} entries but the batch has {batch} images: pass one "
            "target per image, or a single target for every image"
        )
    return targets


def top_class_targets(outputs: Any, batch: int) -> list[ClassifierOutputTarget] | None:
    """``ClassifierOutputTarget`` of each image's top class; None if the output has no
    (B, num_classes) logits."""
    try:
        logits = logits_of(outputs)
    except TypeError:
        return None
    if logits.ndim != 2 or logits.shape[0] != batch:
        return None
    return [ClassifierOutputTarget(int(c)) for c in logits.argmax(dim=-1).tolist()]


def target_scores(outputs: Any, targets: Sequence[Target]) -> torch.Tensor:
    """(B,) scores of a batch output, ``targets[i]`` reading image i's part (differentiable).

    Class-score targets on (B, N) logits are evaluated for all rows at once; any other target
    is called on its image's part of the output (``select_image``) and its result summed.
    While gradients are recorded, a target returning a number that no gradient can flow
    through (a Python float, an integer tensor) is a TypeError naming it.
    """
    batch = len(targets)
    if (
        isinstance(outputs, torch.Tensor)
        and outputs.ndim == 2
        and outputs.shape[0] == batch
        and all(type(t) in ROW_TARGETS for t in targets)
    ):
        keys: list[Any] = [(type(t), getattr(t, "category")) for t in targets]  # noqa: B009
        distinct = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        rows = torch.stack([cls(k)(outputs) for cls, k in distinct])  # checks the class range
        pick = torch.tensor([distinct[key] for key in keys], device=rows.device)
        return rows.gather(0, pick[None])[0]
    differentiable = torch.is_grad_enabled() and any(
        t.requires_grad for t in flatten_tensors(outputs)[0]
    )
    scores = []
    for i, target in enumerate(targets):
        try:
            score = target(select_image(outputs, i, batch))
        except (TypeError, KeyError, AttributeError) as error:
            raise TypeError(
                f"targets[{i}] ({target!r}) could not read the model output "
                f"({describe_output(outputs)}): {error}"
            ) from error
        scores.append(_score_tensor(score, i, target, differentiable))
    device = next((s.device for s in scores if s.device.type != "cpu"), scores[0].device)
    return torch.stack([s.to(device) for s in scores])


def _score_tensor(score: Any, index: int, target: Any, differentiable: bool) -> torch.Tensor:
    """A target's result as a scalar tensor (summed); a TypeError naming ``targets[index]``
    for anything that is not real numbers, or (``differentiable``) not a floating tensor."""
    tensor = None
    if isinstance(score, torch.Tensor):
        tensor = score
    elif isinstance(score, (np.ndarray, np.number)) and score.dtype.kind in "iuf":
        tensor = torch.as_tensor(np.asarray(score))
    elif isinstance(score, (int, float)) and not isinstance(score, bool):
        tensor = torch.as_tensor(score)
    if tensor is None or tensor.dtype == torch.bool or tensor.is_complex():
        kind = type(score).__name__ + (
            f" of dtype {score.dtype}" if hasattr(score, "dtype") else ""
        )
        raise TypeError(
            f"targets[{index}] ({target!r}) returned {kind}; a target must return a tensor of "
            "scores (a scalar, or values that are summed)"
        )
    if differentiable and not (isinstance(score, torch.Tensor) and tensor.is_floating_point()):
        kind = (
            f"a tensor of dtype {tensor.dtype}"
            if isinstance(score, torch.Tensor)
            else f"a {type(score).__name__} ({score!r})"
        )
        raise TypeError(
            f"targets[{index}] ({target!r}) returned {kind}, through which no gradient can "
            "flow: a target must compute its score as a floating tensor from the model output "
            "(e.g. output[k]; not float(output[k]), output[k].item() or output.argmax())"
        )
    return tensor.sum()

"""The base of methods built on another CAM method (FinerCAM; RefineCAM, SESS next)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pytorch_grad_cam.base_cam import BaseCAM


class ComposedCAM:
    """A method that computes its maps with another CAM method, ``base_method``.

    It builds the base method's CAM object (``self.base_cam``) from the same arguments and
    exposes what callers read from a CAM object; the subclass defines ``__call__``.

    Args:
        model, target_layers, reshape_transform: passed to ``base_method``.
        base_method: a BaseCAM subclass (GradCAM, ScoreCAM, ...).
        **kwargs: other options of ``base_method``.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any,
        reshape_transform: Any,
        base_method: type[BaseCAM],
        **kwargs: Any,
    ) -> None:
        if not (isinstance(base_method, type) and issubclass(base_method, BaseCAM)):
            raise TypeError(f"base_method must be a BaseCAM subclass; got {base_method!r}")
        self.base_method = base_method
        self.base_cam = base_method(model, target_layers, reshape_transform, **kwargs)

    @property
    def model(self) -> nn.Module:
        return self.base_cam.model

    @property
    def target_layers(self) -> list[nn.Module]:
        return self.base_cam.target_layers

    @property
    def reshape_transform(self) -> Any:
        return self.base_cam.reshape_transform

    @property
    def device(self) -> torch.device:
        return self.base_cam.device

    @property
    def outputs(self) -> Any:
        """The model outputs of the base method's last call."""
        return self.base_cam.outputs

    @property
    def activations_and_grads(self) -> Any:
        return self.base_cam.activations_and_grads

    def release(self) -> None:
        """Remove hooks the base method holds (see BaseCAM.release)."""
        self.base_cam.release()

    def __enter__(self) -> ComposedCAM:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, exc_tb: Any) -> None:
        self.release()

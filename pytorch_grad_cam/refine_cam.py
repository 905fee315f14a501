"""RefineCAM: multi-layer refinement of another CAM method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam._arrays import as_numpy
from pytorch_grad_cam._composition import ComposedCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.grad_cam_plusplus import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_accross_batch_and_channels, scale_cam_image


class RefineCAM(ComposedCAM):
    """RefineCAM: the element-wise product of a base method's maps at several layers.

    map = minmax(prod_l M_l), M_l = the base method's map at target layer l alone (min-max
    normalised at the input's size). A deep layer localises the class coarsely, a shallower one
    sharply but noisily; their product keeps what every layer agrees on, a sharper map than
    any single layer's (and than the mean ``BaseCAM`` takes over several layers). There is no
    separate paper: this is grad-cam 1.5.7's multi-layer refinement, computed here in one
    forward/backward pass of the base method for all layers (``BaseCAM.per_layer_maps``).

    Args:
        model, target_layers, reshape_transform: as in BaseCAM; list the layers to combine.
        base_method: the BaseCAM subclass that computes each layer's map (Grad-CAM++).
        **kwargs: other options of ``base_method``.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import RefineCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> layers = [model.features[2], model.target_layer]
        >>> RefineCAM(model, layers)(torch.rand(2, 3, 64, 64), targets=[0, 1]).shape
        (2, 64, 64)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], Any] | None = None,
        base_method: type[BaseCAM] = GradCAMPlusPlus,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, base_method, **kwargs)

    def forward(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Callable] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Compute the refined maps, float32 (B, H, W) (or (B, D, H, W)) in [0, 1].

        Args:
            input_tensor: (B, C, H, W) or (B, C, D, H, W) batch.
            targets: one target per image, a single one for all, or None (top class).
            eigen_smooth: passed to the base method.
        """
        return as_numpy(self.compute(input_tensor, targets, eigen_smooth))

    __call__ = forward

    def compute(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Callable] | None = None,
        eigen_smooth: bool = False,
    ) -> torch.Tensor:
        """The refined maps as a float32 tensor on the model's device."""
        layer_maps = self.base_cam.per_layer_maps(input_tensor, targets, eigen_smooth)
        # each layer's map normalised once more at full size, as a one-layer base CAM returns it
        layer_maps = scale_accross_batch_and_channels(layer_maps, None)
        refined: torch.Tensor = scale_cam_image(layer_maps.prod(dim=1))
        return refined

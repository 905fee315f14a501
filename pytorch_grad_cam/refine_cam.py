"""RefineCAM: multi-layer refinement of another CAM method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam._arrays import as_numpy
from pytorch_grad_cam._composition import ComposedCAM, MessageRelay
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
        self.single_layer_cams: list[BaseCAM] | None = None

    def forward(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[Callable] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Compute the refined maps, float32 (B, H, W) (or (B, D, H, W)) in [0, 1] (numpy of
        ``compute``).

        Args:
            input_tensor: (B, C, H, W) or (B, C, D, H, W) batch.
            targets: one target per image, a single one for all, or None (top class).
            eigen_smooth: passed to the base method.
        """
        return as_numpy(self.compute(input_tensor, targets, eigen_smooth=eigen_smooth))

    __call__ = forward

    def composed_maps(
        self,
        input_tensor: torch.Tensor,
        targets: Any,
        aug_smooth: bool,
        eigen_smooth: bool,
        keep_graph: bool,
    ) -> torch.Tensor:
        """The product of the layers' maps. One pass of the base method for all layers; with
        ``aug_smooth`` or ``keep_graph``, one base CAM per layer (a pass each), whose maps
        are smoothed over the augmentations or keep their graph."""
        if aug_smooth or keep_graph:
            relay = MessageRelay(self.base_method.__name__, type(self).__name__)
            maps = []
            try:
                for layer, cam in enumerate(self.layer_cams()):
                    with relay.part(layer=layer):  # its target_layers[0] is our [layer]
                        maps.append(
                            cam.compute(
                                input_tensor,
                                targets,
                                aug_smooth,
                                eigen_smooth,
                                keep_graph=keep_graph,
                            )
                        )
            finally:
                relay.emit()
            layer_maps = torch.stack(maps, dim=1)
        else:
            layer_maps = self.base_cam.per_layer_maps(input_tensor, targets, eigen_smooth)
        # each layer's map normalised once more at full size, as a one-layer base CAM returns it
        layer_maps = scale_accross_batch_and_channels(layer_maps, None)
        refined: torch.Tensor = scale_cam_image(layer_maps.prod(dim=1))
        return refined

    def layer_cams(self) -> list[BaseCAM]:
        """A one-layer base CAM per target layer (made on first use)."""
        if self.single_layer_cams is None:
            self.single_layer_cams = [
                self.base_method(self.model, [layer], self.reshape_transform, **self.base_options)
                for layer in self.target_layers
            ]
        return self.single_layer_cams

    def release(self) -> None:
        """Remove hooks the base CAMs hold (see BaseCAM.release)."""
        super().release()
        for cam in self.single_layer_cams or []:
            cam.release()

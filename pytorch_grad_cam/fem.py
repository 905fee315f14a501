"""FEM: the Feature Explanation Method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._arrays import Array, numpy_compatible
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM


class FEM(BaseCAM):
    """FEM (Fuad et al., "Features Understanding in 3D CNNs for Actions Recognition in
    Video", IPTA 2020, hal-02963298).

    A K-sigma rule binarises each channel: B_k = [A_k > mean(A_k) + k * std(A_k)] (over the
    channel's positions, population std). The channel weight is the share of positions that
    pass, w_k = mean(B_k);  map = ReLU(sum_k w_k A_k). No gradients; 2-D maps and 3-D volumes.
    ``eigen_smooth`` has no effect (as in grad-cam).

    Args:
        model, target_layers, reshape_transform: as in BaseCAM.
        k: the number of standard deviations above the mean a position must reach.
        **kwargs: other BaseCAM options.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import FEM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> FEM(model, [model.target_layer], k=1)(x).shape  # no targets needed
        (2, 64, 64)
    """

    uses_gradients = False
    k: float

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], Any] | None = None,
        k: float = 2,
        **kwargs: Any,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, Real):
            raise TypeError(f"k must be a number (standard deviations); got {k!r}")
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.k = k

    @numpy_compatible
    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor | None,
    ) -> torch.Tensor:
        spatial = tuple(range(2, activations.ndim))
        mean = activations.mean(dim=spatial, keepdim=True)
        std = activations.std(dim=spatial, keepdim=True, correction=0)
        binary = activations > mean + self.k * std
        return binary.float().mean(dim=spatial)

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Array,
        grads: Array | None,
        eigen_smooth: bool = False,
    ) -> Array:
        return super().get_cam_image(input_tensor, target_layer, targets, activations, grads)

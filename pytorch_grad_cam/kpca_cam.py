"""KPCA-CAM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._arrays import Array
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import KERNELS, get_2d_projection_kernel


class KPCA_CAM(BaseCAM):
    """KPCA-CAM (Karmani et al., 2024, "Visual Explainability of Deep Computer Vision Models
    using Kernel PCA").

    Eigen-CAM with kernel PCA: map = ReLU(projection of each position's activation vector on
    the first principal component in the kernel's feature space), see
    ``get_2d_projection_kernel``. No gradients and no class discrimination.

    Args:
        model, target_layers, reshape_transform: as in BaseCAM.
        kernel: "sigmoid" (default), "rbf", "poly" or "linear" (= Eigen-CAM).
        gamma: kernel coefficient; None = 1 / number of channels.
        **kwargs: other BaseCAM options (e.g. tta_transforms).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import KPCA_CAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> KPCA_CAM(model, [model.target_layer], kernel="rbf")(x).shape
        (2, 64, 64)
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], torch.Tensor] | None = None,
        kernel: str = "sigmoid",
        gamma: float | None = None,
        **kwargs: Any,
    ) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"gamma must be a positive number or None; got {gamma!r}")
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.kernel = kernel
        self.gamma = gamma

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Array,
        grads: Array | None,
        eigen_smooth: bool = False,
    ) -> Array:
        return get_2d_projection_kernel(activations, self.kernel, self.gamma)

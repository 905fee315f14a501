"""Eigen-Grad-CAM."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import Array
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection


class EigenGradCAM(BaseCAM):
    """Eigen-Grad-CAM: Eigen-CAM of the class-weighted activations.

    map = ReLU(first principal component of dy/dA * A).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import EigenGradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> EigenGradCAM(model, [model.target_layer])(x, targets=[1]).shape
        (2, 64, 64)
    """

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Array,
        grads: Array,
        eigen_smooth: bool = False,
    ) -> Array:
        return get_2d_projection(grads * activations)

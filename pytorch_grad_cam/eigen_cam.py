"""Eigen-CAM."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import Array
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection


class EigenCAM(BaseCAM):
    """Eigen-CAM (Bany Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299).

    map = ReLU(projection of the activations on their first principal component);
    no gradients and no class discrimination.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import EigenCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> EigenCAM(model, [model.target_layer])(x).shape  # no targets needed
        (2, 64, 64)
    """

    uses_gradients = False

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Array,
        grads: Array | None,
        eigen_smooth: bool = False,
    ) -> Array:
        return get_2d_projection(activations)

"""Grad-CAM."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

    w_k = mean over positions of dy/dA_k;  map = ReLU(sum_k w_k A_k).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import GradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> GradCAM(model, [model.target_layer])(x, targets=[1]).shape
        (2, 64, 64)
    """

    @numpy_compatible
    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        return grads.mean(dim=tuple(range(2, grads.ndim)))

"""Grad-CAM++."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv:1710.11063).

    With g = dy/dA_k and S_k = sum over positions of A_k:
    alpha = g^2 / (2 g^2 + S_k g^3 + 1e-6) (alpha = 0 where g = 0);
    w_k = sum over positions of alpha * ReLU(g);  map = ReLU(sum_k w_k A_k).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import GradCAMPlusPlus
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> GradCAMPlusPlus(model, [model.target_layer])(x, targets=[1]).shape
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
        spatial = tuple(range(2, grads.ndim))
        g2 = grads.pow(2)
        sums = activations.sum(dim=spatial, keepdim=True)
        alpha = g2 / (2 * g2 + sums * g2 * grads + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (alpha * grads.clamp_min(0)).sum(dim=spatial)

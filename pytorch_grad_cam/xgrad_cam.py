"""XGrad-CAM."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM


class XGradCAM(BaseCAM):
    """XGrad-CAM, Axiom-based Grad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312).

    w_k = sum over positions of (dy/dA_k * A_k) / (sum over positions of A_k + 1e-7).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import XGradCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> XGradCAM(model, [model.target_layer])(x, targets=[1]).shape
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
        return (grads * activations).sum(dim=spatial) / (activations.sum(dim=spatial) + 1e-7)

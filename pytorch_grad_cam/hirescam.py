"""HiResCAM."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM

# names grad-cam 1.5.7 also exposes from this module
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection as get_2d_projection


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891).

    map = ReLU(sum_k dy/dA_k * A_k), element-wise, without averaging the gradients.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import HiResCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> HiResCAM(model, [model.target_layer])(x, targets=[1]).shape
        (2, 64, 64)
    """

    @numpy_compatible
    def get_weighted_activations(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        return grads * activations

"""Random CAM, a baseline for the faithfulness metrics."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM


class RandomCAM(BaseCAM):
    """A sanity-check baseline: w_k drawn uniformly from [-1, 1]; map = ReLU(sum_k w_k A_k).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import RandomCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> RandomCAM(model, [model.target_layer])(x).shape
        (2, 64, 64)
    """

    uses_gradients = False

    @numpy_compatible
    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        shape = activations.shape[:2]
        return torch.rand(shape, device=activations.device) * 2 - 1

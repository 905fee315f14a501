"""Element-wise Grad-CAM."""

import torch

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam.base_cam import BaseCAM


class GradCAMElementWise(BaseCAM):
    """Element-wise Grad-CAM: like HiResCAM, with a ReLU on each term.

    map = ReLU(sum_k ReLU(dy/dA_k * A_k)).
    """

    @numpy_compatible
    def get_weighted_activations(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        return (grads * activations).clamp_min(0)

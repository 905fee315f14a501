"""HiResCAM."""

import torch

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam.base_cam import BaseCAM


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891).

    map = ReLU(sum_k dy/dA_k * A_k), element-wise, without averaging the gradients.
    """

    @numpy_compatible
    def get_weighted_activations(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        return grads * activations

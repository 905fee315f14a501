"""Grad-CAM."""

import torch

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam.base_cam import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

    w_k = mean over positions of dy/dA_k;  map = ReLU(sum_k w_k A_k).
    """

    @numpy_compatible
    def get_cam_weights(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        return grads.mean(dim=tuple(range(2, grads.ndim)))

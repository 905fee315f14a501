"""XGrad-CAM."""

import torch

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam.base_cam import BaseCAM


class XGradCAM(BaseCAM):
    """XGrad-CAM, Axiom-based Grad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312).

    w_k = sum over positions of (dy/dA_k * A_k) / (sum over positions of A_k + 1e-7).
    """

    @numpy_compatible
    def get_cam_weights(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        spatial = tuple(range(2, grads.ndim))
        return (grads * activations).sum(dim=spatial) / (activations.sum(dim=spatial) + 1e-7)

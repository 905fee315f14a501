"""LayerCAM."""

import torch

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam.base_cam import BaseCAM


class LayerCAM(BaseCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021).

    map = ReLU(sum_k ReLU(dy/dA_k) * A_k), a weight for every position.
    """

    @numpy_compatible
    def get_weighted_activations(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        return grads.clamp_min(0) * activations

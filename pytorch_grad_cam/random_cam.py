"""Random CAM, a baseline for the faithfulness metrics."""

import torch

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam.base_cam import BaseCAM


class RandomCAM(BaseCAM):
    """A sanity-check baseline: w_k drawn uniformly from [-1, 1]; map = ReLU(sum_k w_k A_k)."""

    uses_gradients = False

    @numpy_compatible
    def get_cam_weights(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        shape = activations.shape[:2]
        return torch.rand(shape, device=activations.device) * 2 - 1

"""Seg-Eigen-CAM."""

import torch
from torch import nn

from pytorch_grad_cam._arrays import Array
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction


class SegEigenCAM(BaseCAM):
    """Seg-Eigen-CAM: Eigen-CAM of the gradient-weighted activations, for segmentation models.

    map = ReLU(p), p = first principal component of |dy/dA| * A, negated when
    |min p| > |max p| (``get_2d_projection_with_sign_correction``). The absolute gradient
    weights each activation by how much the target depends on it, whatever the sign; the sign
    rule keeps the strongest response positive.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import SegEigenCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model, x = load_demo_model(), torch.rand(2, 3, 64, 64)
        >>> SegEigenCAM(model, [model.target_layer])(x, targets=[1]).shape
        (2, 64, 64)
    """

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: Array,
        grads: Array,
        eigen_smooth: bool = False,
    ) -> Array:
        weights = grads.abs() if isinstance(grads, torch.Tensor) else abs(grads)
        return get_2d_projection_with_sign_correction(weights * activations)

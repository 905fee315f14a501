"""Eigen-Grad-CAM."""

from pytorch_grad_cam._arrays import Array
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection


class EigenGradCAM(BaseCAM):
    """Eigen-Grad-CAM: Eigen-CAM of the class-weighted activations.

    map = ReLU(first principal component of dy/dA * A).
    """

    def get_cam_image(
        self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False
    ) -> Array:
        return get_2d_projection(grads * activations)

"""Eigen-CAM."""

from pytorch_grad_cam._arrays import Array
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection


class EigenCAM(BaseCAM):
    """Eigen-CAM (Bany Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299).

    map = ReLU(projection of the activations on their first principal component);
    no gradients and no class discrimination.
    """

    uses_gradients = False

    def get_cam_image(
        self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False
    ) -> Array:
        return get_2d_projection(activations)

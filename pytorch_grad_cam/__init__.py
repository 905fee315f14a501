"""Class Activation Map methods for PyTorch vision models."""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from pytorch_grad_cam.ablation_cam import AblationCAM
from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerFasterRCNN, AblationLayerVit
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.eigen_cam import EigenCAM
from pytorch_grad_cam.eigen_grad_cam import EigenGradCAM
from pytorch_grad_cam.finer_cam import FinerCAM
from pytorch_grad_cam.fullgrad_cam import FullGrad
from pytorch_grad_cam.grad_cam import GradCAM
from pytorch_grad_cam.grad_cam_elementwise import GradCAMElementWise
from pytorch_grad_cam.grad_cam_plusplus import GradCAMPlusPlus
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
from pytorch_grad_cam.hirescam import HiResCAM
from pytorch_grad_cam.kpca_cam import KPCA_CAM
from pytorch_grad_cam.layer_cam import LayerCAM
from pytorch_grad_cam.random_cam import RandomCAM
from pytorch_grad_cam.score_cam import ScoreCAM
from pytorch_grad_cam.shapley_cam import ShapleyCAM
from pytorch_grad_cam.xgrad_cam import XGradCAM

try:  # the version lives in pyproject.toml only
    __version__ = _version("grad-cam")
except _PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "AblationCAM",
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "ActivationsAndGradients",
    "BaseCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackpropReLUModel",
    "HiResCAM",
    "KPCA_CAM",
    "LayerCAM",
    "RandomCAM",
    "ScoreCAM",
    "ShapleyCAM",
    "XGradCAM",
]

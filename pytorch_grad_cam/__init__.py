"""Class Activation Map methods for PyTorch vision models.

The submodules load on first use: ``from pytorch_grad_cam import GradCAM`` works as always,
while importing the package itself costs nothing (so the ``grad-cam`` command answers
``--help`` before torch is imported). The first method requested loads them all, so
``BaseCAM.__subclasses__()`` lists every method.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

try:  # the version lives in pyproject.toml only
    __version__ = _version("grad-cam")
except _PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

# public name -> the module defining it
_EXPORTS = {
    "AblationCAM": "ablation_cam",
    "AblationLayer": "ablation_layer",
    "AblationLayerFasterRCNN": "ablation_layer",
    "AblationLayerVit": "ablation_layer",
    "ActivationsAndGradients": "activations_and_gradients",
    "BaseCAM": "base_cam",
    "DeepFeatureFactorization": "feature_factorization.deep_feature_factorization",
    "EigenCAM": "eigen_cam",
    "EigenGradCAM": "eigen_grad_cam",
    "FEM": "fem",
    "FinerCAM": "finer_cam",
    "FullGrad": "fullgrad_cam",
    "GradCAM": "grad_cam",
    "GradCAMElementWise": "grad_cam_elementwise",
    "GradCAMPlusPlus": "grad_cam_plusplus",
    "GuidedBackpropReLUModel": "guided_backprop",
    "HiResCAM": "hirescam",
    "KPCA_CAM": "kpca_cam",
    "LayerCAM": "layer_cam",
    "RandomCAM": "random_cam",
    "RefineCAM": "refine_cam",
    "SESS": "sess",
    "ScoreCAM": "score_cam",
    "SegEigenCAM": "seg_eigen_cam",
    "ShapleyCAM": "shapley_cam",
    "XGradCAM": "xgrad_cam",
    "run_dff_on_image": "feature_factorization.deep_feature_factorization",
}
_SUBMODULES = {m.split(".")[0] for m in _EXPORTS.values()} | {"cli", "demo", "metrics", "utils"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:  # the first one asked for loads them all (__subclasses__() lists all)
        for export, module in _EXPORTS.items():
            globals()[export] = getattr(import_module(f"{__name__}.{module}"), export)
        return globals()[name]
    if name in _SUBMODULES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # what type checkers and editors see
    from pytorch_grad_cam.ablation_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import (
        AblationLayer,
        AblationLayerFasterRCNN,
        AblationLayerVit,
    )
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.eigen_cam import EigenCAM
    from pytorch_grad_cam.eigen_grad_cam import EigenGradCAM
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import (
        DeepFeatureFactorization,
        run_dff_on_image,
    )
    from pytorch_grad_cam.fem import FEM
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
    from pytorch_grad_cam.refine_cam import RefineCAM
    from pytorch_grad_cam.score_cam import ScoreCAM
    from pytorch_grad_cam.seg_eigen_cam import SegEigenCAM
    from pytorch_grad_cam.sess import SESS
    from pytorch_grad_cam.shapley_cam import ShapleyCAM
    from pytorch_grad_cam.xgrad_cam import XGradCAM

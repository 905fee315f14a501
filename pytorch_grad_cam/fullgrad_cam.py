"""FullGrad."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_grad_cam._arrays import as_tensor, like, numpy_compatible
from pytorch_grad_cam._checks import check_not_scripted
from pytorch_grad_cam._targets import Target
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.find_layers import find_layer_predicate_recursive

# names grad-cam 1.5.7 also exposes from this module
from pytorch_grad_cam.utils.image import (
    scale_accross_batch_and_channels as scale_accross_batch_and_channels,
)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection as get_2d_projection

_CONVS = (nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


class FullGrad(BaseCAM):
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780).

    S = psi(|dy/dx * x|) + sum over layers l, channels c of psi(|dy/dz_l,c * b_l,c|), where
    z_l is the output of a conv or batch-norm layer with bias b_l (for batch norm in eval mode
    the effective bias beta - running_mean * gamma / sqrt(running_var + eps)), and psi
    min-max normalises one channel's map of one image and resizes it to the input size. The
    sum is min-max normalised at the end. Every Conv2d/Conv3d with a bias and every
    BatchNorm2d/3d with running statistics is used: ``target_layers`` is ignored (with a
    warning). Layers a forward pass skips (e.g. auxiliary heads in eval mode) or that the
    target does not depend on (another head) add nothing to that call's map. Needs a full
    backward pass to the input.

    With ``eigen_smooth`` each layer's channel maps are replaced by their first principal
    component instead of summed.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import FullGrad
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> FullGrad(load_demo_model())(torch.rand(1, 3, 64, 64), targets=[0]).shape
        (1, 64, 64)
    """

    require_every_layer = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        check_not_scripted(model)  # before searching its layers
        legacy_layer = kwargs.pop("target_layer", None)  # the 2021 spelling
        if isinstance(target_layers, nn.Module) or target_layers or legacy_layer is not None:
            warnings.warn(
                "FullGrad uses every conv/batch-norm layer with a bias; target_layers is ignored",
                stacklevel=2,
            )
        layers = list({id(m): m for m in find_layer_predicate_recursive(model, _has_bias)}.values())
        if not layers:
            raise ValueError(
                "FullGrad needs a Conv2d/Conv3d layer with a bias or a BatchNorm2d/3d layer with "
                f"running statistics; {type(model).__name__} has none"
            )
        if reshape_transform is not None:
            warnings.warn(
                "FullGrad explains conv/batch-norm outputs, which are already (B, C, *spatial); "
                "reshape_transform is ignored",
                stacklevel=2,
            )
        kwargs["compute_input_gradient"] = True
        super().__init__(model, layers, None, **kwargs)

    def get_bias_data(self, layer: nn.Module) -> torch.Tensor:
        """Per-channel bias of a conv layer, or the effective bias of a batch norm in eval
        mode: beta - running_mean * gamma / sqrt(running_var + eps)."""
        if isinstance(layer, _CONVS):
            assert layer.bias is not None  # only biased convs are target layers
            return layer.bias.detach()
        norm: Any = layer
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.detach()
        shift = -norm.running_mean * scale
        return shift if norm.bias is None else shift + norm.bias.detach()

    @numpy_compatible
    def get_weighted_activations(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        bias = self.get_bias_data(target_layer).to(grads)
        return _scale_channels((grads * bias.reshape(-1, *[1] * (grads.ndim - 2))).abs())

    def scale_layer_cam(self, cam: torch.Tensor, target_size: tuple[int, ...]) -> torch.Tensor:
        size = target_size[::-1]
        if tuple(cam.shape[1:]) == size:
            return cam
        mode = "bilinear" if cam.ndim == 3 else "trilinear"
        return F.interpolate(cam[:, None], size=size, mode=mode, align_corners=False)[:, 0]

    def aggregate_multi_layers(self, cam_per_target_layer: Any) -> Any:
        layers = [as_tensor(c) for c in cam_per_target_layer]
        state: Any = self.state
        input_term = _scale_channels((state.input_gradient * state.input_tensor).abs())
        total = input_term.sum(dim=1) + torch.cat(layers, dim=1).to(input_term).sum(dim=1)
        return like(scale_cam_image(total), cam_per_target_layer[0])


def _has_bias(module: nn.Module) -> bool:
    if isinstance(module, _CONVS):
        return module.bias is not None
    return isinstance(module, _BATCH_NORMS) and module.running_mean is not None


def _scale_channels(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise every (image, channel) map of a (B, C, *spatial) tensor."""
    flat = maps.reshape(-1, *maps.shape[2:])
    scaled: torch.Tensor = scale_cam_image(flat)
    return scaled.reshape(maps.shape)

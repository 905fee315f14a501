"""FullGrad."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.find_layers import find_layer_predicate_recursive
from pytorch_grad_cam.utils.image import scale_cam_image

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
    warning). Layers the forward pass skips (e.g. auxiliary heads in eval mode) are dropped
    and those the target does not depend on (another head) add nothing. Needs a full backward
    pass to the input.

    With ``eigen_smooth`` each layer's channel maps are replaced by their first principal
    component instead of summed.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | Sequence[nn.Module] | None = None,
        reshape_transform: Callable[[Any], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(target_layers, nn.Module) or target_layers:
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

    def _run_model(self, input_tensor: torch.Tensor) -> Any:
        """Forward pass; layers the model does not run (e.g. auxiliary heads in eval mode) are
        dropped for good: they have no term."""
        aag = self.activations_and_grads
        finished: list[bool] = []
        handle = self.model.register_forward_hook(lambda *_: finished.append(True))
        try:
            return super()._run_model(input_tensor)
        except RuntimeError:
            ran = [
                layer for layer, act in zip(self.target_layers, aag.activations) if act is not None
            ]
            if not finished or not ran:
                raise
        finally:
            handle.remove()
        aag.release()
        self.target_layers = aag.target_layers = ran
        aag.register()
        return super()._run_model(input_tensor)

    def _raw_gradients(
        self, scores: torch.Tensor, tensors: list[torch.Tensor]
    ) -> Sequence[torch.Tensor | None]:
        """Layers the score does not depend on (e.g. another head's) have a zero gradient."""
        grads = super()._raw_gradients(scores, tensors)
        self._input_term = (self.input_gradient * self._input_leaf.detach()).abs()
        return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]

    def _gradients(self, scores: torch.Tensor) -> list[Any]:
        with warnings.catch_warnings():  # a zero term is normal for some of the many layers
            warnings.filterwarnings("ignore", "the gradient at target_layers", RuntimeWarning)
            return super()._gradients(scores)

    def get_weighted_activations(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        bias = _bias(target_layer).to(grads)
        return _scale_channels((grads * bias.reshape(-1, *[1] * (grads.ndim - 2))).abs())

    def scale_layer_cam(self, cam: torch.Tensor, target_size: tuple[int, ...]) -> torch.Tensor:
        size = target_size[::-1]
        if tuple(cam.shape[1:]) == size:
            return cam
        mode = "bilinear" if cam.ndim == 3 else "trilinear"
        return F.interpolate(cam[:, None], size=size, mode=mode, align_corners=False)[:, 0]

    def aggregate_multi_layers(self, cams: Sequence[torch.Tensor]) -> torch.Tensor:
        input_term, self._input_term = _scale_channels(self._input_term), None
        return scale_cam_image(input_term.sum(dim=1) + torch.stack(list(cams)).sum(dim=0))


def _has_bias(module: nn.Module) -> bool:
    if isinstance(module, _CONVS):
        return module.bias is not None
    return isinstance(module, _BATCH_NORMS) and module.running_mean is not None


def _bias(layer: nn.Module) -> torch.Tensor:
    """Per-channel bias of a conv layer, or the effective bias of a batch norm in eval mode."""
    if isinstance(layer, _CONVS):
        return layer.bias.detach()
    scale = torch.rsqrt(layer.running_var + layer.eps)
    if layer.weight is not None:
        scale = scale * layer.weight.detach()
    shift = -layer.running_mean * scale
    return shift if layer.bias is None else shift + layer.bias.detach()


def _scale_channels(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise every (image, channel) map of a (B, C, *spatial) tensor."""
    flat = maps.reshape(-1, *maps.shape[2:])
    return scale_cam_image(flat).reshape(maps.shape)

"""Ablation-CAM over several layers at once."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._checks import check_finite_scores
from pytorch_grad_cam._forward_pass import ForwardPass
from pytorch_grad_cam._perturbation import check_batch_size, progress_bar, require_targets
from pytorch_grad_cam._targets import Target, target_scores
from pytorch_grad_cam.ablation_cam import AblationCAM as SingleLayerAblationCAM
from pytorch_grad_cam.ablation_cam import ablation_weights
from pytorch_grad_cam.ablation_layer import ablation_value
from pytorch_grad_cam.base_cam import BaseCAM as BaseCAM
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive as replace_layer_recursive

__all__ = ["AblationCAM", "AblationLayer", "BaseCAM", "replace_layer_recursive"]


class AblationCAM(SingleLayerAblationCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020) with the target layers ablated together.

    ``pytorch_grad_cam.AblationCAM`` given several layers ablates each layer's channels in
    separate passes. Here channel k is ablated in *every* target layer in the same forward
    pass (the layers then need the same number of channels), so one score per channel,

    w_k = (y - y_k) / y,  y_k: the target score with channel k ablated in all target layers,

    weights every layer's map: map_l = ReLU(sum_k w_k A^l_k), averaged over the layers as
    usual. Ablations in an earlier layer reach the later ones (the later layers' own outputs
    are ablated, not replaced). Every ablated copy is a full forward pass of the image
    (``batch_size`` copies per pass); the options are those of ``AblationCAM``, the channels
    chosen on the first layer.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam.ablation_cam_multilayer import AblationCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> layers = [model.features[2], model.features[3]]  # 48 channels each
        >>> cam = AblationCAM(model, layers, progress=False)
        >>> cam(torch.rand(1, 3, 64, 64), targets=[0]).shape
        (1, 64, 64)
    """

    @numpy_compatible
    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        state = self.state
        if state is None:
            raise RuntimeError("get_cam_weights runs inside a CAM call, after its forward pass")
        weights = state.shared.get("joint ablation weights")
        if weights is None:  # once per call, for every layer
            weights = self._joint_weights(state, input_tensor, targets, activations)
            state.shared["joint ablation weights"] = weights
        return weights.to(activations.device)

    def _joint_weights(
        self,
        state: ForwardPass,
        input_tensor: torch.Tensor,
        targets: Any,
        activations: torch.Tensor,
    ) -> torch.Tensor:
        """(B, C) weights from ablating each channel in all target layers at once."""
        batch_size = check_batch_size(self.batch_size)
        targets = require_targets("AblationCAM", targets)
        channels = activations.shape[1]
        recorded = [torch.as_tensor(a).shape for a in self.activations_and_grads.activations]
        if any(len(shape) < 2 or shape[1] != channels for shape in recorded):
            raise ValueError(
                "the target layers of the multi-layer AblationCAM must have the same number of "
                f"channels (ablated together); got activations of shapes {recorded}"
            )
        device = activations.device
        self.last_path = "full"
        with torch.no_grad():
            original = target_scores(self.outputs, targets).float().to(device)
            check_finite_scores(original, targets, " (nothing ablated)")
            plans = self.ablation_plans(activations)
            ablated = original[:, None].repeat(1, channels)
            chunks = [
                (b, plan[start : start + batch_size])
                for b, plan in enumerate(plans)
                for start in range(0, len(plan), batch_size)
            ]
            layers = [copy.deepcopy(self.ablation_layer) for _ in self.target_layers]
            calls = [len(state.captures_of(i)) - 1 for i in range(len(layers))]
            with _ablated_outputs(self.target_layers, layers, calls) as set_indices:
                for b, indices in progress_bar(self.progress, chunks, "AblationCAM"):
                    set_indices(indices)
                    image = input_tensor[b : b + 1]
                    outputs = self.model(image.repeat(len(indices), *[1] * (image.ndim - 1)))
                    scores = target_scores(outputs, [targets[b]] * len(indices)).float()
                    ablated[b, indices.to(device)] = scores.to(ablated)
        check_finite_scores(ablated, targets, " with channel {k} ablated in every target layer")
        return ablation_weights(original, ablated)


@contextmanager
def _ablated_outputs(
    target_layers: Sequence[nn.Module], ablation_layers: Sequence[Any], calls: list[int]
) -> Iterator[Any]:
    """Yield ``set_indices(indices)``: until the block ends, call ``calls[l]`` (from 0) of
    target layer l returns its output with channel ``indices[i]`` of copy i ablated by
    ``ablation_layers[l]`` (in this thread only)."""
    thread = threading.get_ident()
    counts = [0] * len(target_layers)
    current: list[torch.Tensor] = []

    def make_hook(index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if threading.get_ident() != thread:
                return None
            counts[index] += 1
            if counts[index] - 1 != calls[index]:
                return None
            layer = ablation_layers[index]
            layer.indices = current[0]
            layer.activations = _cloned(output)
            try:
                return layer(None)
            finally:
                layer.activations = None

        return hook

    def set_indices(indices: torch.Tensor) -> None:
        counts[:] = [0] * len(counts)
        current[:] = [indices]

    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(target_layers)]
    try:
        yield set_indices
    finally:
        for handle in handles:
            handle.remove()


def _cloned(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, dict):
        return type(output)((k, v.clone()) for k, v in output.items())
    raise TypeError(f"cannot ablate a layer output of type {type(output).__name__}")


class AblationLayer(nn.Module):
    """A layer followed by ablation: copy i of its output gets channel ``indices[i]`` set to
    ``ablation_value`` (channel axis 1, after ``reshape_transform`` when one is given).

    (grad-cam's wrapper of this module; the multi-layer AblationCAM ablates through hooks,
    leaving the model unchanged.)

    Example:
        >>> import torch
        >>> wrapped = AblationLayer(torch.nn.Identity(), None, torch.tensor([1, 0]))
        >>> wrapped(torch.ones(2, 2, 1, 1)).flatten(1).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    def __init__(self, layer: nn.Module, reshape_transform: Any, indices: Any) -> None:
        super().__init__()
        self.layer = layer
        self.reshape_transform = reshape_transform
        self.indices = indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        if self.reshape_transform is not None:
            out = self.reshape_transform(out)
        out = out.clone()
        indices = torch.as_tensor(self.indices, device=out.device).long()[: out.shape[0]]
        rows = torch.arange(len(indices), device=out.device)
        out[rows, indices] = ablation_value(out)
        return out

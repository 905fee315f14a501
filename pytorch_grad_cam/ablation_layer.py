"""Ablation layers: stand-ins for a target layer that output copies of one image's activations,
each with one channel ablated (used by AblationCAM)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

ABLATION_OFFSET = 1e7


def ablation_value(activations: torch.Tensor) -> torch.Tensor:
    """What an ablated channel is set to: 0 if ``activations`` are non-negative, else
    ``min - 1e7`` (a 0-dim tensor on their device, so no host synchronisation)."""
    low = activations.min()
    return torch.where(low >= 0, torch.zeros_like(low), low - ABLATION_OFFSET)


class AblationLayer(nn.Module):
    """Ablates channels of a (B, C, *spatial) layer output (channel axis 1).

    AblationCAM uses it in three steps, with the roles of the original library:

    * ``activations_to_be_ablated(activations, ratio)``: the channels to ablate for one image
      (also stored in ``self.indices``);
    * ``set_next_batch(input_batch_index, activations, num_channels_to_ablate)``: store that many
      copies of the image's layer output;
    * ``self(x)``: the stored copies, copy i with channel ``self.indices[i]`` ablated (``x``, the
      layer's own input or output, is ignored). AblationCAM then drops the used indices.

    Example:
        >>> import torch
        >>> layer = AblationLayer()
        >>> activations = torch.ones(1, 3, 2, 2)  # one image, 3 channels
        >>> layer.activations_to_be_ablated(activations[0]).tolist()
        [0, 1, 2]
        >>> layer.set_next_batch(0, activations, num_channels_to_ablate=3)
        >>> layer().sum(dim=(2, 3))  # copy i has channel i zeroed
        tensor([[0., 4., 4.],
                [4., 0., 4.],
                [4., 4., 0.]])
    """

    channel_dim = 1

    def __init__(self) -> None:
        super().__init__()
        self.indices = torch.zeros(0, dtype=torch.long)
        self.activations: Any = None

    def objectiveness_mask_from_svd(
        self, activations: torch.Tensor, threshold: float = 0.01
    ) -> torch.Tensor:
        """Positions (boolean, spatial shape) where the image's first principal component is
        strong: ``|p|`` min-max normalised above ``threshold``. ``activations``: (C, *spatial)."""
        projection = get_2d_projection(activations[None])[0].abs()
        projection = projection - projection.min()
        return projection / projection.max() > threshold

    def activations_to_be_ablated(
        self, activations: torch.Tensor | np.ndarray, ratio_channels_to_ablate: float = 1.0
    ) -> torch.Tensor:
        """Channel indices to ablate for one image, from its (C, *spatial) activations.

        All channels when the ratio is 1. Otherwise, as in the original library, each channel is
        scored by how much of its (min-max normalised, absolute) map falls inside the
        objectiveness mask, and the ``int(C * ratio)`` highest- and lowest-scoring channels are
        ablated (each once); the other channels get weight 0.
        """
        acts = torch.as_tensor(activations).float()
        channels = acts.shape[0]
        if ratio_channels_to_ablate >= 1.0:
            self.indices = torch.arange(channels, device=acts.device)
            return self.indices
        inside = self.objectiveness_mask_from_svd(acts).flatten().float()
        norm = acts.abs().flatten(1)
        norm = norm - norm.amin(dim=1, keepdim=True)
        norm = norm / norm.amax(dim=1, keepdim=True)
        scores = torch.nan_to_num((norm * inside).sum(dim=1) / norm.sum(dim=1), nan=0.0)
        order = scores.argsort(stable=True)
        count = int(channels * ratio_channels_to_ablate)
        chosen = torch.cat([order[channels - count :], order[:count]])
        self.indices = torch.unique(chosen)
        return self.indices

    def set_next_batch(
        self, input_batch_index: int, activations: torch.Tensor, num_channels_to_ablate: int
    ) -> None:
        """Store ``num_channels_to_ablate`` copies of image ``input_batch_index``'s output."""
        one = activations[input_batch_index : input_batch_index + 1]
        self.activations = one.repeat(num_channels_to_ablate, *[1] * (one.ndim - 1))

    def forward(self, x: Any = None) -> torch.Tensor:
        """The stored copies, copy i with channel ``self.indices[i]`` ablated."""
        out = self.activations
        count = out.shape[0]
        indices = torch.as_tensor(self.indices[:count], device=out.device).long()
        channels_second = out.movedim(self.channel_dim, 1)  # a view: writes reach ``out``
        rows = torch.arange(count, device=out.device)
        channels_second[rows, indices] = ablation_value(out)
        return out


def check_channel_axis(ablation_layer: Any, output: Any, channels: int, name: str) -> None:
    """Raise if ``ablation_layer`` would ablate another axis of the layer ``output`` than the
    one holding its ``channels`` (e.g. ``AblationLayer`` on a channels-last Swin output)."""
    axis = getattr(ablation_layer, "channel_dim", None)
    if axis is None or not isinstance(output, torch.Tensor) or output.ndim < 2:
        return
    if output.shape[axis] == channels:
        return
    hint = ""
    if output.shape[-1] == channels:
        hint = "; its channels are last (ViT/Swin tokens): pass ablation_layer=AblationLayerVit()"
    elif output.shape[1] == channels:
        hint = "; its channels are on axis 1: pass ablation_layer=AblationLayer()"
    raise ValueError(
        f"ablation_layer {type(ablation_layer).__name__}() ablates axis {axis} of {name}'s "
        f"output of shape {tuple(output.shape)}, which does not hold its {channels} "
        f"channels{hint}"
    )


class AblationLayerVit(AblationLayer):
    """Ablates channels of channels-last outputs: ViT tokens (B, tokens, C), Swin (B, H, W, C).

    A channel is ablated at every token (prefix tokens such as the class token included).

    Example:
        >>> import torch
        >>> layer = AblationLayerVit()
        >>> tokens = torch.ones(1, 5, 2)  # one image, 5 tokens of 2 channels
        >>> layer.activations_to_be_ablated(tokens[0].T).tolist()  # (C, tokens)
        [0, 1]
        >>> layer.set_next_batch(0, tokens, num_channels_to_ablate=2)
        >>> layer().sum(dim=1)  # copy i has channel i zeroed at every token
        tensor([[0., 5.],
                [5., 0.]])
    """

    channel_dim = -1


class AblationLayerFasterRCNN(AblationLayer):
    """Ablates channels of a feature-pyramid output (an ordered mapping of (B, C_i, H_i, W_i)).

    Channel indices count through the levels in order, as ``fasterrcnn_reshape_transform``
    concatenates them (with 256 channels per level, index 300 is channel 44 of the second level).
    An ablated channel is set to ``ablation_value`` (-1000, as in the original library: the
    pyramid's features are signed, and a moderate value keeps the detection heads finite).

    Example:
        >>> from collections import OrderedDict
        >>> import torch
        >>> pyramid = OrderedDict(a=torch.zeros(1, 2, 4, 4), b=torch.zeros(1, 2, 2, 2))
        >>> layer = AblationLayerFasterRCNN()
        >>> layer.indices = torch.tensor([0, 3])  # channel 0 of "a", channel 1 of "b"
        >>> layer.set_next_batch(0, pyramid, num_channels_to_ablate=2)
        >>> ablated = layer()
        >>> ablated["a"][0, 0, 0, 0].item(), ablated["b"][1, 1, 0, 0].item()
        (-1000.0, -1000.0)
        >>> ablated["a"][1].abs().sum().item()  # copy 1 leaves "a" alone
        0.0
    """

    ablation_value = -1000.0

    def set_next_batch(
        self,
        input_batch_index: int,
        activations: Any,
        num_channels_to_ablate: int,
    ) -> None:
        """Store ``num_channels_to_ablate`` copies of image ``input_batch_index``'s levels."""
        i = input_batch_index
        self.activations = OrderedDict(
            (key, level[i : i + 1].repeat(num_channels_to_ablate, 1, 1, 1))
            for key, level in activations.items()
        )

    def forward(self, x: Any = None) -> Any:
        """The stored copies, copy i with (global) channel ``self.indices[i]`` ablated."""
        levels = list(self.activations.values())
        count = levels[0].shape[0]
        indices = torch.as_tensor(self.indices[:count], device=levels[0].device).long()
        rows = torch.arange(count, device=levels[0].device)
        offset = 0
        for level in levels:
            local = indices - offset
            hit = (local >= 0) & (local < level.shape[1])
            level[rows[hit], local[hit]] = self.ablation_value
            offset += level.shape[1]
        return self.activations

"""Score-CAM."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._checks import check_finite_scores
from pytorch_grad_cam._perturbation import check_batch_size, progress_bar, require_targets
from pytorch_grad_cam._targets import Target, target_scores
from pytorch_grad_cam.base_cam import BaseCAM


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279).

    M_k = normalise(upsample(A_k)) (bilinear, corners aligned; ``(m - min) / (max - min + 1e-8)``),
    s_k = target score of the input masked by M_k,  w = softmax_k(s),  map = ReLU(sum_k w_k A_k).

    The masked inputs are built and scored in batches of ``batch_size`` (across images, so
    memory grows with ``batch_size``, not with the channel count); channels with identical
    activation maps (e.g. the all-zero ones) give the same masked input, scored once.

    Args:
        batch_size: masked inputs per forward pass (attribute, default 16).
        progress: show a tqdm bar on stderr (attribute; ``TQDM_DISABLE=1`` also hides it).
        fast_scoring: on the CPU, feed the masked inputs channels-last (oneDNN's faster
            layout, no copy of the model) when that reproduces the model's scores on the
            input (attribute).

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import ScoreCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> cam = ScoreCAM(model, [model.target_layer], batch_size=64, progress=False)
        >>> cam(torch.rand(1, 3, 64, 64), targets=[1]).shape
        (1, 64, 64)
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        batch_size: int = 16,
        progress: bool = True,
        fast_scoring: bool = True,
        **kwargs: Any,
    ) -> None:
        check_batch_size(batch_size)
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.batch_size = batch_size
        self.progress = progress
        self.fast_scoring = fast_scoring

    @numpy_compatible
    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Target] | None,
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        batch_size = check_batch_size(self.batch_size)
        targets = require_targets("ScoreCAM", targets)
        reference = target_scores(self.outputs, targets).float()
        check_finite_scores(reference, targets, " (the unmasked input)")
        batch, channels = activations.shape[:2]
        # One item per distinct (image, activation map): duplicates share a masked input.
        keyed = torch.cat(
            [
                torch.arange(batch, device=activations.device).repeat_interleave(channels)[:, None],
                activations.reshape(batch * channels, -1),
            ],
            dim=1,
        )
        items, inverse = torch.unique(keyed, dim=0, return_inverse=True)
        images, maps = items[:, 0].long(), items[:, 1:].reshape(-1, 1, *activations.shape[2:])
        image_list = images.tolist()
        scores = torch.empty(len(items), device=activations.device)
        memory_format = self._memory_format(input_tensor, targets, reference)
        # one buffer for every batch of masked inputs (no per-batch allocation to fragment)
        buffer = torch.empty(
            (min(batch_size, len(items)), *input_tensor.shape[1:]),
            dtype=input_tensor.dtype,
            device=input_tensor.device,
            memory_format=memory_format,
        )
        with torch.no_grad():
            for start in progress_bar(self.progress, range(0, len(items), batch_size), "ScoreCAM"):
                stop = min(start + batch_size, len(items))
                masked = masked_inputs(
                    input_tensor, image_list[start:stop], maps[start:stop], buffer[: stop - start]
                )
                outputs = self.model(masked)
                scores[start:stop] = target_scores(
                    outputs, [targets[i] for i in image_list[start:stop]]
                ).float()
                del masked, outputs
        per_channel = scores[inverse].reshape(batch, channels)
        check_finite_scores(per_channel, targets, " masked by the activation map of channel {k}")
        return torch.softmax(per_channel, dim=1)

    def _memory_format(
        self, input_tensor: torch.Tensor, targets: list, reference: torch.Tensor
    ) -> torch.memory_format:
        """Channels-last on the CPU for 4-D inputs when ``fast_scoring`` is on and the model
        gives the same target scores (``reference``) on the input laid out that way; else
        contiguous."""
        plain = torch.contiguous_format
        if not (self.fast_scoring and input_tensor.device.type == "cpu" and input_tensor.ndim == 4):
            return plain
        try:
            with torch.no_grad():
                outputs = self.model(input_tensor.contiguous(memory_format=torch.channels_last))
            scores = target_scores(outputs, targets).float()
        except Exception:  # e.g. a view() that needs contiguous inputs
            return plain
        tolerance = 1e-3 * (float(reference.abs().max()) + 1e-6)
        if torch.allclose(scores, reference, rtol=1e-3, atol=tolerance):
            return torch.channels_last
        return plain


def masked_inputs(
    input_tensor: torch.Tensor, images: list[int], maps: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """``input_tensor[images[i]] * M_i`` written into ``out`` (N, C, *size), for
    low-resolution maps (N, 1, *grid): M_i is map i upsampled to the input size (multilinear,
    corners aligned) and min-max normalised. ``images`` is sorted (runs of one image are
    multiplied by broadcasting, without a gathered copy of the inputs)."""
    mode = "bilinear" if maps.ndim == 4 else "trilinear"
    masks = F.interpolate(maps, size=input_tensor.shape[2:], mode=mode, align_corners=True)
    dims = tuple(range(2, masks.ndim))
    low, high = masks.amin(dim=dims, keepdim=True), masks.amax(dim=dims, keepdim=True)
    masks = masks.sub_(low).div_(high - low + 1e-8).to(input_tensor.dtype)  # fp16 models
    start = 0
    while start < len(images):
        stop = start + 1
        while stop < len(images) and images[stop] == images[start]:
            stop += 1
        image = input_tensor[images[start] : images[start] + 1]
        torch.mul(image, masks[start:stop], out=out[start:stop])
        start = stop
    return out

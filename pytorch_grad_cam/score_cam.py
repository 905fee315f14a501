"""Score-CAM."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from tqdm import tqdm

from pytorch_grad_cam.base_cam import BaseCAM


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279).

    M_k = normalise(upsample(A_k)) (bilinear, corners aligned; ``(m - min) / (max - min + 1e-8)``),
    s_k = target score of the input masked by M_k,  w = softmax_k(s),  map = ReLU(sum_k w_k A_k).

    The masked inputs are scored in batches of ``batch_size`` (across images, so memory grows with
    ``batch_size``, not with the channel count); channels with identical activation maps (e.g. the
    all-zero ones) give the same masked input, which is scored once.

    Args:
        batch_size: masked inputs per forward pass (attribute, default 16).
        progress: show a tqdm bar on stderr (attribute; ``TQDM_DISABLE=1`` also hides it).
        fast_scoring: score the masked inputs with a faster equivalent of the model when one
            reproduces its scores on the input (attribute): a ``torch.fx`` copy with each
            eval-mode BatchNorm folded into the convolution before it, fed channels-last
            batches on the CPU. Scores then match the plain model's to float rounding.
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
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.batch_size = batch_size
        self.progress = progress
        self.fast_scoring = fast_scoring

    def get_cam_weights(
        self, input_tensor, target_layer, targets, activations, grads
    ) -> torch.Tensor:
        batch_size = check_batch_size(self.batch_size)
        targets = check_targets(self, targets)
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
        mode = "bilinear" if activations.ndim == 4 else "trilinear"
        scores = torch.empty(len(items), device=activations.device)
        with torch.no_grad():
            model, memory_format = self._scoring_model(input_tensor, targets)
            for start in progress_bar(self, range(0, len(items), batch_size), "ScoreCAM"):
                stop = min(start + batch_size, len(items))
                up = F.interpolate(
                    maps[start:stop], size=input_tensor.shape[2:], mode=mode, align_corners=True
                )
                dims = tuple(range(2, up.ndim))
                low, high = up.amin(dim=dims, keepdim=True), up.amax(dim=dims, keepdim=True)
                mask = ((up - low) / (high - low + 1e-8)).to(input_tensor.dtype)  # fp16 models
                masked = input_tensor[images[start:stop]] * mask
                outputs = model(masked.contiguous(memory_format=memory_format))
                chunk_targets = [targets[i] for i in image_list[start:stop]]
                scores[start:stop] = self._target_scores(outputs, chunk_targets, stop - start)
        return torch.softmax(scores[inverse].reshape(batch, channels), dim=1)

    def _scoring_model(
        self, input_tensor: torch.Tensor, targets: list
    ) -> tuple[nn.Module, torch.memory_format]:
        """The fastest (model, memory format) that reproduces the model's target scores on the
        input; the plain model (contiguous) when ``fast_scoring`` is off or nothing else does."""
        plain = (self.model, torch.contiguous_format)
        if not self.fast_scoring:
            return plain
        formats = [torch.contiguous_format]
        if input_tensor.device.type == "cpu" and input_tensor.ndim == 4:
            formats.insert(0, torch.channels_last)
        folded = fold_batchnorm(self.model, formats[0])
        candidates = [(m, f) for m in (folded, self.model) if m is not None for f in formats]
        batch = input_tensor.shape[0]
        reference = self._target_scores(self.outputs, targets, batch).float()
        tolerance = 1e-3 * (float(reference.abs().max()) + 1e-6)
        for model, memory_format in candidates:
            if (model, memory_format) == plain:
                break
            try:
                outputs = model(input_tensor.contiguous(memory_format=memory_format))
                scores = self._target_scores(outputs, targets, batch).float()
            except Exception:  # e.g. a view() that needs contiguous inputs
                continue
            if torch.allclose(scores, reference, rtol=1e-3, atol=tolerance):
                return model, memory_format
        return plain


# ----------------------------------------------------------------- helpers of the perturbation CAMs
def check_batch_size(batch_size: Any) -> int:
    """The ``batch_size`` attribute as a positive int, or a clear error."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    return int(batch_size)


def check_targets(cam: BaseCAM, targets: list | None) -> list:
    """The per-image targets; an error if there are none (the top class could not be read)."""
    if targets is None:
        raise ValueError(
            f"{type(cam).__name__} scores perturbed inputs with the targets, but targets=None and "
            "the model output is not (B, num_classes) logits whose top class could be used; pass "
            "targets=[...] that read this model's output"
        )
    return list(targets)


def progress_bar(cam: Any, iterable: Iterable, desc: str) -> Iterator:
    """A tqdm bar (stderr) over the perturbation batches.

    Hidden when ``cam.progress`` is False or the environment variable ``TQDM_DISABLE`` is set
    to anything but ``""``, ``"0"``, ``"false"`` or ``"no"`` (read at every call).
    """
    env = os.environ.get("TQDM_DISABLE", "").strip().lower()
    disable = not getattr(cam, "progress", True) or env not in ("", "0", "false", "no")
    return iter(tqdm(iterable, desc=desc, disable=disable, file=sys.stderr))


def fold_batchnorm(
    model: nn.Module, memory_format: torch.memory_format = torch.contiguous_format
) -> fx.GraphModule | None:
    """A ``torch.fx`` copy of ``model`` in which every eval-mode BatchNorm applied directly (and
    only) to a convolution's output is folded into a new convolution, whose 4-D weight is stored
    in ``memory_format`` (channels-last spares the CPU kernels a weight reorder per call on
    channels-last inputs). The model is untouched (the copy shares its other modules). None if
    the model does not trace or nothing folds."""
    try:
        traced = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow, unsupported ops, ...
        return None
    modules = dict(traced.named_modules())
    folded = 0
    for node in list(traced.graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if node.args else None
        if (
            not isinstance(norm, nn.modules.batchnorm._BatchNorm)
            or norm.training
            or norm.running_mean is None
            or len(node.args) != 1
            or not isinstance(source, fx.Node)
            or source.op != "call_module"
            or len(source.users) != 1
        ):
            continue
        conv = modules.get(source.target)
        if not isinstance(conv, nn.modules.conv._ConvNd) or conv.transposed or conv.training:
            continue
        name = f"folded_conv_{folded}"
        fused = fuse_conv_bn_eval(conv, norm)
        if fused.weight.ndim == 4:
            fused.weight.data = fused.weight.data.contiguous(memory_format=memory_format)
        traced.add_submodule(name, fused)
        source.target = name
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
        folded += 1
    if not folded:
        return None
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced

"""Ablation-CAM."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from numbers import Real
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._arrays import numpy_compatible
from pytorch_grad_cam._checks import check_finite_scores
from pytorch_grad_cam._forward_pass import ForwardPass
from pytorch_grad_cam._perturbation import check_batch_size, progress_bar, require_targets
from pytorch_grad_cam._targets import Target, target_scores
from pytorch_grad_cam.ablation_layer import AblationLayer, check_channel_axis
from pytorch_grad_cam.base_cam import BaseCAM

# names grad-cam 1.5.7 also exposes from this module
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive as replace_layer_recursive

# How the ablated copies of one image run through the model, cheapest first. At the target
# layer a forward hook replaces the layer's output by the batch of ablated copies; the input is
# "split": an empty batch (the layers before the target do no work), "broadcast": the image
# once (values from before the target broadcast over the copies), "full": the image repeated
# per copy (always valid: a full forward pass per copy, as grad-cam does).
PATHS = ("split", "broadcast", "full")


class AblationCAM(BaseCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020).

    w_k = (y - y_k) / y, with y the target score and y_k the score when channel k of the target
    layer's output is ablated (see ``AblationLayer``);  map = ReLU(sum_k w_k A_k).
    (When y = 0 the weights are y - y_k: only their sign and ratios matter to the map.)

    The layers before the target layer give the same result for every ablation, so they are
    not run per ablated copy when that can be avoided: each call checks, on two ablations of
    one image, which of the paths in ``PATHS`` reproduces the scores of full forward passes,
    and uses the cheapest one (``last_path`` tells which). No tracing of the model is
    involved: only a forward hook on the target layer, for the duration of the call.

    Args:
        ablation_layer: builds the ablated batches (default ``AblationLayer()``; use
            ``AblationLayerVit()`` for channels-last token layouts).
        batch_size: ablated copies per forward pass (attribute).
        ratio_channels_to_ablate: below 1, only the channels chosen by
            ``ablation_layer.activations_to_be_ablated`` are ablated; the others get weight 0.
        progress: show a tqdm bar on stderr (attribute; ``TQDM_DISABLE=1`` also hides it).
        split_model: try the cheaper paths (attribute); False always runs full passes.

    Example:
        >>> import torch
        >>> from pytorch_grad_cam import AblationCAM
        >>> from pytorch_grad_cam.demo import load_demo_model
        >>> model = load_demo_model()
        >>> cam = AblationCAM(model, [model.target_layer], progress=False)
        >>> cam(torch.rand(1, 3, 64, 64), targets=[0]).shape
        (1, 64, 64)
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        ablation_layer: AblationLayer | None = None,
        batch_size: int = 32,
        ratio_channels_to_ablate: float = 1.0,
        *,
        progress: bool = True,
        split_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(ablation_layer, type):
            name = ablation_layer.__name__
            raise TypeError(f"ablation_layer must be an instance such as {name}(), not the class")
        if ablation_layer is not None and not (
            callable(ablation_layer)
            and all(
                callable(getattr(ablation_layer, name, None))
                for name in ("activations_to_be_ablated", "set_next_batch")
            )
        ):
            raise TypeError(
                "ablation_layer must be an AblationLayer such as AblationLayer() or "
                f"AblationLayerVit() (or have its methods); got {type(ablation_layer).__name__}"
            )
        check_batch_size(batch_size)
        check_ratio(ratio_channels_to_ablate)
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.ablation_layer = AblationLayer() if ablation_layer is None else ablation_layer
        self.batch_size = batch_size
        self.ratio_channels_to_ablate = ratio_channels_to_ablate
        self.progress = progress
        self.split_model = split_model
        self.last_path: str | None = None

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
        targets = require_targets("AblationCAM", targets)
        channels = activations.shape[1]
        device = activations.device
        index = next(i for i, m in enumerate(self.target_layers) if m is target_layer)
        target_layer_name = f"target_layers[{index}]"
        captures = _forward_pass(self).captures_of(index)
        raw = captures[-1].output()  # the explained call of the layer, as it returned it
        layer = self.ablation_layer
        check_channel_axis(layer, raw, channels, target_layer_name)
        with torch.no_grad():
            # (on the device even if a target returns Python numbers)
            original = target_scores(self.outputs, targets).float().to(device)
            check_finite_scores(original, targets, " (nothing ablated)")
            plans = self.ablation_plans(activations)
            ablated = original[:, None].repeat(1, channels)
            try:
                with _replaced_output(target_layer, len(captures) - 1, layer) as replace:
                    run = self._ablated_run(input_tensor, raw, plans, targets, replace)
                    chunks = [
                        (b, start, min(start + batch_size, len(plan)))
                        for b, plan in enumerate(plans)
                        for start in range(0, len(plan), batch_size)
                    ]
                    for b, start, stop in progress_bar(self.progress, chunks, "AblationCAM"):
                        scores = run(b, plans[b][start:], stop - start)
                        ablated[b, plans[b][start:stop].to(device)] = scores.to(ablated)
            finally:
                layer.activations = None  # free the batch of copies of the layer output
        check_finite_scores(ablated, targets, f" with channel {{k}} of {target_layer_name} ablated")
        return ablation_weights(original, ablated)

    def ablation_plans(self, activations: torch.Tensor) -> list[torch.Tensor]:
        """The channels to ablate in each image of (B, C, *spatial) ``activations``
        (``ablation_layer.activations_to_be_ablated`` with ``ratio_channels_to_ablate``)."""
        ratio = check_ratio(self.ratio_channels_to_ablate)
        layer = self.ablation_layer
        return [
            torch.as_tensor(layer.activations_to_be_ablated(image, ratio)).long()
            for image in activations
        ]

    def _ablated_run(
        self,
        input_tensor: torch.Tensor,
        raw: Any,
        plans: list[torch.Tensor],
        targets: list,
        replace: Callable[[Callable[[], Any]], Any],
    ) -> Callable[[int, torch.Tensor, int], torch.Tensor]:
        """``run(b, indices, n)``: target scores of image ``b`` with each of the first ``n``
        channels in ``indices`` ablated, on the cheapest path that passes the check."""
        layer = self.ablation_layer

        def runner(path: str) -> Callable[[int, torch.Tensor, int], torch.Tensor]:
            def run(b: int, indices: torch.Tensor, n: int) -> torch.Tensor:
                layer.indices = indices
                layer.set_next_batch(input_batch_index=b, activations=raw, num_channels_to_ablate=n)
                image = input_tensor[b : b + 1]
                model_input = {"split": image[:0], "broadcast": image}.get(path)
                if model_input is None:
                    model_input = image.repeat(n, *[1] * (image.ndim - 1))
                outputs = replace(lambda: self.model(model_input))
                return target_scores(outputs, [targets[b]] * n).float()

            return run

        full = runner("full")
        self.last_path = "full"
        probe = next((b for b, plan in enumerate(plans) if len(plan)), None)
        if not self.split_model or probe is None:
            return full
        n = min(2, len(plans[probe]))
        reference = full(probe, plans[probe], n)
        if not bool(torch.isfinite(reference).all()):  # raise now, not after every pass
            scores = reference.new_zeros(len(plans), int(plans[probe].max()) + 1)
            scores[probe, plans[probe][:n].to(scores.device)] = reference
            check_finite_scores(scores, targets, " with channel {k} ablated")
        tolerance = 1e-3 * (float(reference.abs().max()) + 1e-6)
        for path in PATHS[:-1]:
            run = runner(path)
            try:
                scores = run(probe, plans[probe], n)
            except Exception:  # e.g. an empty batch or a broadcast the model does not allow
                continue
            if scores.shape == reference.shape and torch.allclose(
                scores, reference, rtol=1e-3, atol=tolerance
            ):
                self.last_path = path
                return run
        return full


def _forward_pass(cam: BaseCAM) -> ForwardPass:
    """The CAM's current forward pass (the weighting step runs inside one)."""
    if cam.state is None:
        raise RuntimeError("get_cam_weights runs inside a CAM call, after its forward pass")
    return cam.state


def ablation_weights(original: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """(B, C) weights (y - y_k) / y from the (B,) scores y and the (B, C) ablated scores y_k
    (y - y_k where y = 0)."""
    denominator = torch.where(original == 0, torch.ones_like(original), original)[:, None]
    return (original[:, None] - ablated) / denominator


@contextmanager
def _replaced_output(
    target_layer: nn.Module, call: int, ablation_layer: nn.Module
) -> Iterator[Callable[[Callable[[], Any]], Any]]:
    """Yield ``replace(forward)``: runs ``forward()`` with the output of ``target_layer``'s
    call number ``call`` (counting from 0) replaced by ``ablation_layer(layer input)``; the
    hook acts in this thread only and is removed at the end of the block."""
    thread = threading.get_ident()
    calls = [0]

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if threading.get_ident() != thread:
            return None
        calls[0] += 1
        if calls[0] - 1 != call:
            return None
        return ablation_layer(args[0] if args else None)

    def replace(forward: Callable[[], Any]) -> Any:
        calls[0] = 0
        return forward()

    handle = target_layer.register_forward_hook(hook)
    try:
        yield replace
    finally:
        handle.remove()


def check_ratio(ratio: Any) -> float:
    """``ratio_channels_to_ablate`` as a float in (0, 1], or a clear error."""
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0 < float(ratio) <= 1:
        raise ValueError(f"ratio_channels_to_ablate must be a number in (0, 1]; got {ratio!r}")
    return float(ratio)

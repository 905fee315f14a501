"""The checks of a CAM call on tensor values: NaN/Inf in layer outputs, scores, gradients and
maps (errors), zero gradients, one-position layers and vanishing maps (warnings). Each check
costs one host synchronisation per stage; messages name the layer and the images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._arrays import defined_outside_package
from pytorch_grad_cam._checks import (
    DIM_PEAK,
    DIM_RANGE,
    check_finite_scores,
    describe_images,
    per_image,
    warn,
)
from pytorch_grad_cam._forward_pass import ForwardPass
from pytorch_grad_cam.utils.find_layers import suggested_target_layer


def layer_name(cam: Any, index: int) -> str:
    """'target_layers[i] (Type 'its.name.in.the.model')' for messages."""
    layer = cam.target_layers[index]
    name = next((n for n, m in cam.model.named_modules() if m is layer), "")
    return f"target_layers[{index}] ({type(layer).__name__}" + (f" '{name}')" if name else ")")


def check_forward(
    cam: Any, state: ForwardPass, scores: torch.Tensor | None = None, targets: Any = None
) -> None:
    """NaN/Inf in the explained layer outputs (and the target scores), with one host
    sync, before the expensive stages."""
    explained = {c.layer: c for c in state.captures}  # the last call of each layer
    tensors = [
        (i, t) for i, c in sorted(explained.items()) for t in c.graph if t.is_floating_point()
    ]
    flags = [torch.isfinite(t.detach()).all() for _, t in tensors]
    if scores is not None:
        flags.append(torch.isfinite(scores.detach()).all())
    if not flags or bool(torch.stack([f.to(flags[0].device) for f in flags]).all()):
        return
    batch = len(state.input_tensor)
    for i, t in tensors:
        if not bool(torch.isfinite(t.detach()).all()):
            where = (
                f" for {describe_images((~per_image('finite', t)).tolist())}"
                if t.ndim and t.shape[0] == batch
                else ""
            )
            raise RuntimeError(
                f"the output of {layer_name(cam, i)} contains NaN or Inf{where}, although "
                "the input is finite: the model overflows or divides by zero before this "
                "layer (e.g. in float16), and a map of it would mean nothing"
            )
    if scores is not None:
        check_finite_scores(scores, targets)


def check_maps(cam: Any, state: ForwardPass, maps: torch.Tensor) -> None:
    """After stage 5, with one host sync: raise for NaN/Inf gradients or maps; warn for
    images whose gradient is zero at a layer, and for degenerate (vanishing) maps."""
    health = state.health
    if health is None:
        return
    if maps.ndim > 1 and len(maps) == health.batch:
        health.add("output finite", -1, per_image("finite", maps))
        health.add("output peak", -1, per_image("peak", maps))
    flags = health.read()
    for (kind, i), values in flags.items():
        if "finite" not in kind or all(values):
            continue
        images = describe_images([not v for v in values])
        if kind == "output finite":
            raise RuntimeError(
                f"the maps are NaN or Inf for {images} although every layer's map is "
                "finite: aggregate_multi_layers produced them"
            )
        what = "gradient at" if kind == "gradient finite" else "map of"
        cause = (
            "the backward pass overflows (e.g. in float16)"
            if kind == "gradient finite"
            else "the weighting step (get_cam_weights / get_cam_image) produced them"
        )
        raise RuntimeError(f"the {what} {layer_name(cam, i)} is NaN or Inf for {images}: {cause}")
    for i in range(len(cam.target_layers)):
        reached = flags.get(("gradient", i), flags.get(("raw gradient", i)))
        if cam.require_every_layer and reached is not None and not all(reached):
            warn_zero_gradient(cam, i, [not r for r in reached], flags.get(("raw gradient", i)))
    check_vanishing(cam, flags)


def warn_zero_gradient(cam: Any, index: int, zero: list[bool], raw: list[float] | None) -> None:
    images = describe_images(zero)
    name = layer_name(cam, index)
    if raw is None or not any(r for r, z in zip(raw, zero) if z):
        head = zero_weight_head(cam.model)
        cause = (
            f"here the model's last linear layer '{head}' has all-zero weights: an untrained "
            "head (torchvision's ViT initialises its head to zero); load trained weights"
            if head
            else "e.g. an untrained classifier head with all-zero weights (torchvision's ViT "
            "starts so), a saturated target (a softmax probability of 1: explain the logit "
            "with ClassifierOutputTarget), or a ReLU after the layer that is off everywhere"
        )
        warn(
            f"the gradient of the targets at {name} is exactly zero for {images}, so the map "
            "is empty: the target scores do not change with this layer's output, there is "
            f"nothing to explain; {cause}"
        )
        return
    hint = suggested_target_layer(cam.model)
    pick = (
        f"this model's layer model.{hint}"
        if hint
        else "an earlier layer (for a ViT the input of the last block's attention: "
        "blocks[-1].norm1 in timm, encoder.layers[-1].ln_1 in torchvision)"
    )
    warn(
        f"the gradient of the targets reaches {name} only in parts of its output that the "
        "map does not use (e.g. the class token of a ViT's last block, the only token its "
        f"head reads, which reshape_transform drops), so the map is empty for {images}; "
        f"pick {pick}"
    )


def check_vanishing(cam: Any, flags: dict[tuple[str, int], list[float]]) -> None:
    """Warn for maps whose raw values are too small for min-max normalisation (which
    divides by range + 1e-7): returned maps peaking below DIM_PEAK, or, with several
    target layers, per-layer maps that weigh next to nothing in their mean."""
    ranges = {i: flags[kind, i] for kind, i in flags if kind == "map range"}
    peaks = flags.get(("output peak", -1))
    if peaks is not None and not defined_outside_package(cam, "aggregate_multi_layers"):
        dim = [0 < p < DIM_PEAK for p in peaks]
        if any(dim):
            spans = [r for values in ranges.values() for r, d in zip(values, dim) if d]
            span = f" (span {min(spans):.2g})" if spans else ""
            scale = activation_scale(cam)
            cause = (
                "the layer's activations are themselves tiny (an untrained or badly scaled model?)"
                if 0 < scale < 1e-3
                else "the target's gradient is vanishing, e.g. a softmax probability on a "
                "confident prediction: explain the logit (ClassifierOutputTarget) instead"
            )
            warn(
                f"the maps of {describe_images(dim)} peak at {min(p for p in peaks if p):.2g} "
                f"instead of 1: their raw values{span} are tiny next to the +1e-7 of min-max "
                f"normalisation, while the activations reach {scale:.2g}; {cause}"
            )
            return
    if len(cam.target_layers) < 2 or _scales_its_own_way(cam):
        return
    for i, values in ranges.items():
        dim = [0 < r < DIM_RANGE for r in values]
        if any(dim):
            low = min(r for r, d in zip(values, dim) if d)
            warn(
                f"the map of {layer_name(cam, i)} is degenerate for {describe_images(dim)}: "
                f"its raw values span only {low:.2g} (its activations reach "
                f"{activation_scale(cam, i):.2g}), so after "
                f"min-max normalisation (+1e-7) it peaks at {low / (low + 1e-7):.2g} "
                "instead of 1 and weighs next to nothing in the mean over the target layers; "
                "the target's gradient at this layer is vanishing"
            )


def activation_scale(cam: Any, index: int | None = None) -> float:
    """The largest |activation| of the explained calls of layer ``index`` (or all)."""
    if cam.state is None:
        return 0.0
    values = [
        float(t.detach().abs().max())
        for c in cam.state.captures
        if index is None or c.layer == index
        for t in c.recording
        if t.is_floating_point() and t.numel()
    ]
    return max(values, default=0.0)


def warn_single_position(cam: Any, index: int, activations: torch.Tensor) -> None:
    hint = suggested_target_layer(cam.model)
    warn(
        f"{layer_name(cam, index)} gives one position per map (activations of shape "
        f"{tuple(activations.shape)}): a 1x1 map says nothing about where, and after "
        "min-max normalisation it is all zero; pick an earlier layer with a spatial layout"
        + (f", e.g. model.{hint}" if hint else " (e.g. the last convolutional block)")
    )


def zero_weight_head(model: nn.Module) -> str | None:
    """The name of the model's last Linear layer if its weights are all zero."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears and not bool(linears[-1][1].weight.detach().any()):
        return linears[-1][0]
    return None


def reached_images(
    grads: Sequence[torch.Tensor | None], batch: int, device: torch.device
) -> torch.Tensor:
    """(B,) whether any of a layer output's gradients is non-zero for each image (a tensor
    without a batch axis counts for every image)."""
    reached = torch.zeros(batch, dtype=torch.bool, device=device)
    for g in grads:
        if g is not None:
            hit = per_image("nonzero", g) if g.ndim and len(g) == batch else g.ne(0).any()
            reached = reached | hit.to(device)
    return reached


def _scales_its_own_way(cam: Any) -> bool:
    """Whether the method replaces BaseCAM's per-layer min-max scaling (FullGrad)."""
    owner = next(c for c in type(cam).__mro__ if "scale_layer_cam" in vars(c))
    return owner.__name__ != "BaseCAM"

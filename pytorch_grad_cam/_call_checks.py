"""The checks of one CAM call: errors for NaN/Inf, warnings for maps that cannot be trusted.

BaseCAM calls ``check_forward`` after the forward pass (one host sync) and ``check_maps``
after the maps are aggregated (one host sync over the per-layer flags it gathered in the
pass's ``CallHealth``). The numerics are never changed: a degenerate map is returned as
computed, with a ``RuntimeWarning`` saying why it is degenerate and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pytorch_grad_cam._checks import (
    DIM_PEAK,
    DIM_RANGE,
    NORMALISATION_EPS,
    CallHealth,
    all_finite,
    check_finite_scores,
    describe_images,
    per_image,
    warn,
)
from pytorch_grad_cam._forward_pass import ForwardPass
from pytorch_grad_cam.utils.find_layers import suggested_target_layer

Flags = dict[tuple[str, int], list[float]]


def layer_name(cam: Any, index: int) -> str:
    """ "target_layers[i] (Type 'its.name.in.the.model')", for messages."""
    layer = cam.target_layers[index]
    name = next((n for n, m in cam.model.named_modules() if m is layer), "")
    return f"target_layers[{index}] ({type(layer).__name__}" + (f" '{name}')" if name else ")")


def warn_repeated_calls(cam: Any, state: ForwardPass) -> None:
    """A warning for each target layer that ran more than once in the pass."""
    for i in range(len(cam.target_layers)):
        calls = len(state.captures_of(i))
        if calls > 1:
            warn(
                f"{layer_name(cam, i)} ran {calls} times in one forward pass (a module used "
                f"more than once); {type(cam).__name__} explains its last call only, and "
                "leaves the earlier calls as they ran"
            )


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


def check_forward(
    cam: Any, state: ForwardPass, scores: torch.Tensor | None = None, targets: Any = None
) -> None:
    """NaN/Inf in the explained layer outputs (and the target scores): one host sync, before
    the expensive stages."""
    explained = {c.layer: c for c in state.captures}  # the last call of each layer
    tensors = [
        (i, t) for i, c in sorted(explained.items()) for t in c.graph if t.is_floating_point()
    ]
    flags = [all_finite(t) for _, t in tensors]
    if scores is not None:
        flags.append(all_finite(scores))
    if not flags or bool(torch.stack([f.to(flags[0].device) for f in flags]).all()):
        return
    batch = len(state.input_tensor)
    describe = state.health.describe if state.health is not None else describe_images
    for i, t in tensors:
        if not bool(all_finite(t)):
            where = (
                f" for {describe((~per_image('finite', t)).tolist())}"
                if t.ndim and t.shape[0] == batch
                else ""
            )
            raise RuntimeError(
                f"the output of {layer_name(cam, i)} contains NaN or Inf{where}, although the "
                "input is finite: the model overflows or divides by zero before this layer "
                "(e.g. in float16), and a map of it would mean nothing"
            )
    if scores is not None:
        check_finite_scores(scores, targets)


def check_maps(
    cam: Any,
    state: ForwardPass,
    maps: torch.Tensor,
    *,
    normalised_layers: bool,
    normalised_output: bool,
) -> None:
    """After stage 5, with one host sync: raise for NaN/Inf gradients or maps; warn for
    images whose gradient is zero at a layer, and for degenerate (vanishing or all-zero) maps.

    ``normalised_layers`` / ``normalised_output``: the per-layer maps / the returned maps are
    min-max normalised (the package's ``scale_layer_cam`` / ``aggregate_multi_layers``), so a
    peak below 1 means the raw map was too small to normalise.
    """
    health = state.health
    if health is None:
        return
    if maps.ndim > 1 and len(maps) == health.batch:
        health.add_finite("output finite", -1, maps)
        health.add("output peak", -1, per_image("peak", maps))
    flags = health.read()
    _raise_non_finite(cam, health, flags)
    # per layer, the images whose empty map a warning has explained already (a 1x1 layer:
    # every image; a zero gradient: those images)
    layers = range(len(cam.target_layers))
    explained = {i: [("single position", i) in flags] * health.batch for i in layers}
    if cam.require_every_layer:
        for i in layers:
            reached = flags.get(("gradient", i), flags.get(("raw gradient", i)))
            if reached is not None and not all(reached):
                zero = [not r for r in reached]
                _warn_zero_gradient(cam, health, i, zero, flags.get(("raw gradient", i)))
                explained[i] = [e or z for e, z in zip(explained[i], zero)]
    told = [all(explained[i][b] for i in layers) for b in range(health.batch)]
    dim_output = normalised_output and _warn_dim_output(state, flags, told)
    if not dim_output and normalised_layers:
        _warn_vanishing_layers(cam, state, flags)


def warn_single_position(cam: Any, index: int, activations: torch.Tensor) -> None:
    """Warn that the layer's maps are 1x1 (so all zero once normalised); noted in the call's
    health, so that the all-zero maps are not reported again."""
    state = getattr(cam, "state", None)
    if state is not None and state.health is not None:
        state.health.add("single position", index, torch.ones(()))
    hint = suggested_target_layer(cam.model)
    warn(
        f"{layer_name(cam, index)} gives one position per map (activations of shape "
        f"{tuple(activations.shape)}): a 1x1 map says nothing about where, and after min-max "
        "normalisation it is all zero; pick an earlier layer with a spatial layout"
        + (f", e.g. model.{hint}" if hint else " (e.g. the last convolutional block)")
    )


# --------------------------------------------------------------------- the parts
def _raise_non_finite(cam: Any, health: CallHealth, flags: Flags) -> None:
    for (kind, i), values in flags.items():
        if "finite" not in kind or all(values):
            continue
        images = health.describe(health.non_finite_images(kind, i))
        if kind == "output finite":
            raise RuntimeError(
                f"the maps are NaN or Inf for {images} although every layer's map is finite: "
                "aggregate_multi_layers produced them"
            )
        if kind == "gradient finite":
            raise RuntimeError(
                f"the gradient at {layer_name(cam, i)} is NaN or Inf for {images}: the backward "
                "pass overflows (e.g. in float16)"
            )
        raise RuntimeError(
            f"the map of {layer_name(cam, i)} is NaN or Inf for {images}: the weighting step "
            "(get_cam_weights / get_cam_image) produced them"
        )


def _warn_zero_gradient(
    cam: Any, health: CallHealth, index: int, zero: list[bool], raw: list[float] | None
) -> None:
    images = health.describe(zero)
    name = layer_name(cam, index)
    if raw is None or not any(r for r, z in zip(raw, zero) if z):  # nothing reaches the layer
        head = _zero_weight_head(cam.model)
        cause = (
            f"here the model's last linear layer '{head}' has all-zero weights: an untrained "
            "head (torchvision's ViT initialises its head to zero); load trained weights"
            if head
            else "e.g. an untrained classifier head with all-zero weights (torchvision's ViT "
            "starts so), a saturated target (a softmax probability of 1: explain the logit "
            "with ClassifierOutputTarget), or a ReLU after the layer that is off everywhere"
        )
        warn(
            f"the gradient of the targets at {name} is exactly zero for {images}, so the map is "
            "empty: the target scores do not change with this layer's output, there is nothing "
            f"to explain; {cause}"
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
        f"the gradient of the targets reaches {name} only in parts of its output that the map "
        "does not use (e.g. the class token of a ViT's last block, the only token its head "
        f"reads, which reshape_transform drops), so the map is empty for {images}; pick {pick}"
    )


def _warn_dim_output(state: ForwardPass, flags: Flags, told: list[bool]) -> bool:
    """Warn (and return True) if returned maps peak below DIM_PEAK: their raw values are
    too small for min-max normalisation, which divides by range + 1e-7; or at 0, all-zero
    maps (except those of the ``told`` images, which a warning has explained already)."""
    peaks = flags.get(("output peak", -1))
    if peaks is None:
        return False
    describe = state.health.describe if state.health is not None else describe_images
    zero = [p == 0 and not t for p, t in zip(peaks, told)]
    if any(zero):
        cause = (
            "the layer's activations are all zero (a ReLU off everywhere, or an all-zero "
            "input to layers without bias)"
            if _activation_scale(state) == 0
            else "e.g. a saturated target (a softmax probability of 1 on a confident "
            "prediction: explain the logit with ClassifierOutputTarget), a target that this "
            "layer does not change, or a map negative everywhere before its ReLU"
        )
        warn(
            f"the maps of {describe(zero)} are all zero: their raw maps are flat (constant "
            f"after the ReLU), there is nothing to explain; {cause}"
        )
    dim = [0 < p < DIM_PEAK for p in peaks]
    if not any(dim):
        return False
    scale = _activation_scale(state)
    spans = [r for (kind, _), values in flags.items() if kind == "map range"
             for r, d in zip(values, dim) if d]  # fmt: skip
    span = f" (span {min(spans):.2g})" if spans else ""
    cause = (
        "the layer's activations are themselves tiny (an untrained or badly scaled model?)"
        if 0 < scale < 1e-3
        else "the target's gradient is vanishing, e.g. a softmax probability on a confident "
        "prediction: explain the logit (ClassifierOutputTarget) instead"
    )
    warn(
        f"the maps of {describe(dim)} peak at {min(p for p in peaks if p):.2g} instead "
        f"of 1: their raw values{span} are tiny next to the +1e-7 of min-max "
        f"normalisation, while the activations reach {scale:.2g}; {cause}"
    )
    return True


def _warn_vanishing_layers(cam: Any, state: ForwardPass, flags: Flags) -> None:
    """With several target layers: warn for a layer whose normalised map peaks below
    DIM_PEAK, so that it weighs next to nothing in the mean over the layers."""
    if len(cam.target_layers) < 2:
        return
    for (kind, i), values in flags.items():
        dim = [0 < r < DIM_RANGE for r in values]
        if kind != "map range" or not any(dim):
            continue
        low = min(r for r, d in zip(values, dim) if d)
        images = state.health.describe(dim) if state.health is not None else describe_images(dim)
        warn(
            f"the map of {layer_name(cam, i)} is degenerate for {images}: its raw "
            f"values span only {low:.2g} (its activations reach {_activation_scale(state, i):.2g}"
            f"), so after min-max normalisation (+1e-7) it peaks at "
            f"{low / (low + NORMALISATION_EPS):.2g} instead of 1 and weighs next to nothing in "
            "the mean over the target layers; the target's gradient at this layer is vanishing"
        )


def _activation_scale(state: ForwardPass, index: int | None = None) -> float:
    """The largest |activation| of the recorded calls of layer ``index`` (or of all)."""
    values = [
        float(t.detach().abs().max())
        for c in state.captures
        if index is None or c.layer == index
        for t in c.recording
        if t.is_floating_point() and t.numel()
    ]
    return max(values, default=0.0)


def _zero_weight_head(model: nn.Module) -> str | None:
    """The name of the model's last Linear layer if its weights are all zero."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears and not bool(linears[-1][1].weight.detach().any()):
        return linears[-1][0]
    return None

"""Validation shared by the methods, targets, utilities and metrics.

Bad arguments get a ``TypeError``/``ValueError`` naming the argument and what was expected,
raised before the model runs where possible. Checks on tensor values (NaN, zero gradients,
degenerate maps) are gathered per stage and read with one host synchronisation.
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam._model_state import model_device

PACKAGE = __name__.split(".")[0]
# ``scale_cam_image`` divides by (range + NORMALISATION_EPS): a raw map whose range is below
# DIM_RANGE comes out peaking below DIM_PEAK instead of at 1.
NORMALISATION_EPS = 1e-7
DIM_PEAK = 0.99
DIM_RANGE = NORMALISATION_EPS * DIM_PEAK / (1 - DIM_PEAK)
_MAX_LISTED = 8
# The caller's number of images while a call runs several views of them as one batch
# (aug_smooth stacks view v of image i at v * images + i).
_CALLER_IMAGES: ContextVar[int | None] = ContextVar("caller_images", default=None)
_WARNING_SINK: ContextVar[list[tuple[str, type[Warning]]] | None] = ContextVar(
    "warning_sink", default=None
)


# --------------------------------------------------------------------- arguments
def class_index(value: Any, name: str) -> int:
    """``value`` as a class index: a Python, numpy or 0-dim torch integer. Floats are rejected
    (a truncated 2.7 would silently explain class 2)."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        is_integer = (
            not (value.is_floating_point() or value.is_complex())
            if isinstance(value, torch.Tensor)
            else np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_
        )
        if is_integer:
            return int(value.item())
        value = value.item()
    if isinstance(value, (Integral, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        raise TypeError(
            f"{name} must be an integer class index; got the float {value!r} (class indices "
            "are not rounded: pass int(k) if a whole number is meant)"
        )
    raise TypeError(f"{name} must be an integer class index; got {type(value).__name__}")


def describe_images(bad: Iterable[bool]) -> str:
    """'image 3' / 'images 0, 2 and 5' for the True entries of a per-image flag list."""
    flags = list(bad)
    indices = [i for i, b in enumerate(flags) if b]
    shown = indices if _WARNING_SINK.get() is not None else indices[:_MAX_LISTED]
    listed = ", ".join(str(i) for i in shown)  # (all of them for a method collecting them)
    if len(shown) < len(indices):
        listed += f", ... ({len(indices)} of {len(flags)})"
    return f"image {listed}" if len(indices) == 1 else f"images {listed}"


def model_floating_dtype(model: nn.Module) -> torch.dtype | None:
    """Dtype of the model's first floating parameter (or buffer); None if it has none."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def checked_batch(
    input_tensor: Any,
    model: nn.Module,
    name: str = "input_tensor",
    ndims: Sequence[int] = (4, 5),
) -> torch.Tensor:
    """The input batch, checked and ready for ``model``: a floating tensor of ``ndims``
    dimensions, cast to the model's floating dtype and moved to its device, without NaN/Inf.

    Integer images (e.g. ``torchvision.io``'s uint8) are rejected: the model needs them
    converted and normalised as it was trained.
    """
    if not isinstance(input_tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(input_tensor).__name__}")
    if input_tensor.ndim not in ndims:
        shapes = " or ".join(("(B, C, H, W)", "(B, C, D, H, W)")[n - 4] for n in ndims)
        hint = (
            " (add a batch dimension: input_tensor.unsqueeze(0))" if input_tensor.ndim == 3 else ""
        )
        raise ValueError(
            f"{name} must be a batch of shape {shapes}; got shape {tuple(input_tensor.shape)}{hint}"
        )
    if not input_tensor.is_floating_point():
        raise TypeError(
            f"{name} has dtype {input_tensor.dtype}; the model needs a floating-point batch, "
            "normalised as in its training: convert and normalise it first, e.g. "
            "(x.float() / 255 - mean) / std (preprocess_image does this for an HxWx3 image)"
        )
    device = model_device(model)
    if input_tensor.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds shapes but no values")
    if device.type == "meta":
        raise ValueError(
            "the model is on the meta device, which holds shapes but no values: materialise "
            "it first (model.to_empty(device=...), then load its weights)"
        )
    if input_tensor.is_inference():
        input_tensor = input_tensor.clone()
    dtype = model_floating_dtype(model) or input_tensor.dtype
    input_tensor = input_tensor.to(device=device, dtype=dtype)
    if input_tensor.numel() and not bool(all_finite(input_tensor)):
        bad = (~torch.isfinite(input_tensor)).flatten(1).any(dim=1).tolist()
        raise ValueError(
            f"{name} contains NaN or Inf values ({describe_images(bad)}); a map of such an "
            "input means nothing: check how the batch was made"
        )
    return input_tensor


def check_not_scripted(model: nn.Module, layers: Sequence[nn.Module] = ()) -> None:
    """A TypeError for a TorchScript model, or target layers inside a TorchScript module:
    module hooks do not run there, so nothing could be recorded."""
    scripted = torch.jit.ScriptModule
    if isinstance(model, scripted):
        raise TypeError(
            f"model is a TorchScript module ({type(model).__name__}, from torch.jit.trace or "
            "torch.jit.script), which is not supported: its layers' forward hooks do not run, "
            "so the CAM cannot record them. Pass the original nn.Module"
        )
    wanted = {id(layer): i for i, layer in enumerate(layers)}
    for owner in model.modules():
        if not isinstance(owner, scripted):
            continue
        for module in owner.modules():
            if id(module) in wanted:
                raise TypeError(
                    f"target_layers[{wanted[id(module)]}] is inside a TorchScript module "
                    f"({type(owner).__name__}), which is not supported: forward hooks do not "
                    "run in TorchScript code. Use the original nn.Module for that part"
                )


def check_finite_scores(scores: torch.Tensor, targets: Sequence[Any], context: str = "") -> None:
    """A ValueError naming ``targets[i]`` if a score of image i is NaN or Inf (one host sync).

    ``scores``: (B,) or (B, K); with K > 1, ``{k}`` in ``context`` is replaced by the index of
    the first bad column (e.g. the masked or ablated channel).
    """
    if not scores.numel() or bool(torch.isfinite(scores).all()):
        return
    flat = scores.detach().reshape(len(targets), -1)
    bad = ~torch.isfinite(flat)
    i = int(bad.any(dim=1).nonzero()[0, 0])
    k = int(bad[i].nonzero()[0, 0])
    raise ValueError(
        f"targets[{i}] ({targets[i]!r}) gives a non-finite score ({flat[i, k].item()}) for "
        f"image {i}{context.format(k=k)}; a map of it would mean nothing: check the target and "
        "the model output"
    )


# --------------------------------------------------------------------- layouts
def layer_channels(layer: nn.Module) -> int | None:
    """The channel count a layer's output has, from its last module with a known one."""
    for module in reversed(list(layer.modules())):
        if isinstance(module, nn.Linear):
            return module.out_features
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.out_channels
        if isinstance(module, nn.LayerNorm):
            shape = module.normalized_shape
            return int(shape[0]) if len(shape) == 1 else None
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            return module.num_features
        if isinstance(module, nn.GroupNorm):
            return module.num_channels
    return None


def check_channels_first(
    value: torch.Tensor, layer: nn.Module, name: str, size: Sequence[int] | None = None
) -> None:
    """A ValueError for a channels-last layer output, (B, *spatial, C), that would be read as
    (B, C, *spatial). With the input's spatial ``size``, the grid decides when it fits the
    input one way only; otherwise the layer tells: a plain LayerNorm over the last axis, or a
    last axis equal to the layer's channel count where axis 1 is not."""
    last, second = value.shape[-1], value.shape[1]
    reason = None
    if size is not None:
        first_fits = grid_fits(value.shape[2:], size)
        if first_fits != grid_fits(value.shape[1:-1], size):
            if first_fits:
                return
            grids = ["x".join(str(s) for s in shape) for shape in (value.shape[1:-1], size)]
            reason = f"its {grids[0]} grid before the last axis is what fits the {grids[1]} input"
    if reason is None:
        plain_norm = type(layer) is nn.LayerNorm
        if last == second and not plain_norm:
            return
        channels = layer_channels(layer)
        if channels != last or (channels == second and not plain_norm):
            return
        has = "LayerNorm normalises" if plain_norm else "last layer has"
        reason = f"its {has} {last} features on the last axis"
    shape = tuple(value.shape)
    spatial = "H, W" if value.ndim == 4 else "D, H, W"
    fix = (
        "reshape_transform=pytorch_grad_cam.utils.reshape_transforms.swinT_reshape_transform "
        "(it permutes (B, H, W, C) to (B, C, H, W))"
        if value.ndim == 4
        else "reshape_transform=lambda t: t.permute(0, 4, 1, 2, 3)"
    )
    raise ValueError(
        f"{name} outputs shape {shape}, a channels-last (B, {spatial}, C) map with C = {last} "
        f"channels ({reason}); read as (B, C, {spatial}) it would give a striped, wrong map. "
        f"Pass {fix}"
    )


def grid_fits(grid: Sequence[int], size: Sequence[int], slack: float = 1.5) -> bool:
    """Whether a (h, w[, d]) grid can be the input ``size`` divided by one stride, each side
    within ``slack`` cells (rounding of strided or patch layers)."""
    low, high = 0.0, math.inf
    for cells, pixels in zip(grid, size):
        low = max(low, pixels / (cells + slack))
        if cells > slack:
            high = min(high, pixels / (cells - slack))
    return low <= high


def spatial_record(
    value: Any,
    input_tensor: torch.Tensor,
    index: int,
    layer: nn.Module,
    what: str,
    transformed: bool,
) -> torch.Tensor:
    """A recorded (reshaped) activation or gradient as float32 (B, C, *spatial) on the
    input's device; a ValueError if it cannot be that: wrong number of dimensions, a first
    axis that is not the batch, a channels-last layout, or a grid that does not fit the input."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    name = f"target_layers[{index}] ({type(layer).__name__})"
    source = (
        f"reshape_transform turned the output of {name} into" if transformed else f"{name} gives"
    )
    if not isinstance(value, torch.Tensor) or value.ndim != input_tensor.ndim:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"{source} {what} of shape {shape}, which is not (B, C, *spatial) with "
            f"{input_tensor.ndim - 2} spatial dims like the input; token layouts (ViT, Swin) "
            "need a reshape_transform, e.g. "
            "pytorch_grad_cam.utils.reshape_transforms.vit_reshape_transform"
        )
    batch = input_tensor.shape[0]
    if value.shape[0] != batch:
        raise ValueError(
            f"{source} {what} of shape {tuple(value.shape)} for a batch of {batch} images: the "
            "first axis must be the batch, as in (B, C, *spatial)"
            + (
                " (does reshape_transform keep every image, batch axis first?)"
                if transformed
                else ""
            )
        )
    if what == "activations" and value.ndim > 3:
        if not transformed:
            check_channels_first(value, layer, name, input_tensor.shape[2:])
        elif not grid_fits(value.shape[2:], input_tensor.shape[2:]):
            grid = "x".join(str(s) for s in value.shape[2:])
            size = "x".join(str(s) for s in input_tensor.shape[2:])
            raise ValueError(
                f"{source} a {grid} grid, which does not fit the {size} input (its aspect ratio "
                "differs): the tokens are laid out wrongly. Pass the patch grid explicitly, "
                "e.g. reshape_transform=functools.partial(vit_reshape_transform, height=..., "
                "width=...)"
            )
    return value.to(input_tensor.device).float()


def all_finite(tensor: torch.Tensor) -> torch.Tensor:
    """0-dim bool tensor: no NaN or Inf in ``tensor`` (min and max propagate NaN, so two
    reductions do it, without a mask the size of the tensor)."""
    if not tensor.numel() or not (tensor.is_floating_point() or tensor.is_complex()):
        return torch.ones((), dtype=torch.bool, device=tensor.device)
    low, high = torch.aminmax(tensor.detach().reshape(-1))
    return torch.isfinite(low) & torch.isfinite(high)


# --------------------------------------------------------------------- per-call health
@contextmanager
def caller_images(images: int) -> Iterator[None]:
    """Within the block, the batches checked are views of the caller's ``images`` images,
    stacked view after view: messages name the caller's images."""
    token = _CALLER_IMAGES.set(images)
    try:
        yield
    finally:
        _CALLER_IMAGES.reset(token)


class CallHealth:
    """Per-image flags of one call's layers, gathered as tensors and read with one host sync.

    ``add(kind, layer, values)`` stores a (B,) tensor (or a scalar, broadcast to every image);
    ``add_finite(kind, layer, tensor)`` whether a (B, ...) tensor is free of NaN/Inf (the
    images are found only if it is not: ``non_finite_images``); ``read()`` returns
    ``{(kind, layer): [float per image]}``; ``describe(flags)`` names the caller's images.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        images = _CALLER_IMAGES.get()
        self.images = images if images and batch % images == 0 else batch
        self.entries: list[tuple[str, int, torch.Tensor]] = []
        self.sources: dict[tuple[str, int], torch.Tensor] = {}

    def describe(self, bad: Iterable[bool]) -> str:
        """``describe_images`` of per-image flags, an image of the caller flagged if any of
        its views is."""
        flags = list(bad)
        if len(flags) == self.batch and self.images < self.batch:
            flags = [any(flags[i :: self.images]) for i in range(self.images)]
        return describe_images(flags)

    def add_finite(self, kind: str, layer: int, tensor: torch.Tensor) -> None:
        self.add(kind, layer, all_finite(tensor))
        self.sources[kind, layer] = tensor

    def non_finite_images(self, kind: str, layer: int) -> list[bool]:
        """Per image, whether the tensor of ``add_finite(kind, layer, ...)`` has NaN/Inf."""
        source = self.sources[kind, layer]
        if source.ndim and len(source) == self.batch:
            return (~per_image("finite", source)).tolist()
        return [True] * self.batch

    def add(self, kind: str, layer: int, values: torch.Tensor) -> None:
        values = values.detach().float().reshape(-1)
        if values.numel() == 1:
            values = values.expand(self.batch)
        self.entries.append((kind, layer, values))

    def read(self) -> dict[tuple[str, int], list[float]]:
        if not self.entries:
            return {}
        device = self.entries[0][2].device
        flat = torch.cat([v.to(device) for _, _, v in self.entries]).tolist()
        result, start = {}, 0
        for kind, layer, values in self.entries:
            result[kind, layer] = flat[start : start + values.numel()]
            start += values.numel()
        return result


def per_image(reduce: str, tensor: torch.Tensor) -> torch.Tensor:
    """(B,) per-image "nonzero" (any), "finite" (all), "peak" (max) or "range" (max - min)
    of a (B, ...) tensor."""
    flat = tensor.detach().reshape(tensor.shape[0], -1)
    if reduce == "nonzero":
        return flat.ne(0).any(dim=1)
    if reduce == "finite":
        return torch.isfinite(flat).all(dim=1)
    if reduce == "peak":
        return flat.amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if flat.shape[1] == 0:
        return flat.new_zeros(flat.shape[0])
    return flat.amax(dim=1) - flat.amin(dim=1)


def warn(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn`` pointing at the first caller outside this package (or, inside
    ``collected_warnings``, kept for the method that collects them)."""
    sink = _WARNING_SINK.get()
    if sink is not None:
        sink.append((message, category))
        return
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == PACKAGE:
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, category, stacklevel=level)


@contextmanager
def collected_warnings() -> Iterator[list[tuple[str, type[Warning]]]]:
    """The package's warnings of the calls inside, collected instead of issued (in this thread
    only: a context variable, not the process-wide ``warnings`` filters)."""
    sink: list[tuple[str, type[Warning]]] = []
    token = _WARNING_SINK.set(sink)
    try:
        yield sink
    finally:
        _WARNING_SINK.reset(token)

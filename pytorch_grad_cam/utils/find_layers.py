"""Search for and replace submodules of a model; pick a CAM target layer automatically."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torchvision

from pytorch_grad_cam._model_state import eval_mode
from pytorch_grad_cam._outputs import flatten_tensors
from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform

LayerTypes = type | tuple[type, ...] | list[type]


def replace_layer_recursive(model: nn.Module, old_layer: nn.Module, new_layer: nn.Module) -> bool:
    """Replace the first submodule that *is* ``old_layer`` (identity) with ``new_layer``.

    Args:
        model: module to search (its descendants, depth first).
        old_layer: the module instance to replace.
        new_layer: the module to put in its place.

    Returns:
        True if a replacement was made, False otherwise.
    """
    for name, child in model._modules.items():
        if child is None:
            continue
        if child is old_layer:
            model._modules[name] = new_layer
            return True
        if replace_layer_recursive(child, old_layer, new_layer):
            return True
    return False


def replace_all_layer_type_recursive(
    model: nn.Module, old_layer_type: LayerTypes, new_layer: nn.Module
) -> None:
    """Replace every descendant that is an instance of ``old_layer_type`` with ``new_layer``.

    The same ``new_layer`` instance is used for every replacement; the replaced modules'
    own children are not searched.

    Args:
        model: module whose descendants are searched.
        old_layer_type: type (or tuple/list of types) to replace.
        new_layer: the module to put in place of each match.
    """
    types = tuple(old_layer_type) if isinstance(old_layer_type, list) else old_layer_type
    for name, child in model._modules.items():
        if child is None:
            continue
        if isinstance(child, types):
            model._modules[name] = new_layer
        else:
            replace_all_layer_type_recursive(child, types, new_layer)


def find_layer_predicate_recursive(
    model: nn.Module, predicate: Callable[[nn.Module], bool]
) -> list[nn.Module]:
    """Return all descendants of ``model`` (depth-first, pre-order) for which ``predicate`` holds.

    ``model`` itself is not tested.

    Args:
        model: module whose descendants are searched.
        predicate: function of a module returning whether to keep it.

    Returns:
        list of matching modules.
    """
    found = []
    for child in model._modules.values():
        if child is None:
            continue
        if predicate(child):
            found.append(child)
        found.extend(find_layer_predicate_recursive(child, predicate))
    return found


def find_layer_types_recursive(model: nn.Module, layer_types: LayerTypes) -> list[nn.Module]:
    """Return all descendants of ``model`` whose exact type is one of ``layer_types``.

    Subclasses do not match (use :func:`find_layer_predicate_recursive` with ``isinstance``
    for that).

    Args:
        model: module whose descendants are searched.
        layer_types: type or iterable of types.

    Returns:
        list of matching modules, depth-first pre-order.
    """
    types = (layer_types,) if isinstance(layer_types, type) else tuple(layer_types)
    return find_layer_predicate_recursive(model, lambda layer: type(layer) in types)


# ----------------------------------------------------------------- automatic target layer
ReshapeTransform = Callable[[Any], torch.Tensor]
Path = tuple[str | int, ...]

# torchvision classes -> path of the layer a CAM explains (checked in this order).
_TORCHVISION_LAYERS: tuple[tuple[str, Path], ...] = (
    ("VisionTransformer", ("encoder", "layers", -1, "ln_1")),
    ("SwinTransformer", ("features", -1, -1, "norm1")),
    ("ResNet", ("layer4", -1)),
    ("VGG", ("features", -1)),
    ("DenseNet", ("features", -1)),
    ("MobileNetV2", ("features", -1)),
    ("MobileNetV3", ("features", -1)),
    ("EfficientNet", ("features", -1)),
    ("ConvNeXt", ("features", -1)),
    ("AlexNet", ("features", -1)),
    ("SqueezeNet", ("features", -1)),
    ("RegNet", ("trunk_output", -1)),
    ("GoogLeNet", ("inception5b",)),
    ("Inception3", ("Mixed_7c",)),
    ("ShuffleNetV2", ("conv5",)),
    ("MNASNet", ("layers", -1)),
)
_MAX_CANDIDATES = 8


def find_target_layer(model: nn.Module) -> tuple[list[nn.Module], ReshapeTransform | None]:
    """Choose the layer a CAM should explain, and the reshape transform its output needs.

    Known families are placed by their structure:
      * torchvision CNNs: ``layer4[-1]`` (ResNet), ``features[-1]`` (VGG, DenseNet, MobileNet,
        EfficientNet, ConvNeXt, AlexNet, SqueezeNet) or the last stage (RegNet, GoogLeNet,
        Inception v3, ShuffleNet v2, MNASNet);
      * ViTs (torchvision ``encoder.layers[-1].ln_1``, timm ``blocks[-1].norm1``): the input of
        the last block's attention. The last block's output reaches a class-token head only
        through the class token, so its patch tokens get a zero gradient. The transform drops
        the prefix tokens and lays the patches out on the model's grid;
      * Swin (torchvision ``features[-1][-1].norm1``, timm ``layers[-1].blocks[-1].norm1``):
        channels-last maps, permuted by ``swinT_reshape_transform``;
      * timm models with ``feature_info``: the module of its last entry, checked by a dry run.

    Any other model gets a dry forward/backward pass on a random input (batch 1, on the model's
    device, in eval mode; the model is left as it was): the last module that contains a
    convolution, outputs a (B, C, *spatial) map with more than one position and gets a non-zero
    gradient from the output is chosen, unless token layers run after it.

    Args:
        model: the network.

    Returns:
        ``([layer], reshape_transform)``; the transform is None for (B, C, H, W) outputs.

    Raises:
        ValueError: if no layer can be chosen safely; the message lists candidate layers.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18(weights=None)
        >>> layers, reshape_transform = find_target_layer(model)
        >>> layers[0] is model.layer4[-1], reshape_transform
        (True, None)
    """
    for finder in (_known_family, _timm_feature_info):
        found = finder(model)
        if found is not None:
            return [found[0]], found[1]
    return [_verified_last_conv(model)], None


def _walk(module: Any, path: Path) -> nn.Module | None:
    """``module.a[-1].b`` for ``path == ("a", -1, "b")``; None if a step is missing."""
    for step in path:
        try:
            module = module[step] if isinstance(step, int) else getattr(module, step)
        except (AttributeError, IndexError, KeyError, TypeError):
            return None
    return module if isinstance(module, nn.Module) else None


_TIMM_VIT_LAYER: Path = ("blocks", -1, "norm1")
_TIMM_SWIN_LAYER: Path = ("layers", -1, "blocks", -1, "norm1")


def _family_layer(model: nn.Module) -> tuple[str, Path] | None:
    """(family, path of the layer a CAM explains) for a known model family."""
    for class_name, path in _TORCHVISION_LAYERS:
        if _walk(model, path) is not None and isinstance(
            model, getattr(torchvision.models, class_name)
        ):
            return class_name, path
    if _walk(model, _TIMM_VIT_LAYER) is not None and isinstance(
        getattr(model, "num_prefix_tokens", None), int
    ):
        return "timm ViT", _TIMM_VIT_LAYER
    if _walk(model, _TIMM_SWIN_LAYER) is not None:
        return "timm Swin", _TIMM_SWIN_LAYER
    return None


def suggested_target_layer(model: nn.Module) -> str | None:
    """The layer ``find_target_layer`` picks for a known model family, written as it is
    reached from the model (e.g. ``"encoder.layers[-1].ln_1"`` for a torchvision ViT), with
    the reshape transform it needs; None for other models. Runs nothing.

    Example:
        >>> from torchvision.models import resnet18
        >>> suggested_target_layer(resnet18())
        'layer4[-1]'
    """
    found = _family_layer(model)
    if found is None:
        return None
    family, path = found
    text = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)
    transform = {
        "VisionTransformer": "vit_reshape_transform",
        "timm ViT": "vit_reshape_transform",
        "SwinTransformer": "swinT_reshape_transform",
        "timm Swin": "swinT_reshape_transform",
    }.get(family)
    return text.lstrip(".") + (f" (with reshape_transform={transform})" if transform else "")


def _known_family(model: nn.Module) -> tuple[nn.Module, ReshapeTransform | None] | None:
    found = _family_layer(model)
    if found is None:
        return None
    family, path = found
    layer = _walk(model, path)
    assert layer is not None
    if family == "VisionTransformer":
        side = getattr(model, "image_size") // getattr(model, "patch_size")  # noqa: B009
        return layer, partial(vit_reshape_transform, height=side, width=side, num_prefix_tokens=1)
    if family == "timm ViT":
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        if grid is not None and not getattr(model, "dynamic_img_size", False):
            # the prefix is then what the grid leaves: CaiT's blocks, e.g., have no class token
            height, width = int(grid[0]), int(grid[1])
            return layer, partial(vit_reshape_transform, height=height, width=width)
        prefix = int(getattr(model, "num_prefix_tokens"))  # noqa: B009 (checked above)
        return layer, partial(vit_reshape_transform, num_prefix_tokens=prefix)
    swin = family in ("SwinTransformer", "timm Swin")
    return layer, swinT_reshape_transform if swin else None


def _timm_feature_info(model: nn.Module) -> tuple[nn.Module, ReshapeTransform | None] | None:
    """The module of timm's last ``feature_info`` entry, if a dry run shows a usable map."""
    try:
        last: Any = getattr(model, "feature_info")[-1]  # noqa: B009 (may be missing)
        layer, channels = model.get_submodule(str(last["module"])), int(last["num_chs"])
        records, ndim = _probe(model, [layer])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    record = records.get(layer)
    if record is None or not record[2] or len(record[1]) != ndim:
        return None
    if record[1][1] == channels:
        return layer, None
    if ndim == 4 and record[1][-1] == channels:  # channels-last (B, H, W, C)
        return layer, swinT_reshape_transform
    return None


def _probe_input(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """A random batch of one input for ``model``, sized from its config or first convolution."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if conv is None:
        raise ValueError("the model has no Conv2d/Conv3d layer to size an input from")
    spatial_dims = 2 if isinstance(conv, nn.Conv2d) else 3
    declared = (_declared_size(m) for m in model.modules())  # outermost first
    size = next(
        (s for s in declared if len(s) == spatial_dims),
        (224, 224) if spatial_dims == 2 else (32, 32, 32),
    )
    shape = (1, conv.in_channels, *size)
    return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)


def _declared_size(module: nn.Module) -> tuple[int, ...]:
    """Input size a module declares (timm ``pretrained_cfg``, ``image_size``, ``img_size``)."""
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return tuple(int(s) for s in cfg["input_size"][1:])
    for name in ("image_size", "img_size"):
        value = getattr(module, name, None)
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
            return tuple(value)
    return ()


def _probe(
    model: nn.Module, modules: list[nn.Module]
) -> tuple[dict[nn.Module, tuple[int, tuple[int, ...], bool]], int]:
    """Dry forward/backward pass recording what ``modules`` output.

    Returns ``({module: (call order, output shape, gradient is non-zero)}, input ndim)`` for the
    modules that ran and returned a floating-point tensor. The score differentiated is a fixed
    random combination of the model's outputs (so that, e.g., a softmax's constant sum does not
    hide a dependence). No RNG state, parameter, ``.grad`` or train/eval flag is changed.
    """
    generator = torch.Generator().manual_seed(0)
    x = _probe_input(model, generator).requires_grad_()
    outputs: dict[nn.Module, tuple[int, torch.Tensor]] = {}

    def hook_for(module: nn.Module) -> Callable:
        def hook(_: nn.Module, __: Any, output: Any) -> Any:
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                outputs[module] = (len(outputs), output)
                return output.clone()  # later in-place ops must not touch the recorded tensor
            return None

        return hook

    handles = [module.register_forward_hook(hook_for(module)) for module in modules]
    try:
        with eval_mode(model), torch.enable_grad():
            try:
                result = model(x)
            except Exception as error:
                raise ValueError(
                    f"a dry run on a random input of shape {tuple(x.shape)} failed: {error}"
                ) from error
            finals = [t for t in flatten_tensors(result)[0] if t.requires_grad]
            seen = [(m, out) for m, (_, out) in outputs.items() if out.requires_grad]
            grads: Any = [None] * len(seen)
            if finals and seen:
                score = torch.stack(
                    [(t * torch.randn(t.shape, generator=generator).to(t)).sum() for t in finals]
                ).sum()
                grads = torch.autograd.grad(score, [out for _, out in seen], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    nonzero = {m: g is not None and bool(g.any()) for (m, _), g in zip(seen, grads)}
    records = {
        m: (order, tuple(out.shape), nonzero.get(m, False)) for m, (order, out) in outputs.items()
    }
    return records, x.ndim


def _verified_last_conv(model: nn.Module) -> nn.Module:
    """Last conv-containing module whose spatial output gets a non-zero gradient (dry run)."""
    names = {module: name for name, module in model.named_modules() if module is not model}
    try:
        records, ndim = _probe(model, list(names))
    except ValueError as error:
        convs = [n for m, n in names.items() if isinstance(m, nn.modules.conv._ConvNd)]
        raise ValueError(
            f"cannot choose a target layer for {type(model).__name__} automatically ({error}); "
            "pass target_layers=[...] explicitly; last convolutions: "
            f"{', '.join(convs[-_MAX_CANDIDATES:]) or 'none'}"
        ) from error
    ordered = sorted(records.items(), key=lambda item: item[1][0])
    has_conv = {
        m for m in records if any(isinstance(d, nn.modules.conv._ConvNd) for d in m.modules())
    }
    picks = [
        m
        for m, (_, shape, nonzero) in ordered
        if m in has_conv and len(shape) == ndim and math.prod(shape[2:]) > 1 and nonzero
    ]
    if picks:
        tokens_after = [
            names[m]
            for m, (order, shape, _) in ordered
            if order > records[picks[-1]][0] and len(shape) == 3
        ]
        if not tokens_after:
            return picks[-1]
        reason = (
            f"layers after its last convolutional map ({names[picks[-1]]}) work on tokens, e.g. "
            f"{tokens_after[0]}; explaining a token layer needs a reshape_transform"
        )
    else:
        reason = "no layer containing a convolution gives a spatial map the output depends on"
    candidates = [
        f"{names[m]} {shape}" + ("" if nonzero else " (zero gradient)")
        for m, (_, shape, nonzero) in ordered
        if len(shape) in (3, ndim)
    ]
    raise ValueError(
        f"cannot choose a target layer for {type(model).__name__} automatically: {reason}. "
        "Pass target_layers=[...] (and a reshape_transform for (B, N, C) tokens or channels-last "
        f"maps). Last candidate layers (output shape for a batch of one): "
        f"{', '.join(candidates[-_MAX_CANDIDATES:]) or 'none'}"
    )


def family_reshape_transform(model: nn.Module, layer: nn.Module) -> ReshapeTransform | None:
    """The reshape transform ``layer`` needs if it is a token layer of a known transformer
    family (torchvision/timm ViT, Swin), as ``find_target_layer`` would pick; else None.

    A layer inside the family's transformer blocks (not a convolution) outputs tokens (ViT:
    (B, N, C)) or channels-last maps (Swin: (B, H, W, C)).
    """
    found = _known_family(model)
    if found is None or found[1] is None or isinstance(layer, nn.modules.conv._ConvNd):
        return None
    containers = [
        _walk(model, path)
        for path in (("encoder", "layers"), ("blocks",), ("features",), ("layers",))
    ]
    for container in containers:
        if container is not None and any(m is layer for m in container.modules()):
            return found[1]
    return None

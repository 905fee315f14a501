"""The command line's model side: methods, devices, torchvision models and their weights,
target layers, and running a CAM with one-line errors."""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam.cli.args import METHOD_NAMES, OFFLINE_ENV, CliError
from pytorch_grad_cam.utils.find_layers import family_reshape_transform, find_target_layer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

IMAGE_SIZE = 224
DOWNLOAD_TIMEOUT_S = 15


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def available_methods() -> dict[str, type]:
    """Command-line method name -> CAM class."""
    return {name: getattr(pytorch_grad_cam, cls) for name, cls in METHOD_NAMES.items()}


def pick_device(args: argparse.Namespace) -> torch.device:
    """The device asked for; ``auto`` prefers CUDA, then MPS, then the CPU. Under torchrun
    each process takes the GPU of its ``LOCAL_RANK``."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if args.use_cuda and args.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local % torch.cuda.device_count())
        print("note: --use-cuda but CUDA is not available; using the CPU", file=sys.stderr)
        return torch.device("cpu")
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local % torch.cuda.device_count())
    if args.device == "auto":
        return torch.device("mps" if has_mps else "cpu")
    if args.device == "cuda":
        raise CliError("--device cuda but CUDA is not available; pass --device cpu")
    if args.device == "mps" and not has_mps:
        raise CliError("--device mps but MPS is not available; pass --device cpu")
    return torch.device(args.device)


def _default_weights(name: str) -> Any:
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def input_size(name: str, weights: str) -> int:
    """Side of the input: the crop size the pretrained weights were trained at (299 for
    inception_v3, 518 for vit_h_14, ...) with ``--weights DEFAULT``, else 224."""
    pretrained = _default_weights(name) if weights.upper() == "DEFAULT" else None
    crop = getattr(pretrained.transforms(), "crop_size", None) if pretrained else None
    return int(crop[0]) if crop else IMAGE_SIZE


def class_names(name: str) -> list[str] | None:
    """ImageNet class names from the model's weight metadata (no download)."""
    weights = _default_weights(name)
    return None if weights is None else weights.meta.get("categories")


def known_num_classes(name: str, weights: str) -> int | None:
    """The model's number of outputs when it is known without loading it: the torchvision
    default (its pretrained weights' classes) with ``--weights DEFAULT`` or ``none``."""
    if weights.lower() not in ("none", "default"):
        return None  # a state_dict file: its head decides
    names = class_names(name)
    return None if names is None else len(names)


def check_model_name(name: str) -> None:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise CliError(
            f"unknown --model {name!r}; choose a torchvision classifier such as resnet18, "
            "resnet50, vgg16, mobilenet_v3_small, convnext_tiny or vit_b_16 "
            "(torchvision.models.list_models() lists them all)"
        )


def check_weights(name: str, weights: str) -> None:
    """Errors about ``--weights`` that need no loading (checked before any work)."""
    if weights.lower() in ("none", "default"):
        if weights.upper() == "DEFAULT" and _default_weights(name) is None:
            raise CliError(f"{name} has no pretrained weights; pass --weights none or PATH")
        return
    if not os.path.isfile(weights):
        raise CliError(f"--weights {weights!r}: no such file (use DEFAULT, none or a file path)")


def load_model(name: str, weights: str) -> nn.Module:
    """A torchvision classifier in eval mode with DEFAULT, no (``none``) or local weights."""
    check_model_name(name)
    check_weights(name, weights)
    if weights.lower() == "none":
        return torchvision.models.get_model(name, weights=None).eval()
    if weights.upper() == "DEFAULT":
        return _load_pretrained(name)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        model = torchvision.models.get_model(name, weights=None, num_classes=_num_classes(state))
        model.load_state_dict(state)
    except Exception as error:  # unpickling and state_dict mismatches: report, no traceback
        raise CliError(
            f"--weights {weights!r} is not a state_dict for {name}: {one_line(error)}"
        ) from error
    return model.eval()


def _num_classes(state: dict) -> int:
    """Outputs of a (possibly fine-tuned) classifier: rows of the state_dict's last weight.

    torchvision registers the classification head last (a Linear, or SqueezeNet's 1x1 conv).
    """
    matrices = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) > 1]
    return int(matrices[-1].shape[0]) if matrices else 1000


def _load_pretrained(name: str) -> nn.Module:
    """Pretrained weights from torch.hub's cache, downloading them (short timeout) if needed."""
    weights = _default_weights(name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not path.is_file():
        advice = (
            f"none are cached in {path.parent}; pass --weights none for random weights, "
            "--weights PATH for a local state_dict, or --demo"
        )
        if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
            raise CliError(
                f"{OFFLINE_ENV} is set, so the {name} weights are not downloaded, and " + advice
            )
        match = re.search(r"-([a-f0-9]{6,})\.", path.name)  # torchvision's hash prefix
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), match and match.group(1))
        except Exception as error:  # network failures come in many types; all mean the same
            raise CliError(
                f"could not download the {name} weights (no network?) and " + advice
            ) from error
        finally:
            socket.setdefaulttimeout(previous)
    try:
        return torchvision.models.get_model(name, weights=weights).eval()
    except Exception as error:  # a corrupt cache file: say which
        raise CliError(
            f"could not load the {name} weights from {path}: {one_line(error)}"
        ) from error


def find_layer(model: nn.Module, path: str) -> nn.Module:
    """``model.a.b[-1]`` from ``'a.b.-1'``: child names, or indices into Sequential/ModuleList."""
    module, walked = model, "model"
    for part in path.split("."):
        children = dict(module.named_children())
        if part in children:
            module = children[part]
        elif part.lstrip("-").isdigit() and isinstance(module, (nn.Sequential, nn.ModuleList)):
            index = int(part)
            if not -len(module) <= index < len(module):
                raise CliError(
                    f"--target-layer {path!r}: index {index} is out of range for {walked} "
                    f"({len(module)} children)"
                )
            module = module[index]
        else:
            names = ", ".join(children) or "none"
            raise CliError(
                f"--target-layer {path!r}: {walked} has no child {part!r}; its children: {names}"
            )
        walked = f"{walked}.{part}"
    return module


def pick_target_layers(model: nn.Module, paths: list[str] | None) -> tuple[list[nn.Module], Any]:
    """The layers to explain and the reshape transform they need: ``auto`` picks both, and a
    token layer of a known transformer family gets the family's transform."""
    if not paths:
        paths = ["layer4.-1"] if isinstance(model, torchvision.models.ResNet) else ["auto"]
    layers, reshape = [], None
    for path in paths:
        if path != "auto":
            layer = find_layer(model, path)
            layers.append(layer)
            reshape = reshape or family_reshape_transform(model, layer)
            continue
        try:
            found, reshape = find_target_layer(model)
        except (ValueError, TypeError, RuntimeError) as error:
            raise CliError(
                f"could not find a target layer automatically ({one_line(error)}); "
                "pass --target-layer DOTTED.PATH"
            ) from error
        layers.extend(found)
    return layers, reshape


def layer_names(model: nn.Module, layers: list[nn.Module]) -> list[str]:
    names = {id(m): name for name, m in model.named_modules()}
    return [names.get(id(layer), type(layer).__name__) for layer in layers]


def make_cam(
    cam_class: type, model: nn.Module, layers: list[nn.Module] | None, reshape: Any, batch: int
) -> Any:
    cam = cam_class(model=model, target_layers=layers, reshape_transform=reshape)
    base = getattr(cam, "base_cam", cam)  # a method wrapping another (FinerCAM)
    if hasattr(base, "batch_size"):
        base.batch_size = batch
    if hasattr(base, "progress"):
        base.progress = False
    return cam


def run_cam(
    method: str,
    cam: Any,
    inputs: torch.Tensor,
    categories: list[int] | None,
    args: argparse.Namespace,
) -> np.ndarray:
    """Maps (B, H, W): image i of ``inputs`` explained for class ``categories[i]`` (each
    image's top class when ``categories`` is None)."""
    # (only the options asked for: methods built on another one may not take them)
    smooth = {k: True for k in ("aug_smooth", "eigen_smooth") if getattr(args, k)}
    try:
        if method == "finercam":  # each class against the (up to 3) classes closest to it
            with torch.no_grad():
                num_classes = cam.model(inputs[:1]).shape[1]
            ranks = list(range(1, min(4, num_classes)))
            indices: list[Any] = list(categories) if categories else [None] * len(inputs)
            maps = [
                cam(x[None], target_idx=c, comparison_categories=ranks, **smooth)
                for x, c in zip(inputs, indices)
            ]
            return np.concatenate(maps)
        targets = None if categories is None else [ClassifierOutputTarget(c) for c in categories]
        return cam(inputs, targets=targets, **smooth)
    except (ValueError, TypeError, RuntimeError) as error:  # mostly an unsuitable layer
        if "out of memory" in str(error):
            raise CliError(
                f"{method} ran out of memory on {inputs.device}; pass a smaller --batch-size "
                "or --device cpu"
            ) from error
        raise CliError(
            f"{method} failed: {one_line(error)} (check --target-layer; for ViT/Swin "
            "models use --target-layer auto)"
        ) from error


def model_explainer(model: nn.Module, cam: Any, args: argparse.Namespace) -> Any:
    """``explain(x, classes)`` for a dataset run: the maps (B, S, S), and the model's outputs
    for ``x`` (from the CAM's own forward pass when it ran on exactly ``x``)."""

    def explain(x: torch.Tensor, classes: list[int] | None) -> tuple[np.ndarray, torch.Tensor]:
        maps = run_cam(args.method, cam, x, classes, args)
        outputs = getattr(cam, "outputs", None)
        if (
            args.aug_smooth
            or args.method == "finercam"
            or not isinstance(outputs, torch.Tensor)
            or len(outputs) != len(x)  # e.g. SESS: the base method ran on windows
        ):
            with torch.no_grad():
                outputs = model(x)
        return maps, outputs

    return explain


def pick_categories(asked: list[int] | None, default: list[int], num_classes: int) -> list[int]:
    """``--target-category`` values without repeats (else ``default``), checked for range."""
    categories = list(dict.fromkeys(asked or default))
    bad = [c for c in categories if not 0 <= c < num_classes]
    if bad:
        raise CliError(
            f"--target-category {bad[0]} is out of range; the model has {num_classes} classes"
        )
    return categories

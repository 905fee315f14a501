"""Explain a torchvision classifier's prediction on an image with a CAM method.

Usage::

    python cam.py --image-path IMG [--method gradcam] [--target-category N ...]
                  [--model resnet50] [--weights DEFAULT|none|PATH] [--target-layer layer4.-1]
                  [--device auto|cpu|cuda|mps] [--aug-smooth] [--eigen-smooth]
                  [--batch-size 32] [--output-dir output]
    python cam.py --demo [--method gradcam]     # offline: the bundled shapes model

Writes ``{method}_cam.jpg`` (CAM overlay), ``{method}_gb.jpg`` (guided backprop) and
``{method}_cam_gb.jpg`` (their product) into ``--output-dir``; with several
``--target-category`` values, one such triple ``{method}_{N}_*.jpg`` per category.
``--demo`` writes ``{method}_demo.jpg``: the generated image and the maps of both classes.

Set ``PYTORCH_GRAD_CAM_OFFLINE=1`` to never try a download (uncached weights are an error).
Bad input (missing image, unknown method/model/layer, unavailable weights or device) prints
one ``error: ...`` line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam.utils.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    deprocess_image,
    preprocess_image,
    show_cam_on_image,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

# Command-line name -> class name in pytorch_grad_cam; methods appear as the package adds them.
METHOD_NAMES = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "gradcam++": "GradCAMPlusPlus",
    "gradcamelementwise": "GradCAMElementWise",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "fullgrad": "FullGrad",
    "kpcacam": "KPCA_CAM",
    "shapleycam": "ShapleyCAM",
    "finercam": "FinerCAM",
    "randomcam": "RandomCAM",
}
OFFLINE_ENV = "PYTORCH_GRAD_CAM_OFFLINE"
IMAGE_SIZE = 224
DOWNLOAD_TIMEOUT_S = 15


class CliError(Exception):
    """A user error, reported as one ``error: ...`` line and exit status 2."""


def available_methods() -> dict[str, type]:
    """Lower-case method name -> CAM class, for every method ``pytorch_grad_cam`` exports."""
    methods = {
        name: getattr(pytorch_grad_cam, cls)
        for name, cls in METHOD_NAMES.items()
        if hasattr(pytorch_grad_cam, cls)
    }
    known = set(methods.values())
    for cls in vars(pytorch_grad_cam).values():
        if (
            isinstance(cls, type)
            and issubclass(cls, pytorch_grad_cam.BaseCAM)
            and cls is not pytorch_grad_cam.BaseCAM
            and cls not in known
        ):
            methods[cls.__name__.lower().replace("_", "")] = cls
    return methods


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (the 2021 spellings ``--use-cuda``/``--aug_smooth`` included)."""
    parser = argparse.ArgumentParser(
        description="Explain a classifier's prediction on an image with a CAM method.",
        epilog=f"Set {OFFLINE_ENV}=1 to never try to download weights.",
    )
    parser.add_argument("--image-path", help="image to explain (any format OpenCV reads)")
    parser.add_argument(
        "--method",
        default="gradcam",
        help="CAM method: " + ", ".join(available_methods()) + " (default: gradcam)",
    )
    parser.add_argument(
        "--target-category",
        type=int,
        action="append",
        metavar="N",
        help="ImageNet class index to explain (repeatable); default: the top class",
    )
    parser.add_argument(
        "--model", default="resnet50", help="torchvision classification model (default: resnet50)"
    )
    parser.add_argument(
        "--weights",
        default="DEFAULT",
        help="DEFAULT (pretrained, downloaded once), none (random) or a state_dict file",
    )
    parser.add_argument(
        "--target-layer",
        action="append",
        metavar="DOTTED.PATH",
        help="layer to explain, e.g. layer4.-1 (repeatable), or 'auto'; "
        "default: layer4.-1 for ResNets, auto otherwise",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--use-cuda", action="store_true", help="deprecated: same as --device cuda")
    parser.add_argument(
        "--aug-smooth",
        "--aug_smooth",
        dest="aug_smooth",
        action="store_true",
        help="average over flipped and rescaled copies of the image",
    )
    parser.add_argument(
        "--eigen-smooth",
        "--eigen_smooth",
        dest="eigen_smooth",
        action="store_true",
        help="use the first principal component of the weighted activations",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size of ScoreCAM/AblationCAM passes"
    )
    parser.add_argument("--output-dir", default="output", help="where to write the images")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="explain a generated shapes image with the bundled model, fully offline "
        "(--target-category 0 or 1 picks one class; --image-path, --model, --weights and "
        "--target-layer are not used)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --demo and random weights")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1; got {args.batch_size}")
    return args


def pick_method(name: str) -> tuple[str, type]:
    """Resolve a (case-insensitive) method name to its class."""
    methods = available_methods()
    key = name.lower()
    if key not in methods:
        raise CliError(f"unknown --method {name!r}; choose one of: {', '.join(methods)}")
    return key, methods[key]


def pick_device(args: argparse.Namespace) -> torch.device:
    """The device asked for; ``auto`` prefers CUDA, then MPS, then the CPU."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if args.use_cuda and args.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        print("note: --use-cuda but CUDA is not available; using the CPU", file=sys.stderr)
        return torch.device("cpu")
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda but CUDA is not available; pass --device cpu")
    if args.device == "mps" and not has_mps:
        raise CliError("--device mps but MPS is not available; pass --device cpu")
    return torch.device(args.device)


def read_image(path: str | None, size: int = IMAGE_SIZE) -> np.ndarray:
    """RGB float32 image in [0, 1], resized to ``size`` x ``size``."""
    if not path:
        raise CliError("pass --image-path IMG (or --demo for a generated image)")
    if not os.path.isfile(path):
        raise CliError(f"--image-path {path!r}: no such file")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise CliError(f"--image-path {path!r}: OpenCV cannot read it as an image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.float32(cv2.resize(rgb, (size, size))) / 255


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def _default_weights(name: str):
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


def load_model(name: str, weights: str) -> nn.Module:
    """A torchvision classifier in eval mode with DEFAULT, no (``none``) or local weights."""
    models = torchvision.models.list_models(module=torchvision.models)
    if name not in models:
        raise CliError(
            f"unknown --model {name!r}; choose a torchvision classifier such as resnet18, "
            "resnet50, vgg16, mobilenet_v3_small, convnext_tiny or vit_b_16 "
            "(torchvision.models.list_models() lists them all)"
        )
    if weights.lower() == "none":
        return torchvision.models.get_model(name, weights=None).eval()
    if weights.upper() == "DEFAULT":
        return _load_pretrained(name)
    if not os.path.isfile(weights):
        raise CliError(f"--weights {weights!r}: no such file (use DEFAULT, none or a file path)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        model = torchvision.models.get_model(name, weights=None, num_classes=_num_classes(state))
        model.load_state_dict(state)
    except Exception as error:  # unpickling and state_dict mismatches: report, no traceback
        raise CliError(
            f"--weights {weights!r} is not a state_dict for {name}: {_one_line(error)}"
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
    if weights is None:
        raise CliError(f"{name} has no pretrained weights; pass --weights none or PATH")
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
            f"could not load the {name} weights from {path}: {_one_line(error)}"
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


def pick_target_layers(model: nn.Module, paths: list[str] | None):
    """The layers to explain and the reshape transform they need (``auto`` may set one)."""
    if not paths:
        paths = ["layer4.-1"] if isinstance(model, torchvision.models.ResNet) else ["auto"]
    layers, reshape = [], None
    for path in paths:
        if path != "auto":
            layers.append(find_layer(model, path))
            continue
        try:
            from pytorch_grad_cam.utils.find_layers import find_target_layer
        except ImportError:
            raise CliError(
                "--target-layer auto is not available in this version; "
                "pass --target-layer DOTTED.PATH (e.g. features.-1)"
            ) from None
        try:
            found, reshape = find_target_layer(model)
        except (ValueError, TypeError, RuntimeError) as error:
            raise CliError(
                f"could not find a target layer automatically ({_one_line(error)}); "
                "pass --target-layer DOTTED.PATH"
            ) from error
        layers.extend(found if isinstance(found, (list, tuple)) else [found])
    return layers, reshape


def run_cam(
    method: str,
    cam_class: type,
    model: nn.Module,
    layers: list[nn.Module] | None,
    reshape,
    inputs: torch.Tensor,
    categories: list[int],
    args: argparse.Namespace,
) -> np.ndarray:
    """Maps (B, H, W): image i of ``inputs`` explained for class ``categories[i]``."""
    smooth = {"aug_smooth": args.aug_smooth, "eigen_smooth": args.eigen_smooth}
    try:
        with cam_class(model=model, target_layers=layers, reshape_transform=reshape) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = args.batch_size
            if method == "finercam":  # each class against the (up to 3) classes closest to it
                with torch.no_grad():
                    num_classes = model(inputs[:1]).shape[1]
                ranks = list(range(1, min(4, num_classes)))
                maps = [
                    cam(x[None], target_idx=c, comparison_categories=ranks, **smooth)
                    for x, c in zip(inputs, categories)
                ]
                return np.concatenate(maps)
            return cam(inputs, targets=[ClassifierOutputTarget(c) for c in categories], **smooth)
    except (ValueError, TypeError, RuntimeError) as error:  # mostly an unsuitable layer
        if "out of memory" in str(error):
            raise CliError(
                f"{method} ran out of memory on {inputs.device}; pass a smaller --batch-size "
                "or --device cpu"
            ) from error
        raise CliError(
            f"{method} failed: {_one_line(error)} (check --target-layer; for ViT/Swin "
            "models use --target-layer auto)"
        ) from error


def pick_categories(asked: list[int] | None, default: Iterable[int], num_classes: int) -> list[int]:
    """``--target-category`` values without repeats (else ``default``), checked for range."""
    categories = list(dict.fromkeys(asked or default))
    bad = [c for c in categories if not 0 <= c < num_classes]
    if bad:
        raise CliError(
            f"--target-category {bad[0]} is out of range; the model has {num_classes} classes"
        )
    return categories


def write(path: Path, image: np.ndarray) -> None:
    """Write a uint8 image and say so."""
    if not cv2.imwrite(str(path), image):
        raise CliError(f"could not write {path}")
    print(f"wrote {path}")


def _describe(index: int, names: list[str] | None) -> str:
    return f"{index} ({names[index]})" if names else str(index)


def explain_image(args: argparse.Namespace, method: str, cam_class: type, device) -> None:
    """The three images for ``--image-path`` and each explained category."""
    from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel

    rgb = read_image(args.image_path, input_size(args.model, args.weights))
    model = load_model(args.model, args.weights).to(device)
    layers, reshape = (None, None)
    if method != "fullgrad":  # FullGrad uses every biased layer, not target layers
        layers, reshape = pick_target_layers(model, args.target_layer)
    input_tensor = preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD).to(device)
    try:
        with torch.no_grad():
            logits = model(input_tensor)[0]
    except (ValueError, TypeError, RuntimeError) as error:
        size = "x".join(map(str, input_tensor.shape[-2:]))
        raise CliError(
            f"--model {args.model} failed on a {size} image: {_one_line(error)}"
        ) from error
    names = class_names(args.model)
    if names is not None and len(names) != logits.numel():
        names = None
    top = int(logits.argmax())
    prob = float(logits.softmax(0)[top])
    print(f"predicted class: {_describe(top, names)}, probability {prob:.3f}")
    categories = pick_categories(args.target_category, [top], logits.numel())
    if args.target_category:
        print("explaining: " + ", ".join(_describe(c, names) for c in categories))

    batch = input_tensor.repeat(len(categories), 1, 1, 1)
    maps = run_cam(method, cam_class, model, layers, reshape, batch, categories, args)
    grads = GuidedBackpropReLUModel(model=model, device=device)(batch, target_category=categories)
    grads = grads.reshape(len(categories), *grads.shape[-3:])

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for category, grayscale_cam, gb in zip(categories, maps, grads):
        stem = method if len(categories) == 1 else f"{method}_{category}"
        overlay = show_cam_on_image(rgb, grayscale_cam, use_rgb=True)
        cam_gb = deprocess_image(grayscale_cam[..., None] * gb)
        write(out / f"{stem}_cam.jpg", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        write(out / f"{stem}_gb.jpg", cv2.cvtColor(deprocess_image(gb), cv2.COLOR_RGB2BGR))
        write(out / f"{stem}_cam_gb.jpg", cv2.cvtColor(cam_gb, cv2.COLOR_RGB2BGR))


def explain_demo(args: argparse.Namespace, method: str, cam_class: type, device) -> None:
    """A generated image holding a circle and a square, and the map of each class, side by side.

    ``--target-category 0`` (circle) or ``1`` (square) keeps only that class's map.
    """
    from pytorch_grad_cam.demo.model import load_demo_model
    from pytorch_grad_cam.demo.shapes import DEMO_CLASSES, make_shapes_image

    model = load_demo_model(device)
    image, masks, _ = make_shapes_image(np.random.default_rng(args.seed), classes=(0, 1))
    x = torch.from_numpy(image.transpose(2, 0, 1))[None].to(device)
    with torch.no_grad():
        probs = torch.sigmoid(model(x))[0].tolist()
    classes = pick_categories(args.target_category, range(len(DEMO_CLASSES)), len(DEMO_CLASSES))
    batch = x.repeat(len(classes), 1, 1, 1)
    layers = None if method == "fullgrad" else [model.target_layer]
    maps = run_cam(method, cam_class, model, layers, None, batch, classes, args)

    size = (256, 256)
    big = np.clip(cv2.resize(image, size, interpolation=cv2.INTER_NEAREST), 0, 1)
    panels = [np.uint8(255 * big)]
    for c, grayscale_cam in zip(classes, maps):
        own = grayscale_cam[masks[c]].sum() / (grayscale_cam.sum() + 1e-7)
        other = grayscale_cam[masks[1 - c]].sum() / (grayscale_cam.sum() + 1e-7)
        name = DEMO_CLASSES[c]
        print(
            f"{name}: probability {probs[c]:.3f}; its map puts {own:.0%} of its mass on the "
            f"{name} ({masks[c].mean():.0%} of the image) and {other:.0%} on the "
            f"{DEMO_CLASSES[1 - c]}"
        )
        mask = np.clip(cv2.resize(grayscale_cam, size, interpolation=cv2.INTER_LINEAR), 0, 1)
        panel = show_cam_on_image(big, mask, use_rgb=True)
        cv2.putText(panel, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        panels.append(panel)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write(out / f"{method}_demo.jpg", cv2.cvtColor(np.hstack(panels), cv2.COLOR_RGB2BGR))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parse_args(argv)
    try:
        method, cam_class = pick_method(args.method)
        device = pick_device(args)
        torch.manual_seed(args.seed)
        if args.demo:
            explain_demo(args, method, cam_class, device)
        else:
            explain_image(args, method, cam_class, device)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

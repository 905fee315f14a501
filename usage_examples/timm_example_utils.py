"""What ``vit_example.py`` and ``swinT_example.py`` share: the command line, a timm model with
an offline fallback to random weights, and the CAM run that writes the overlay.

Pretrained weights come from the Hugging Face hub (or its local cache). Without a network (or
with ``PYTORCH_GRAD_CAM_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) and nothing cached, the examples
print a note and go on with random weights: the map then has no meaning. The overlay goes into
``--output-dir`` (or to the path ``--output``).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import cv2
import numpy as np
import torch
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam.ablation_layer import AblationLayerVit
from pytorch_grad_cam.demo.shapes import make_shapes_image
from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

OFFLINE_ENVS = ("PYTORCH_GRAD_CAM_OFFLINE", "HF_HUB_OFFLINE")


def available_methods() -> dict[str, type]:
    """Lower-case name -> class of every CAM method of the package that works on token layers.

    FullGrad is left out: it explains the biases of every layer, not the target layers.
    """
    classes = [
        cls
        for cls in (getattr(pytorch_grad_cam, name) for name in pytorch_grad_cam.__all__)
        if isinstance(cls, type)
        and issubclass(cls, pytorch_grad_cam.BaseCAM)
        and cls not in (pytorch_grad_cam.BaseCAM, pytorch_grad_cam.FullGrad)
    ]
    names = [cls.__name__.lower().replace("plusplus", "++").replace("_", "") for cls in classes]
    return dict(sorted(zip(names, classes)))


def fail(message: str) -> NoReturn:
    """Report a user error on one line and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(
    argv: Sequence[str] | None, description: str, default_model: str, prefix: str
) -> argparse.Namespace:
    """The examples' command line; checks ``--method`` and resolves ``--device auto``."""
    methods = available_methods()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--image-path", help="image to explain (default: a generated one)")
    parser.add_argument("--method", default="gradcam", help=", ".join(methods))
    parser.add_argument("--model", default=default_model, help=f"timm model name ({default_model})")
    parser.add_argument("--no-pretrained", action="store_true", help="use random weights")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--output-dir", default="output", help="where to write the overlay (default: output)"
    )
    parser.add_argument(
        "--output", help=f"overlay path (default: OUTPUT_DIR/{prefix}_{{method}}_cam.jpg)"
    )
    parser.add_argument("--aug-smooth", action="store_true", help="test-time augmentation")
    parser.add_argument("--eigen-smooth", action="store_true", help="first principal component")
    args = parser.parse_args(argv)

    args.method = args.method.lower()
    if args.method not in methods:
        fail(f"unknown --method {args.method!r}; choose one of: {', '.join(methods)}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but CUDA is not available; pass --device cpu")
    if args.device == "mps" and not torch.backends.mps.is_available():
        fail("--device mps but MPS is not available; pass --device cpu")
    args.output = args.output or os.path.join(args.output_dir, f"{prefix}_{args.method}_cam.jpg")
    return args


def load_rgb(image_path: str | None) -> np.ndarray:
    """The image as float32 RGB in [0, 1]; without a path, a generated disc and square."""
    if not image_path:
        return make_shapes_image(np.random.default_rng(0), classes=(0, 1), size=224)[0]
    bgr = cv2.imread(image_path, cv2.IMREAD_COLOR)
    if bgr is None:
        fail(f"--image-path {image_path!r}: missing or not an image")
    return np.float32(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) / 255


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the weights host opens within ``timeout`` seconds."""
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # behind a proxy a direct probe says nothing; let the download try
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def create_model(name: str, pretrained: bool, pattern: str) -> nn.Module:
    """A timm model in eval mode: pretrained when the weights can be had, else random.

    ``pattern`` is the ``timm.list_models`` pattern suggested when ``name`` is unknown.
    """
    offline = any(os.environ.get(v, "") not in ("", "0") for v in OFFLINE_ENVS)
    if pretrained and (offline or not hub_reachable()):
        os.environ["HF_HUB_OFFLINE"] = "1"  # cache only: no retries against a dead network
    try:
        import timm  # after HF_HUB_OFFLINE is settled: huggingface_hub reads it when imported
    except ImportError:
        fail("this example needs timm: pip install timm")

    if not timm.is_model(name):
        fail(f"unknown --model {name!r}; see timm.list_models({pattern!r})")
    if pretrained:
        try:
            return timm.create_model(name, pretrained=True).eval()
        except Exception as error:  # no network / not cached: many exception types
            print(
                f"note: pretrained weights for {name} are not available offline or could not be "
                f"downloaded ({type(error).__name__}); using random weights: the map has no "
                "meaning (pass --no-pretrained to skip the attempt)",
                file=sys.stderr,
            )
    else:
        print("note: --no-pretrained: random weights: the map has no meaning", file=sys.stderr)
    return timm.create_model(name, pretrained=False).eval()


def imagenet_name(index: int, num_classes: int) -> str:
    """``'index (name)'`` for an ImageNet-1k classifier, else just the index."""
    try:
        from timm.data import ImageNetInfo

        if num_classes == 1000:
            return f"{index} ({ImageNetInfo().index_to_description(index)})"
    except ImportError:
        pass
    return str(index)


def explain(
    args: argparse.Namespace,
    rgb: np.ndarray,
    model: nn.Module,
    target_layers: list[nn.Module],
    reshape_transform: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Explain the model's top class on ``rgb`` and write the overlay to ``args.output``."""
    model = model.to(args.device)
    cfg = model.pretrained_cfg
    height, width = cfg.get("input_size", (3, 224, 224))[-2:]
    rgb = cv2.resize(rgb, (width, height))
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    input_tensor = preprocess_image(rgb, mean=mean, std=std).to(args.device)
    with torch.no_grad():
        top = int(model(input_tensor)[0].argmax())
    print(f"predicted class: {imagenet_name(top, model.num_classes)}")

    cam_class = available_methods()[args.method]
    kwargs = {}
    if cam_class is pytorch_grad_cam.AblationCAM:  # ablate channels of the token layout
        kwargs["ablation_layer"] = AblationLayerVit()
    try:
        with cam_class(model, target_layers, reshape_transform=reshape_transform, **kwargs) as cam:
            grayscale_cam = cam(
                input_tensor,
                targets=[ClassifierOutputTarget(top)],
                aug_smooth=args.aug_smooth,
                eigen_smooth=args.eigen_smooth,
            )[0]
    except (ValueError, TypeError, RuntimeError) as error:
        fail(f"--method {args.method} failed on {args.model}: {' '.join(str(error).split())}")

    overlay = show_cam_on_image(rgb, grayscale_cam, use_rgb=True)
    directory = os.path.dirname(args.output)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if not cv2.imwrite(args.output, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        fail(f"could not write --output {args.output!r}")
    print(f"wrote {args.output}")

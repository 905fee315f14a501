"""What ``vit_example.py`` and ``swinT_example.py`` share: the command line, a timm model with
an offline fallback to random weights, and the CAM run that writes the overlay.

The conventions are those of every example (see ``example_utils.py``). Pretrained weights come
from the Hugging Face hub (or its local cache). Without a network (or with
``PYTORCH_GRAD_CAM_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) and nothing cached, the examples print a
note and go on with random weights: the map then has no meaning. The overlay, at the input
image's own size, goes into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam.ablation_layer import AblationLayerVit
from pytorch_grad_cam.utils.image import preprocess_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    cam_methods,
    check_args,
    example_parser,
    fail,
    host_reachable,
    offline_forced,
    one_line,
    overlay,
    random_weights_note,
    save_rgb,
)


def parse_args(
    argv: Sequence[str] | None, description: str, default_model: str
) -> argparse.Namespace:
    """The examples' command line; checks ``--method`` and resolves ``--device auto``."""
    methods = list(cam_methods())
    parser = example_parser(description, methods, default_method="gradcam")
    parser.add_argument("--model", default=default_model, help=f"timm model name ({default_model})")
    parser.add_argument("--aug-smooth", action="store_true", help="test-time augmentation")
    parser.add_argument("--eigen-smooth", action="store_true", help="first principal component")
    args = parser.parse_args(argv)
    check_args(args, methods)
    return args


def create_model(name: str, pretrained: bool, pattern: str) -> nn.Module:
    """A timm model in eval mode: pretrained when the weights can be had, else random.

    ``pattern`` is the ``timm.list_models`` pattern suggested when ``name`` is unknown.
    """
    if pretrained and (offline_forced() or not host_reachable("huggingface.co")):
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
            random_weights_note(
                f"pretrained weights for {name} are not available offline or could not be "
                f"downloaded ({type(error).__name__})",
                "pass --no-pretrained to skip the attempt",
            )
    else:
        random_weights_note("--no-pretrained")
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
    image: np.ndarray,
    model: nn.Module,
    target_layers: list[nn.Module],
    reshape_transform: Callable[[torch.Tensor], torch.Tensor],
    prefix: str,
) -> None:
    """Explain the model's top class on ``image`` (RGB float, any size; the model gets it
    resized to its input size) and write ``{prefix}_{method}_cam.jpg`` at the image's size."""
    model = model.to(args.device)
    cfg = model.pretrained_cfg
    height, width = cfg.get("input_size", (3, 224, 224))[-2:]
    rgb = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    input_tensor = preprocess_image(rgb, mean=mean, std=std).to(args.device)
    with torch.no_grad():
        top = int(model(input_tensor)[0].argmax())
    print(f"predicted class: {imagenet_name(top, model.num_classes)}")

    cam_class = cam_methods()[args.method]
    kwargs = {}
    if cam_class is pytorch_grad_cam.AblationCAM:  # ablate channels of the token layout
        kwargs["ablation_layer"] = AblationLayerVit()
    # Only the options asked for: methods such as SESS and RefineCAM take neither.
    smoothing = {name: True for name in ("aug_smooth", "eigen_smooth") if getattr(args, name)}
    try:
        with cam_class(model, target_layers, reshape_transform=reshape_transform, **kwargs) as cam:
            grayscale_cam = cam(input_tensor, targets=[ClassifierOutputTarget(top)], **smoothing)[0]
    except (ValueError, TypeError, RuntimeError) as error:
        fail(f"--method {args.method} failed on {args.model}: {one_line(error)}")
    save_rgb(args.output_dir, f"{prefix}_{args.method}_cam.jpg", overlay(image, grayscale_cam))

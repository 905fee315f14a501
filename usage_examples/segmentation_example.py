"""Explain a torchvision semantic segmentation model (DeepLabV3, FCN, LR-ASPP) on one class.

Usage::

    python usage_examples/segmentation_example.py [--image-path IMG] [--method gradcam]
        [--model deeplabv3_mobilenet_v3_large] [--category NAME] [--size 320]
        [--no-pretrained] [--device auto] [--output-dir output]

How it works:

1. torchvision's segmentation models return a dict; ``SegmentationModelOutputWrapper`` returns
   its ``"out"`` entry, the (B, classes, H, W) scores, so that a CAM can use the model.
2. The pixels predicted as the class to explain (``--category``, one of the 21 Pascal VOC names;
   by default the class covering most of the image besides the background) make a mask.
3. The target, ``SemanticSegmentationTarget(category, mask)``, is the sum of that class's scores
   over the mask: the map shows what makes the model label those pixels so.
4. The target layer is the backbone's last block (``layer4`` of a ResNet, the last block of a
   MobileNet's features).

Writes into ``--output-dir``, at the input image's own size: ``segmentation.jpg`` (the mask of
the class) and ``{method}_cam.jpg``. Pretrained weights (COCO with the VOC classes) are
downloaded once; without them the model has random weights and the map has no meaning (a note
says so).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

from pytorch_grad_cam.utils.image import IMAGENET_MEAN, IMAGENET_STD, preprocess_image
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    cam_methods,
    check_args,
    example_parser,
    fail,
    load_rgb,
    note,
    one_line,
    overlay,
    resized,
    save_rgb,
    torchvision_model,
)

MODELS = (
    "deeplabv3_mobilenet_v3_large",  # small and fast: the default
    "deeplabv3_resnet50",  # the model of the original tutorial
    "deeplabv3_resnet101",
    "fcn_resnet50",
    "fcn_resnet101",
    "lraspp_mobilenet_v3_large",
)


class SegmentationModelOutputWrapper(nn.Module):
    """A torchvision segmentation model that returns only its (B, classes, H, W) scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    methods = list(cam_methods())
    parser = example_parser(__doc__.splitlines()[0], methods, default_method="gradcam")
    parser.add_argument("--model", default=MODELS[0], choices=MODELS, help="torchvision model")
    parser.add_argument("--category", help="class to explain, e.g. car (default: the largest)")
    parser.add_argument(
        "--size",
        type=int,
        default=320,
        help="shorter side of the model's input in pixels (default 320)",
    )
    args = parser.parse_args(argv)
    check_args(args, methods)
    if args.size < 32:
        fail(f"--size must be at least 32; got {args.size}")
    return args


def pick_category(asked: str | None, predicted: np.ndarray, names: list[str]) -> int:
    """The class to explain: ``asked`` (a name), else the largest predicted non-background one."""
    if asked is not None:
        lowered = [name.lower() for name in names]
        if asked.lower() not in lowered:
            fail(f"unknown --category {asked!r}; choose one of: {', '.join(names[1:])}")
        return lowered.index(asked.lower())
    counts = np.bincount(predicted.ravel(), minlength=len(names))
    counts[0] = 0  # the background
    return int(counts.argmax()) if counts.any() else 0


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run the example; ``argv`` defaults to the command line. Returns the map by method."""
    args = parse_args(argv)
    image = load_rgb(args.image_path)
    height, width = image.shape[:2]
    scale = args.size / min(height, width)
    rgb = resized(image, (round(width * scale), round(height * scale)))  # the model's input
    weights = torchvision.models.get_model_weights(args.model).DEFAULT
    names = weights.meta["categories"]  # the Pascal VOC classes, without a download
    model, _ = torchvision_model(
        torchvision.models.get_model_builder(args.model), weights, not args.no_pretrained
    )
    model = SegmentationModelOutputWrapper(model).to(args.device).eval()
    input_tensor = preprocess_image(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD).to(args.device)

    with torch.no_grad():
        scores = model(input_tensor)[0]  # (classes, H, W)
    predicted = scores.argmax(0).cpu().numpy()
    category = pick_category(args.category, predicted, names)
    mask = np.float32(predicted == category)
    if not mask.any():
        note(f"no pixel is predicted as {names[category]}; explaining its score everywhere")
        mask[:] = 1
    print(f"explaining: {names[category]} ({category}), {mask.mean():.0%} of the pixels")

    # The mask of the class in white over a darkened image.
    shown_mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    shown = np.uint8(255 * (0.4 * image + 0.6 * shown_mask[..., None]))
    save_rgb(args.output_dir, "segmentation.jpg", shown)

    # The backbone's last block: layer4 of a ResNet, the last block of a MobileNet.
    target_layers = [list(model.model.backbone.children())[-1]]
    targets = [SemanticSegmentationTarget(category, mask)]
    try:
        with cam_methods()[args.method](model, target_layers) as cam:
            grayscale_cam = cam(input_tensor, targets=targets)[0]
    except (ValueError, TypeError, RuntimeError, IndexError) as error:
        fail(f"--method {args.method} failed on {args.model}: {one_line(error)}")
    save_rgb(args.output_dir, f"{args.method}_cam.jpg", overlay(image, grayscale_cam))
    return {args.method: grayscale_cam}


if __name__ == "__main__":
    main()

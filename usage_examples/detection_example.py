"""Explain the detections of a torchvision Faster R-CNN (EigenCAM and AblationCAM by default).

Usage::

    python usage_examples/detection_example.py [--image-path IMG]
        [--method eigencam,ablationcam] [--model fasterrcnn_mobilenet_v3_large_320_fpn]
        [--score-threshold 0.5] [--max-boxes 5] [--ratio-channels-to-ablate 0.05]
        [--no-pretrained] [--device auto] [--output-dir output]

How it works:

1. The detector runs once; the detections scoring at least ``--score-threshold`` are the ones
   to explain (at most ``--max-boxes``).
2. The target is ``FasterRCNNBoxScoreTarget(labels, boxes)``: for each of those boxes, the
   IoU plus the score of the detection that matches it best (same label, IoU > 0.5). A CAM
   method reruns the detector and explains that sum.
3. The target layer is the whole ``model.backbone``: it returns the feature pyramid (an
   ordered dict of maps of several sizes), and ``fasterrcnn_reshape_transform`` resizes them
   to one size and stacks them into a single (B, C, H, W) activation.
4. EigenCAM needs no gradient and no target (the first principal component of the pyramid).
   AblationCAM zeroes one pyramid channel at a time (``AblationLayerFasterRCNN``) and measures
   how much the target drops; ``--ratio-channels-to-ablate`` ablates only that share of the
   channels, chosen by how much they overlap the principal component (1.0: all of them, the
   paper's method, one detector pass per channel: slow on a CPU). Gradient methods work too.

Writes into ``--output-dir``: ``detections.jpg`` (the explained boxes), and per method
``{method}_cam.jpg`` (the map) and ``{method}_in_boxes.jpg`` (the map rescaled to [0, 1] inside
each box and zero outside, which shows what each box is made of).

Pretrained COCO weights are downloaded once. Without them (offline, or ``--no-pretrained``)
the detector has random weights: nothing reaches a real score, so the example explains the
``--max-boxes`` highest-scoring detections instead, and says that the maps have no meaning.
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

import pytorch_grad_cam
from pytorch_grad_cam.ablation_layer import AblationLayerFasterRCNN
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    RANDOM_WEIGHTS,
    cam_methods,
    check_args,
    example_parser,
    fail,
    load_rgb,
    note,
    one_line,
    save_rgb,
    torchvision_model,
)

MODELS = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",  # small and fast: the default
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_resnet50_fpn",  # the model of the original tutorial
    "fasterrcnn_resnet50_fpn_v2",
)
COLORS = np.random.default_rng(0).uniform(64, 255, size=(91, 3))  # one colour per COCO label


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    methods = list(cam_methods())
    parser = example_parser(
        __doc__.splitlines()[0], methods, default_method="eigencam,ablationcam", multiple=True
    )
    parser.add_argument("--model", default=MODELS[0], choices=MODELS, help="torchvision detector")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="explain detections scoring this much"
    )
    parser.add_argument("--max-boxes", type=int, default=5, help="explain at most this many")
    parser.add_argument(
        "--ratio-channels-to-ablate",
        type=float,
        default=0.05,
        help="AblationCAM: share of the pyramid's channels to ablate (default 0.05; 1.0 = all)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="AblationCAM: ablated copies per pass"
    )
    args = parser.parse_args(argv)
    check_args(args, methods, multiple=True)
    if not 0 < args.ratio_channels_to_ablate <= 1:
        fail(f"--ratio-channels-to-ablate must be in (0, 1]; got {args.ratio_channels_to_ablate}")
    if args.max_boxes < 1 or args.batch_size < 1:
        fail("--max-boxes and --batch-size must be at least 1")
    return args


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, labels: list[int], names: list[str]) -> None:
    """Draw labelled boxes onto an RGB uint8 picture, in place."""
    for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
        color = tuple(int(c) for c in COLORS[label % len(COLORS)])
        cv2.rectangle(rgb, (x1, y1), (x2, y2), color, 2)
        cv2.putText(
            rgb, names[label], (x1 + 2, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1
        )


def map_in_boxes(grayscale_cam: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The map rescaled to [0, 1] inside each box (the largest value where boxes overlap),
    zero outside them."""
    height, width = grayscale_cam.shape
    out = np.zeros_like(grayscale_cam)
    for x1, y1, x2, y2 in boxes.astype(int):
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, width - 1), min(y2, height - 1)
        if x2 > x1 and y2 > y1:
            inside = scale_cam_image(grayscale_cam[y1:y2, x1:x2].copy())
            out[y1:y2, x1:x2] = np.maximum(out[y1:y2, x1:x2], inside)
    return out


def make_cam(
    name: str, model: torch.nn.Module, args: argparse.Namespace
) -> pytorch_grad_cam.BaseCAM:
    """The CAM object for method ``name`` on the detector's feature pyramid."""
    cam_class = cam_methods()[name]
    kwargs = {}
    if cam_class is pytorch_grad_cam.AblationCAM:
        kwargs = {
            "ablation_layer": AblationLayerFasterRCNN(),
            "ratio_channels_to_ablate": args.ratio_channels_to_ablate,
            "batch_size": args.batch_size,
        }
    return cam_class(
        model, [model.backbone], reshape_transform=fasterrcnn_reshape_transform, **kwargs
    )


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run the example; ``argv`` defaults to the command line. Returns the map by method."""
    args = parse_args(argv)
    rgb = load_rgb(args.image_path, None if args.image_path else 320)
    weights = torchvision.models.get_model_weights(args.model).DEFAULT
    names = weights.meta["categories"]  # COCO class names, without a download
    # box_score_thresh=0 keeps every detection, so that a random detector (whose scores are
    # about 1/91) still returns boxes; the script picks by --score-threshold itself.
    model, pretrained = torchvision_model(
        torchvision.models.get_model_builder(args.model),
        weights,
        pretrained=not args.no_pretrained,
        box_score_thresh=0.0,
    )
    model = model.to(args.device)

    # The detector takes RGB in [0, 1] and normalises and resizes internally.
    input_tensor = torch.from_numpy(rgb.transpose(2, 0, 1))[None].to(args.device)
    with torch.no_grad():
        detections = model(input_tensor)[0]
    scores = detections["scores"].cpu()
    keep = torch.nonzero(scores >= args.score_threshold).flatten()[: args.max_boxes]
    if len(keep) == 0:
        reason = "" if pretrained else f" ({RANDOM_WEIGHTS})"
        note(
            f"no detection scores {args.score_threshold} or more{reason}; explaining the "
            f"{min(args.max_boxes, len(scores))} highest-scoring ones"
        )
        keep = torch.arange(min(args.max_boxes, len(scores)))
    if len(keep) == 0:
        fail("the detector found nothing in the image")
    boxes = detections["boxes"][keep].cpu().numpy()
    labels = [int(label) for label in detections["labels"][keep]]
    for box, label, score in zip(boxes, labels, scores[keep]):
        corners = ", ".join(f"{v:.0f}" for v in box)
        print(f"detected: {names[label]} ({label}), score {score:.3f}, box ({corners})")

    picture = np.uint8(255 * rgb)
    draw_boxes(picture, boxes, labels, names)
    save_rgb(args.output_dir, "detections.jpg", picture)

    targets = [FasterRCNNBoxScoreTarget(labels=labels, bounding_boxes=boxes)]
    maps = {}
    for name in args.methods:
        try:
            with make_cam(name, model, args) as cam:
                grayscale_cam = cam(input_tensor, targets=targets)[0]
        except (ValueError, TypeError, RuntimeError, IndexError) as error:
            fail(f"--method {name} failed on {args.model}: {one_line(error)}")
        for suffix, mask in (
            ("cam", grayscale_cam),
            ("in_boxes", map_in_boxes(grayscale_cam, boxes)),
        ):
            overlay = show_cam_on_image(rgb, mask, use_rgb=True)
            draw_boxes(overlay, boxes, labels, names)
            save_rgb(args.output_dir, f"{name}_{suffix}.jpg", overlay)
        maps[name] = grayscale_cam
    return maps


if __name__ == "__main__":
    main()

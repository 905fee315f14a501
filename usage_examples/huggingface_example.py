"""Explain a HuggingFace ``transformers`` image classifier (ViT or ConvNeXt).

Usage::

    python usage_examples/huggingface_example.py [--image-path IMG] [--method gradcam]
        [--model google/vit-base-patch16-224] [--target-category N]
        [--no-pretrained] [--device auto] [--output-dir output]

How it works:

1. A ``transformers`` classifier returns an output object whose ``.logits`` holds the scores.
   The CAM methods and the targets read ``.logits`` themselves: the model is used as it is,
   with no wrapper.
2. The target layer of a ViT is the last encoder layer's ``layernorm_before`` (as for timm's
   ``blocks[-1].norm1``), its tokens laid out as a grid by ``vit_reshape_transform``; that of a
   ConvNeXt is its last stage, a (B, C, 7, 7) map.
3. ``--model`` is a hub name: ViT models (``google/vit-*``, ``facebook/deit-*-patch16-224``) and
   ConvNeXt ones (``facebook/convnext-*``).

Writes ``{method}_cam.jpg`` into ``--output-dir``, at the input image's own size. Weights are
downloaded once from the hub. Without them (offline and not cached, or ``--no-pretrained``)
the example builds a small model of the same family from a configuration, with random
weights: the map has no meaning, but every step runs. Needs ``pip install transformers``
(the ``examples`` extra).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pytorch_grad_cam.utils.image import IMAGENET_MEAN, IMAGENET_STD, preprocess_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    cam_methods,
    check_args,
    example_parser,
    fail,
    hub_model,
    load_rgb,
    one_line,
    overlay,
    prepare_hub,
    require,
    resized,
    save_rgb,
)

SIZE = 224
# Mean and standard deviation of the families' published image processors.
NORMALISATION = {"vit": ((0.5,) * 3, (0.5,) * 3), "convnext": (IMAGENET_MEAN, IMAGENET_STD)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    methods = list(cam_methods())
    parser = example_parser(__doc__.splitlines()[0], methods, default_method="gradcam")
    parser.add_argument(
        "--model", default="google/vit-base-patch16-224", help="hub name of a ViT or ConvNeXt"
    )
    parser.add_argument(
        "--target-category", type=int, metavar="N", help="class to explain (default: the top one)"
    )
    args = parser.parse_args(argv)
    check_args(args, methods)
    return args


def small_model(family: str) -> nn.Module:
    """A small randomly initialised classifier of ``family`` (1000 classes), from a config."""
    transformers = require("transformers")
    if family == "convnext":
        config = transformers.ConvNextConfig(
            hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=1000
        )
        return transformers.ConvNextForImageClassification(config)
    config = transformers.ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=SIZE,
        patch_size=16,
        num_labels=1000,
    )
    return transformers.ViTForImageClassification(config)


def target_layer_and_transform(model: nn.Module) -> tuple[nn.Module, Any]:
    """The layer to explain and its reshape transform (None for ConvNeXt)."""
    if getattr(model, "convnext", None) is not None:
        return model.convnext.encoder.stages[-1], None
    vit = getattr(model, "vit", None)
    if vit is None:
        fail(f"--model {type(model).__name__} is neither a ViT nor a ConvNeXt classifier")
    # transformers 5 keeps the layers in vit.layers, earlier versions in vit.encoder.layer.
    layers = getattr(vit, "layers", None) or vit.encoder.layer
    grid = model.config.image_size // model.config.patch_size
    return layers[-1].layernorm_before, partial(
        vit_reshape_transform, height=grid, width=grid, num_prefix_tokens=1
    )


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run the example; ``argv`` defaults to the command line. Returns the map by method."""
    args = parse_args(argv)
    image = load_rgb(args.image_path)
    rgb = resized(image, SIZE)  # the model's input
    prepare_hub()  # before transformers is imported
    transformers = require("transformers")
    family = "convnext" if "convnext" in args.model.lower() else "vit"
    model, _ = hub_model(
        args.model,
        not args.no_pretrained,
        lambda: transformers.AutoModelForImageClassification.from_pretrained(args.model),
        lambda: small_model(family),
    )
    model = model.to(args.device).eval()
    layer, reshape_transform = target_layer_and_transform(model)
    family = "convnext" if reshape_transform is None else "vit"

    mean, std = NORMALISATION[family]
    input_tensor = preprocess_image(rgb, mean=mean, std=std).to(args.device)
    with torch.no_grad():
        logits = model(pixel_values=input_tensor).logits[0]
    top = int(logits.argmax())
    labels = model.config.id2label
    print(f"predicted class: {top} ({labels[top]})")
    category = top if args.target_category is None else args.target_category
    if not 0 <= category < len(logits):
        fail(f"--target-category {category} is out of range; the model has {len(logits)} classes")

    try:
        with cam_methods()[args.method](model, [layer], reshape_transform) as cam:
            grayscale_cam = cam(input_tensor, targets=[ClassifierOutputTarget(category)])[0]
    except (ValueError, TypeError, RuntimeError) as error:
        fail(f"--method {args.method} failed on {args.model}: {one_line(error)}")
    save_rgb(args.output_dir, f"{args.method}_cam.jpg", overlay(image, grayscale_cam))
    return {args.method: grayscale_cam}


if __name__ == "__main__":
    main()

"""CAM of a timm Vision Transformer (ViT / DeiT).

Usage::

    python usage_examples/vit_example.py [--image-path IMG] [--method gradcam]
        [--model deit_tiny_patch16_224] [--no-pretrained] [--device auto|cpu|cuda|mps]
        [--output vit_gradcam_cam.jpg] [--aug-smooth] [--eigen-smooth]

A ViT block outputs tokens (B, prefix + H*W, C): the class token (DeiT distilled models add a
distillation token), then one token per image patch. ``vit_reshape_transform`` drops the prefix
tokens and lays the patch tokens out as a (B, C, H, W) map. The target layer is the last
block's ``norm1``: the classifier reads only the class token of the last block's output, so
the patch tokens there get no gradient, while ``norm1`` feeds the last attention, where the
class token looks at every patch.

Pretrained weights come from the Hugging Face hub (or its local cache). Without a network
(or with ``PYTORCH_GRAD_CAM_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) and nothing cached, the example
prints a note and goes on with random weights, so the map explains an untrained model.
Without ``--image-path`` it explains a generated image (a disc and a square).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from functools import partial

import cv2
import numpy as np
import torch
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam.demo.shapes import make_shapes_image
from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

METHODS = {
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
}


def fail(message: str) -> None:
    """Report a user error on one line and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the weights host opens within ``timeout`` seconds."""
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # behind a proxy a direct probe says nothing; let the download try
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def create_model(name: str, pretrained: bool) -> nn.Module:
    """A timm model in eval mode: pretrained when the weights can be had, else random."""
    offline = any(
        os.environ.get(v, "") not in ("", "0")
        for v in ("PYTORCH_GRAD_CAM_OFFLINE", "HF_HUB_OFFLINE")
    )
    if pretrained and (offline or not hub_reachable()):
        os.environ["HF_HUB_OFFLINE"] = "1"  # cache only: no retries against a dead network
    try:
        import timm  # after HF_HUB_OFFLINE is settled: huggingface_hub reads it when imported
    except ImportError:
        fail("this example needs timm: pip install timm")

    if not timm.is_model(name):
        fail(f"unknown --model {name!r}; see timm.list_models('*vit*')")
    if pretrained:
        try:
            return timm.create_model(name, pretrained=True).eval()
        except Exception as error:  # no network / not cached: many exception types
            print(
                f"note: pretrained weights for {name} are not available offline or could not be "
                f"downloaded ({type(error).__name__}); using random weights, so the map explains "
                "an untrained model (pass --no-pretrained to skip the attempt)",
                file=sys.stderr,
            )
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


def main(argv: Sequence[str] | None = None) -> None:
    """Run the example; ``argv`` defaults to the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-path", help="image to explain (default: a generated one)")
    available = [m for m, cls in METHODS.items() if hasattr(pytorch_grad_cam, cls)]
    parser.add_argument("--method", default="gradcam", help=", ".join(available))
    parser.add_argument("--model", default="deit_tiny_patch16_224", help="timm ViT/DeiT name")
    parser.add_argument("--no-pretrained", action="store_true", help="use random weights")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--output", help="overlay path (default: vit_{method}_cam.jpg)")
    parser.add_argument("--aug-smooth", action="store_true", help="test-time augmentation")
    parser.add_argument("--eigen-smooth", action="store_true", help="first principal component")
    args = parser.parse_args(argv)

    method = args.method.lower()
    if method not in available:
        fail(f"unknown --method {args.method!r}; choose one of: {', '.join(available)}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but CUDA is not available; pass --device cpu")
    if args.device == "mps" and not torch.backends.mps.is_available():
        fail("--device mps but MPS is not available; pass --device cpu")

    if args.image_path:
        bgr = cv2.imread(args.image_path, cv2.IMREAD_COLOR)
        if bgr is None:
            fail(f"--image-path {args.image_path!r}: missing or not an image")
        rgb = np.float32(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) / 255
    else:
        rgb, _, _ = make_shapes_image(np.random.default_rng(0), classes=(0, 1), size=224)

    model = create_model(args.model, pretrained=not args.no_pretrained).to(args.device)
    if not hasattr(model, "blocks") or not hasattr(model, "num_prefix_tokens"):
        fail(f"--model {args.model!r} is not a ViT-style timm model (no .blocks)")
    cfg = model.pretrained_cfg
    height, width = cfg.get("input_size", (3, 224, 224))[-2:]
    rgb = cv2.resize(rgb, (width, height))
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    input_tensor = preprocess_image(rgb, mean=mean, std=std).to(args.device)

    grid_h, grid_w = model.patch_embed.grid_size
    reshape = partial(
        vit_reshape_transform,
        height=grid_h,
        width=grid_w,
        num_prefix_tokens=model.num_prefix_tokens,
    )
    kwargs = {}
    if method == "ablationcam":  # ablate token channels, not (B, C, H, W) channels
        from pytorch_grad_cam.ablation_layer import AblationLayerVit

        kwargs["ablation_layer"] = AblationLayerVit()
    cam_class = getattr(pytorch_grad_cam, METHODS[method])
    with torch.no_grad():
        top = int(model(input_tensor)[0].argmax())
    print(f"predicted class: {imagenet_name(top, model.num_classes)}")
    with cam_class(model, [model.blocks[-1].norm1], reshape_transform=reshape, **kwargs) as cam:
        grayscale_cam = cam(
            input_tensor,
            targets=[ClassifierOutputTarget(top)],
            aug_smooth=args.aug_smooth,
            eigen_smooth=args.eigen_smooth,
        )[0]

    output = args.output or f"vit_{method}_cam.jpg"
    overlay = show_cam_on_image(rgb, grayscale_cam, use_rgb=True)
    if not cv2.imwrite(output, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        fail(f"could not write --output {output!r}")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()

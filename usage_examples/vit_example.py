"""CAM of a timm Vision Transformer (ViT / DeiT).

Usage::

    python usage_examples/vit_example.py [--image-path IMG] [--method gradcam]
        [--model deit_tiny_patch16_224] [--no-pretrained] [--device auto|cpu|cuda|mps]
        [--output-dir output] [--aug-smooth] [--eigen-smooth]

A ViT block outputs tokens (B, prefix + H*W, C): the class token (DeiT distilled models add a
distillation token), then one token per image patch. ``vit_reshape_transform`` drops the prefix
tokens and lays the patch tokens out as a (B, C, H, W) map. The target layer is the last
block's ``norm1``: the classifier reads only the class token of the last block's output, so
the patch tokens there get no gradient, while ``norm1`` feeds the last attention, where the
class token looks at every patch.

Writes ``vit_{method}_cam.jpg`` into ``--output-dir``, at the input image's own size.
Without ``--image-path`` it explains a generated image (a disc and a square). Offline and
without cached weights it says so and uses random weights (see ``timm_example_utils.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import fail, load_rgb  # noqa: E402
from timm_example_utils import create_model, explain, parse_args  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    """Run the example; ``argv`` defaults to the command line."""
    args = parse_args(argv, __doc__.splitlines()[0], "deit_tiny_patch16_224")
    rgb = load_rgb(args.image_path)
    model = create_model(args.model, pretrained=not args.no_pretrained, pattern="*vit*")
    if not hasattr(model, "blocks") or not hasattr(model, "num_prefix_tokens"):
        fail(f"--model {args.model!r} is not a ViT-style timm model (no .blocks)")
    grid_h, grid_w = model.patch_embed.grid_size
    reshape = partial(
        vit_reshape_transform,
        height=grid_h,
        width=grid_w,
        num_prefix_tokens=model.num_prefix_tokens,
    )
    explain(args, rgb, model, [model.blocks[-1].norm1], reshape, "vit")


if __name__ == "__main__":
    main()

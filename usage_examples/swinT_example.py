"""CAM of a timm Swin Transformer.

Usage::

    python usage_examples/swinT_example.py [--image-path IMG] [--method gradcam]
        [--model swin_tiny_patch4_window7_224] [--no-pretrained] [--device auto|cpu|cuda|mps]
        [--output-dir output] [--aug-smooth] [--eigen-smooth]

Swin has no class token: the classifier averages the last stage's patch features. timm's Swin
blocks work on channels-last maps (B, H, W, C) (older versions: tokens (B, H*W, C));
``swinT_reshape_transform`` turns either into (B, C, H, W). The target layer is the last
block's ``norm1`` (a 7x7 grid at 224x224).

Writes ``swinT_{method}_cam.jpg`` into ``--output-dir``, at the input image's own size.
Without ``--image-path`` it explains a generated image (a disc and a square). Offline and
without cached weights it says so and uses random weights (see ``timm_example_utils.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import fail, load_rgb  # noqa: E402
from timm_example_utils import create_model, explain, parse_args  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    """Run the example; ``argv`` defaults to the command line."""
    args = parse_args(argv, __doc__.splitlines()[0], "swin_tiny_patch4_window7_224")
    rgb = load_rgb(args.image_path)
    model = create_model(args.model, pretrained=not args.no_pretrained, pattern="swin*")
    if not hasattr(model, "layers") or not hasattr(model.layers[-1], "blocks"):
        fail(f"--model {args.model!r} is not a timm Swin model (no .layers[-1].blocks)")
    layer = model.layers[-1].blocks[-1].norm1
    explain(args, rgb, model, [layer], swinT_reshape_transform, "swinT")


if __name__ == "__main__":
    main()

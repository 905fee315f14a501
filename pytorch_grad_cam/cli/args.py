"""The command line's arguments. Parsing imports neither torch nor the methods, so ``--help``
and argument errors are instant."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

# Command-line name -> class name in pytorch_grad_cam.
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
    "refinecam": "RefineCAM",
    "sess": "SESS",
    "fem": "FEM",
    "segeigencam": "SegEigenCAM",
}
EXAMPLE_MODELS = (
    "resnet18, resnet50, vgg16, densenet121, mobilenet_v3_small, efficientnet_b0, "
    "convnext_tiny, regnet_y_400mf, vit_b_16, swin_t"
)
OFFLINE_ENV = "PYTORCH_GRAD_CAM_OFFLINE"
MAX_DEMO_IMAGES = 100_000  # --num-images: generated images are written to --output-dir
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

EPILOG = f"""\
what is written where (under --output-dir):
  one image     {{method}}_cam.jpg (overlay), {{method}}_gb.jpg (guided backpropagation) and
                {{method}}_cam_gb.jpg (their product), at the image's own size; with several
                --target-category values {{method}}_{{N}}_*.jpg per class
  many images   (several files, a directory or a glob) maps/<image>.png (the map, 16-bit
                lossless; .npy with --save-maps npy), overlays/<image>.jpg, one line per
                explained image in manifest.jsonl, and index.html (a gallery that opens
                from the file system: class filter, sort by confidence)
  --demo        {{method}}_demo.jpg; with --num-images N a dataset run on N generated
                images and the share of each map on its shape

environment: {OFFLINE_ENV}=1 never downloads weights; TQDM_DISABLE=1 hides progress bars.
several processes: torchrun --nproc-per-node N -m pytorch_grad_cam --image-path DIR ...

examples:
  grad-cam --image-path dog.jpg
  grad-cam --image-path dog.jpg --method gradcam++ --target-category 281
  grad-cam --image-path photos/ --model resnet50 --batch-size 64 --output-dir out
  grad-cam --image-path 'val/*/*.JPEG' --method scorecam --device cuda
  grad-cam --demo --num-images 200 --output-dir out
  python -m pytorch_grad_cam --demo --method eigencam --aug-smooth --eigen-smooth
"""


class CliError(Exception):
    """A user error, reported as one ``error: ...`` line and exit status 2."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {value}")
    return value


def demo_image_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_DEMO_IMAGES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DEMO_IMAGES}; got {value}")
    return value


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32); got {value}")
    return value


class Parser(argparse.ArgumentParser):
    """Argument errors are one ``error: ...`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (grad-cam --help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="grad-cam",
        description="Explain a classifier's predictions on images with a CAM method.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--image-path",
        action="extend",
        nargs="+",
        metavar="PATH",
        help="image files, directories (searched recursively) or globs; repeatable, and an "
        "unquoted glob the shell expanded works too. More than one image is a dataset run",
    )
    add(
        "--method",
        default="gradcam",
        metavar="NAME",
        help=f"CAM method (default: %(default)s): {', '.join(METHOD_NAMES)}",
    )
    add(
        "--target-category",
        type=non_negative_int,
        action="extend",
        nargs="+",
        metavar="N",
        help="class indices to explain (repeatable); default: each image's top class",
    )
    add(
        "--model",
        default="resnet50",
        help=f"torchvision classifier (default: %(default)s), e.g. {EXAMPLE_MODELS}",
    )
    add(
        "--weights",
        default="DEFAULT",
        help="DEFAULT (pretrained, downloaded once), none (random) or a state_dict file "
        "(default: %(default)s)",
    )
    add(
        "--target-layer",
        action="append",
        metavar="DOTTED.PATH",
        help="layer to explain, e.g. layer4.-1 (repeatable), or auto; default: layer4.-1 "
        "for ResNets, auto otherwise (auto also picks the transform ViT/Swin layers need)",
    )
    add(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="where the model runs; auto prefers CUDA, then MPS, then the CPU "
        "(default: %(default)s)",
    )
    add("--use-cuda", action="store_true", help="deprecated: same as --device cuda")
    add(
        "--aug-smooth",
        "--aug_smooth",
        dest="aug_smooth",
        action="store_true",
        help="average over flipped and rescaled copies of the images",
    )
    add(
        "--eigen-smooth",
        "--eigen_smooth",
        dest="eigen_smooth",
        action="store_true",
        help="use the first principal component of the weighted activations",
    )
    add(
        "--batch-size",
        type=positive_int,
        default=32,
        help="images per forward pass, and masked/ablated copies per pass for "
        "ScoreCAM/AblationCAM (default: %(default)s)",
    )
    add(
        "--workers",
        type=non_negative_int,
        default=None,
        help="image-decoding worker processes of a dataset run (default: up to 4)",
    )
    add("--output-dir", default="output", help="where to write (default: %(default)s)")
    add(
        "--save-maps",
        choices=["png", "npy"],
        default="png",
        help="map format of a dataset run: 16-bit PNG or float32 .npy (default: %(default)s)",
    )
    add(
        "--overwrite",
        action="store_true",
        help="recompute images the manifest already has for this method, model and weights "
        "(only their lines are replaced)",
    )
    add("--no-progress", action="store_true", help="no progress bar")
    add(
        "--demo",
        action="store_true",
        help="explain generated shapes images with the bundled model, fully offline "
        "(--target-category 0 or 1 picks one class; --image-path, --model, --weights and "
        "--target-layer are not used)",
    )
    add(
        "--num-images",
        type=demo_image_count,
        default=None,
        metavar="N",
        help=f"with --demo: explain N generated images as a dataset run (at most "
        f"{MAX_DEMO_IMAGES})",
    )
    add(
        "--seed",
        type=seed,
        default=0,
        help="seed of --demo images and random weights (default: %(default)s)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (the 2021 spellings ``--use-cuda``/``--aug_smooth`` included)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_images is not None and not args.demo:
        parser.error("--num-images goes with --demo")
    if args.method.lower() not in METHOD_NAMES:
        parser.error(f"unknown --method {args.method!r}; choose one of: {', '.join(METHOD_NAMES)}")
    args.method = args.method.lower()
    return args

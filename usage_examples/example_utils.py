"""What the tutorial examples share: the command line conventions, pretrained weights with an
offline fallback, the image to explain and the pictures written.

Conventions (the same as ``cam.py``):

* pictures go into ``--output-dir`` (default ``output/``), nothing is written elsewhere;
* a picture of the input image has the image's own resolution and aspect ratio: the model gets
  the image resized to its input size, and the map is resized back (bilinearly) to the image;
* ``--method`` takes the package's method names (``gradcam``, ``gradcam++``, ``eigencam``, ...);
* pretrained weights are downloaded once when there is a network; without one (or with
  ``PYTORCH_GRAD_CAM_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) and nothing cached, a one-line note says
  so and the example goes on with random weights: the map then has no meaning, but every step
  of the code runs (every example says so with :func:`random_weights_note`);
* a user mistake prints one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import cv2
import numpy as np
import torch
from torch import nn

import pytorch_grad_cam
from pytorch_grad_cam.demo.shapes import make_shapes_image
from pytorch_grad_cam.utils.image import show_cam_on_image

OFFLINE_ENVS = ("PYTORCH_GRAD_CAM_OFFLINE", "HF_HUB_OFFLINE")
RANDOM_WEIGHTS = "random weights: the map has no meaning"
DOWNLOAD_TIMEOUT_S = 15
# Methods that do not explain target layers (FullGrad) or need more than a layer and a target.
NOT_LAYER_METHODS = ("FullGrad",)


def fail(message: str) -> NoReturn:
    """Report a user error on one line and exit with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def note(message: str) -> None:
    """One ``note: ...`` line on stderr."""
    print(f"note: {message}", file=sys.stderr)


def random_weights_note(reason: str, hint: str = "") -> None:
    """The note of a model with random weights: ``note: REASON; using random weights: the map
    has no meaning (HINT)``."""
    note(f"{reason}; using {RANDOM_WEIGHTS}" + (f" ({hint})" if hint else ""))


def is_cam_method(cls: object) -> bool:
    """Whether ``cls`` is a CAM method: a BaseCAM subclass, or a method built on one (FinerCAM)."""
    bases: tuple[type, ...] = (pytorch_grad_cam.BaseCAM,)
    try:
        from pytorch_grad_cam._composition import ComposedCAM

        bases += (ComposedCAM,)
    except ImportError:
        pass
    return isinstance(cls, type) and issubclass(cls, bases) and cls not in bases


def cam_methods(exclude: Sequence[str] = NOT_LAYER_METHODS) -> dict[str, type]:
    """Command-line name -> class of the package's CAM methods (``GradCAMPlusPlus`` is
    ``gradcam++``, ``KPCA_CAM`` is ``kpcacam``), without the classes named in ``exclude``."""
    names = getattr(pytorch_grad_cam, "__all__", None) or list(vars(pytorch_grad_cam))
    methods = {}
    for name in names:
        cls = getattr(pytorch_grad_cam, name, None)
        if is_cam_method(cls) and name not in exclude:
            methods[name.lower().replace("plusplus", "++").replace("_", "")] = cls
    return dict(sorted(methods.items()))


def example_parser(
    description: str,
    methods: Sequence[str] | None = None,
    default_method: str | None = None,
    multiple: bool = False,
    image: bool = True,
    pretrained: bool = True,
) -> argparse.ArgumentParser:
    """The options every example has.

    Args:
        description: the ``--help`` text's first line.
        methods: the method names ``--method`` accepts (no ``--method`` when None).
        default_method: its default (the first method when None).
        multiple: ``--method`` takes a comma-separated list (``all`` for every method).
        image: add ``--image-path``.
        pretrained: add ``--no-pretrained``.
    """
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Set PYTORCH_GRAD_CAM_OFFLINE=1 to never try to download weights.",
    )
    if image:
        parser.add_argument("--image-path", help="image to explain (default: a generated one)")
    if methods:
        default = default_method or methods[0]
        listed = "comma-separated list of " if multiple else ""
        everything = ", or all" if multiple else ""
        parser.add_argument(
            "--method",
            default=default,
            help=f"CAM method ({listed}{', '.join(methods)}{everything}; default: {default})",
        )
    if pretrained:
        parser.add_argument(
            "--no-pretrained", action="store_true", help="use random weights (no download)"
        )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--output-dir", default="output", help="where to write the pictures (default: output)"
    )
    return parser


def check_args(
    args: argparse.Namespace, methods: Sequence[str] | None = None, multiple: bool = False
) -> None:
    """Check ``--method`` and resolve ``--device auto``.

    Sets ``args.methods`` (the list asked for, lower case) and ``args.method`` (its first).
    """
    if methods:
        asked = [m.strip().lower() for m in args.method.split(",") if m.strip()]
        if multiple and asked == ["all"]:
            asked = list(methods)
        if not multiple and len(asked) > 1:
            fail(f"--method takes one method; got {args.method!r}")
        unknown = [m for m in asked if m not in methods]
        if unknown or not asked:
            name = unknown[0] if unknown else args.method
            fail(f"unknown --method {name!r}; choose one of: {', '.join(methods)}")
        args.methods, args.method = list(dict.fromkeys(asked)), asked[0]
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but CUDA is not available; pass --device cpu")
    if args.device == "mps" and not has_mps:
        fail("--device mps but MPS is not available; pass --device cpu")


def offline_forced() -> bool:
    """Whether an environment variable forbids downloads."""
    return any(os.environ.get(name, "") not in ("", "0") for name in OFFLINE_ENVS)


def host_reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds."""
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # behind a proxy a direct probe says nothing; let the download try
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def torchvision_model(
    builder: Callable[..., nn.Module], weights: Any, pretrained: bool, **kwargs: Any
) -> tuple[nn.Module, bool]:
    """A torchvision model in eval mode and whether it has its pretrained ``weights``.

    The weights come from torch.hub's cache or are downloaded (short timeout). When that is not
    possible, or with ``pretrained=False``, the model gets random weights (its backbone too) and
    a note says so.
    """
    name = builder.__name__
    if pretrained:
        cached = (
            Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
        ).is_file()
        if not cached and (offline_forced() or not host_reachable(urlparse(weights.url).netloc)):
            why = "downloads are off" if offline_forced() else "there is no network"
            random_weights_note(
                f"{why} and the {name} weights are not cached",
                "run once online to download them, or pass --no-pretrained",
            )
        else:
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                return builder(weights=weights, **kwargs).eval(), True
            except Exception as error:  # network failures come in many types
                random_weights_note(f"could not load the {name} weights ({type(error).__name__})")
            finally:
                socket.setdefaulttimeout(previous)
    else:
        random_weights_note("--no-pretrained")
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs["weights_backbone"] = None  # else the backbone's ImageNet weights are fetched
    return builder(weights=None, **kwargs).eval(), False


def load_rgb(image_path: str | None, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """The image as float32 RGB in [0, 1], resized to ``size`` (side or (width, height)).

    Without a path: a generated image holding a disc and a square (224 pixels by default).
    """
    if not image_path:
        side = size if isinstance(size, int) else 224 if size is None else max(size)
        rgb = make_shapes_image(np.random.default_rng(0), classes=(0, 1), size=side)[0]
    else:
        if not os.path.isfile(image_path):
            fail(f"--image-path {image_path!r}: no such file")
        bgr = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if bgr is None:
            fail(f"--image-path {image_path!r}: OpenCV cannot read it as an image")
        rgb = np.float32(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) / 255
    return resized(rgb, size)


def resized(rgb: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    """An RGB float image resized to ``size`` (side or (width, height); None: as it is)."""
    if size is not None:
        width, height = (size, size) if isinstance(size, int) else size
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def resize_map(grayscale_cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A map in [0, 1] resized bilinearly to ``height`` x ``width``."""
    grayscale_cam = np.float32(grayscale_cam)
    if grayscale_cam.shape != (height, width):
        grayscale_cam = cv2.resize(grayscale_cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(grayscale_cam, 0, 1)


def overlay(image: np.ndarray, grayscale_cam: np.ndarray) -> np.ndarray:
    """The map over the image, at the image's own size (the map of the model's input size is
    resized to it first): an RGB uint8 picture."""
    return show_cam_on_image(image, resize_map(grayscale_cam, *image.shape[:2]), use_rgb=True)


def panel_size(image: np.ndarray, height: int) -> tuple[int, int]:
    """(width, height) of a panel ``height`` pixels high with the image's aspect ratio."""
    return max(1, round(height * image.shape[1] / image.shape[0])), height


def titled(picture: np.ndarray, title: str) -> np.ndarray:
    """An RGB uint8 picture with ``title`` in a white strip above it."""
    strip = np.full((22, picture.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, picture])


def save_rgb(output_dir: str | Path, name: str, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 picture as ``output_dir/name`` (created if needed) and say so."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"--output-dir {str(out)!r}: {error.strerror or error}")
    path = out / name
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        fail(f"could not write {path}")
    print(f"wrote {path}")
    return path


def one_line(error: BaseException) -> str:
    """An exception's message on one line (for ``fail``)."""
    return " ".join(str(error).split())[:300]


def prepare_hub() -> None:
    """Before ``transformers`` / ``huggingface_hub`` are imported: with downloads off or no route
    to the hub, use only the local cache (no retries against a dead network)."""
    if offline_forced() or not host_reachable("huggingface.co"):
        os.environ["HF_HUB_OFFLINE"] = "1"


def hub_model(
    name: str, pretrained: bool, load: Callable[[], Any], build_random: Callable[[], Any]
) -> tuple[Any, bool]:
    """``load()`` (pretrained, from the hub or its cache) or, when that fails or with
    ``pretrained=False``, ``build_random()`` with a note; and whether it is pretrained."""
    if not pretrained:
        random_weights_note("--no-pretrained: a small model of the same family")
        return build_random(), False
    try:
        return load(), True
    except Exception as error:  # no network / not cached: many exception types
        random_weights_note(
            f"{name} is not cached and could not be downloaded ({type(error).__name__}): "
            "a small model of the same family",
            "run once online to download it, or pass --no-pretrained",
        )
        return build_random(), False


def require(module: str, package: str | None = None) -> Any:
    """Import ``module``, or fail saying how to install it (``package`` on PyPI)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        fail(
            f"this example needs {package or module}: pip install {package or module} "
            "(or, in a clone of this repository, pip install -e '.[examples]')"
        )

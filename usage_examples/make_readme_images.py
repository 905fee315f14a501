"""Draw the pictures of README.md into docs/images/ (offline and deterministic).

Usage::

    python usage_examples/make_readme_images.py [--output-dir docs/images] [--seed 0]

Everything comes from the bundled demo: a generated 64x64 image holding a disc and a square
(the same image as ``python cam.py --demo`` with the same seed) and the small CNN trained to
find both shapes. Images are upscaled to 192 pixels for readability (nearest neighbour for
the image, bilinear for the maps).

Writes:
    shapes.png       the 64x64 input image itself (read by the README's Python example);
    two_classes.png  the image, then Grad-CAM for "circle" and for "square";
    methods.png      one column per method, one row per class;
    smoothing.png    Grad-CAM for "square": plain, aug_smooth, eigen_smooth, both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

import pytorch_grad_cam
from pytorch_grad_cam import BaseCAM, GradCAM
from pytorch_grad_cam.demo import DEMO_CLASSES, load_demo_model, make_shapes_image
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

PANEL = 192  # side of every picture, in pixels
HEADER = 24  # height of the title strip above each picture
# Methods of the comparison figure (class names in pytorch_grad_cam).
METHODS = [
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenCAM",
    "ScoreCAM",
    "AblationCAM",
]


def titled(picture: np.ndarray, title: str) -> np.ndarray:
    """An RGB uint8 picture with a white strip holding ``title`` above it."""
    strip = np.full((HEADER, picture.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, picture])


def upscale_image(rgb: np.ndarray) -> np.ndarray:
    """The float RGB image at PANEL x PANEL pixels (nearest neighbour: pixels stay visible)."""
    return cv2.resize(rgb, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)


def overlay(rgb: np.ndarray, grayscale_cam: np.ndarray, title: str) -> np.ndarray:
    """The map (bilinearly upscaled) blended over the upscaled image, titled."""
    mask = cv2.resize(grayscale_cam, (PANEL, PANEL), interpolation=cv2.INTER_LINEAR)
    return titled(show_cam_on_image(upscale_image(rgb), np.clip(mask, 0, 1), use_rgb=True), title)


def image_panel(rgb: np.ndarray, title: str) -> np.ndarray:
    """The upscaled input image, titled."""
    return titled(np.uint8(255 * upscale_image(rgb)), title)


def grid(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Panels laid out in rows, separated by white gaps."""

    def join(panels: list[np.ndarray], axis: int) -> np.ndarray:
        shape = list(panels[0].shape)
        shape[axis] = gap
        spacer = np.full(shape, 255, dtype=np.uint8)
        parts = [p for panel in panels for p in (panel, spacer)][:-1]
        return np.concatenate(parts, axis=axis)

    return join([join(row, axis=1) for row in rows], axis=0)


def compute(
    cam_class: type[BaseCAM], model: torch.nn.Module, x: torch.Tensor, **kwargs: bool
) -> np.ndarray:
    """Maps (2, H, W) of ``cam_class`` for both classes of the one image in ``x``."""
    targets = [ClassifierOutputTarget(k) for k in range(len(DEMO_CLASSES))]
    with cam_class(model=model, target_layers=[model.target_layer]) as cam:
        if hasattr(cam, "progress"):
            cam.progress = False
        return cam(x.repeat(len(targets), 1, 1, 1), targets=targets, **kwargs)


def save(path: Path, picture: np.ndarray) -> None:
    """Write an RGB uint8 picture as PNG and say so."""
    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(__file__).resolve().parents[1] / "docs" / "images"
    parser.add_argument("--output-dir", type=Path, default=default_dir)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated image")
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    model = load_demo_model()
    rgb, _, _ = make_shapes_image(np.random.default_rng(args.seed), classes=(0, 1))
    x = torch.from_numpy(rgb.transpose(2, 0, 1))[None]
    save(args.output_dir / "shapes.png", np.uint8(np.round(255 * rgb)))

    maps = compute(GradCAM, model, x)
    panels = [image_panel(rgb, "image")]
    panels += [overlay(rgb, m, f"GradCAM: {name}") for m, name in zip(maps, DEMO_CLASSES)]
    save(args.output_dir / "two_classes.png", grid([panels]))

    rows = [[image_panel(rgb, f"target: {name}")] for name in DEMO_CLASSES]
    for name in METHODS:
        for row, grayscale_cam in zip(rows, compute(getattr(pytorch_grad_cam, name), model, x)):
            row.append(overlay(rgb, grayscale_cam, name))
    save(args.output_dir / "methods.png", grid(rows))

    square = DEMO_CLASSES.index("square")
    variants = {
        "plain": {},
        "aug_smooth": {"aug_smooth": True},
        "eigen_smooth": {"eigen_smooth": True},
        "aug + eigen": {"aug_smooth": True, "eigen_smooth": True},
    }
    panels = [image_panel(rgb, "image")]
    for title, kwargs in variants.items():
        panels.append(overlay(rgb, compute(GradCAM, model, x, **kwargs)[square], title))
    save(args.output_dir / "smoothing.png", grid([panels]))


if __name__ == "__main__":
    main()

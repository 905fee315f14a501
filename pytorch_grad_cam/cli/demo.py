"""``--demo``: the bundled shapes model, fully offline. One generated image side by side with
the map of each class, or (``--num-images N``) a dataset run on N generated images with how
well the maps sit on the asked shape."""

from __future__ import annotations

import argparse
import json
from typing import Any

import cv2
import numpy as np
import torch

from pytorch_grad_cam.cli.dataset import Explainer, ImageFile, run_dataset
from pytorch_grad_cam.cli.models import (
    layer_names,
    make_cam,
    model_explainer,
    pick_categories,
    run_cam,
)
from pytorch_grad_cam.cli.output import OutputDir
from pytorch_grad_cam.demo.model import load_demo_model
from pytorch_grad_cam.demo.shapes import DEMO_CLASSES, make_shapes_image
from pytorch_grad_cam.utils.image import show_cam_on_image

IMAGES_DIR = "demo_images"


def explain_demo(
    args: argparse.Namespace, out: OutputDir, cam_class: type, device: torch.device
) -> None:
    """A generated image holding a circle and a square, and the map of each class, labelled,
    side by side. ``--target-category 0`` (circle) or ``1`` (square) keeps one class."""
    model = load_demo_model(device)
    image, masks, _ = make_shapes_image(np.random.default_rng(args.seed), classes=(0, 1))
    x = torch.from_numpy(image.transpose(2, 0, 1))[None].to(device)
    with torch.no_grad():
        probs = torch.sigmoid(model(x))[0].tolist()
    classes = pick_categories(args.target_category, [0, 1], len(DEMO_CLASSES))
    batch = x.repeat(len(classes), 1, 1, 1)
    layers = None if args.method == "fullgrad" else [model.target_layer]
    cam = make_cam(cam_class, model, layers, None, args.batch_size)
    maps = run_cam(args.method, cam, batch, classes, args)

    size = (256, 256)
    big = np.clip(cv2.resize(image, size, interpolation=cv2.INTER_NEAREST), 0, 1)
    panels = [label(np.uint8(255 * big), "input")]
    for c, grayscale_cam in zip(classes, maps):
        own = grayscale_cam[masks[c]].sum() / (grayscale_cam.sum() + 1e-7)
        other = grayscale_cam[masks[1 - c]].sum() / (grayscale_cam.sum() + 1e-7)
        name = DEMO_CLASSES[c]
        print(
            f"{name}: probability {probs[c]:.3f}; its map puts {own:.0%} of its mass on the "
            f"{name} ({masks[c].mean():.0%} of the image) and {other:.0%} on the "
            f"{DEMO_CLASSES[1 - c]}"
        )
        mask = np.clip(cv2.resize(grayscale_cam, size, interpolation=cv2.INTER_LINEAR), 0, 1)
        panels.append(label(show_cam_on_image(big, mask, use_rgb=True), f"{args.method}: {name}"))
    print(f"wrote {out.write_image(f'{args.method}_demo.jpg', np.hstack(panels))}")


def label(panel: np.ndarray, text: str) -> np.ndarray:
    """``panel`` with ``text`` written in its top-left corner (white on a dark band)."""
    panel = panel.copy()
    cv2.rectangle(panel, (0, 0), (panel.shape[1], 30), (0, 0, 0), -1)
    cv2.putText(panel, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return panel


def explain_generated_images(
    args: argparse.Namespace, out: OutputDir, cam_class: type, device: torch.device
) -> None:
    """A dataset run on ``--num-images`` generated images (each with a circle and a square;
    both classes explained unless ``--target-category`` says otherwise), then how well each
    class's maps localise its shape: the pointing game (the map's peak is on the shape) and
    the share of the map's energy inside the shape."""
    pick_categories(args.target_category, [0, 1], len(DEMO_CLASSES))
    images, masks = write_generated_images(args, out)
    model = load_demo_model(device)
    layers = None if args.method == "fullgrad" else [model.target_layer]
    cam = make_cam(cam_class, model, layers, None, args.batch_size)
    if not args.target_category:
        args.target_category = [0, 1]
    explainer = Explainer(
        method=args.method,
        model="demo",
        weights="bundled",
        explain=model_explainer(model, cam, args),
        probabilities=torch.sigmoid,  # multi-label: each logit says "this shape is present"
        class_names=DEMO_CLASSES,
        target_layers=layer_names(model, cam.target_layers),
        size=64,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    records = run_dataset(args, explainer, images, out, device, f"{args.method} on the demo")
    if records:
        scores = localisation(records, masks, out)
        for name, score in scores.items():
            print(
                f"{name}: pointing game {score['pointing_game']:.3f}, "
                f"{score['energy_inside']:.0%} of the map's energy inside the shape "
                f"({score['area']:.0%} of the image), {score['images']} images"
            )
        out.write_text("demo_localisation.json", json.dumps(scores, indent=2) + "\n")
        print(f"gallery: {out.path / 'index.html'}")


def write_generated_images(
    args: argparse.Namespace, out: OutputDir
) -> tuple[list[ImageFile], dict[str, dict[int, np.ndarray]]]:
    """The demo images (PNG files in ``demo_images/``) and their shapes' masks; image i is
    drawn from seed ``(--seed, i)``, so a rerun (or a resumed run) draws the same ones."""
    images, masks = [], {}
    for i in range(args.num_images):
        rgb, shape_masks, _ = make_shapes_image(np.random.default_rng([args.seed, i]), (0, 1))
        name = f"shapes_{i:05d}.png"
        path = out.path / IMAGES_DIR / name
        if not path.is_file():
            out.write_image(f"{IMAGES_DIR}/{name}", np.uint8(np.round(rgb * 255)))
        images.append(ImageFile(path, name))
        masks[name] = shape_masks
    return images, masks


def localisation(
    records: list[dict[str, Any]], masks: dict[str, dict[int, np.ndarray]], out: OutputDir
) -> dict[str, dict[str, Any]]:
    """Per class: pointing game, share of energy inside the shape, shape area, image count."""
    found: dict[int, list[tuple[float, float, float]]] = {}
    for record in records:
        if record.get("status") != "ok" or record["image"] not in masks:
            continue
        mask = masks[record["image"]][record["category"]]
        cam = load_map(out, record["map"])
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        energy = float((cam * mask).sum() / max(float(cam.sum()), 1e-12))
        found.setdefault(record["category"], []).append((float(mask[peak]), energy, mask.mean()))
    return {
        DEMO_CLASSES[c]: {
            "pointing_game": float(np.mean([v[0] for v in values])),
            "energy_inside": float(np.mean([v[1] for v in values])),
            "area": float(np.mean([v[2] for v in values])),
            "images": len(values),
        }
        for c, values in sorted(found.items())
    }


def load_map(out: OutputDir, relative: str) -> np.ndarray:
    path = out.path / relative
    if path.suffix == ".npy":
        return np.load(path)
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"cannot read the map {path}")
    return pixels.astype(np.float32) / 65535

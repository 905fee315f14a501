"""Synthetic images of discs and squares on a textured background, for offline demos.

Every image is drawn from a ``numpy.random.Generator``, so a seed fully determines it.
The background is drawn first and the shapes after it: an image with ``classes=()`` built
from the same seed is exactly the background of the image with shapes. Colours are random
per image and per shape, so only the outline tells the two classes apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DEMO_CLASSES: tuple[str, str] = ("circle", "square")
"""Class names: index 0 is a filled disc, index 1 a filled axis-aligned square."""

_MIN_HALF, _MAX_HALF = 6, 12  # disc radius / square half-side, in pixels at size 64
_MIN_CONTRAST = 0.3  # least RGB distance between a shape's colour and any background pixel under it


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random base colour plus low-frequency blotches and pixel noise, clipped to [0, 1]."""
    base = rng.uniform(0.15, 0.85, size=3)
    coarse = rng.normal(0.0, 0.08, size=(5, 5, 3))
    # Bilinear upsampling of the coarse grid gives smooth blotches.
    pos = np.linspace(0, 4, size)
    i0 = np.minimum(pos.astype(int), 3)
    f = (pos - i0)[:, None]
    rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]
    smooth = rows[:, i0] * (1 - f[None]) + rows[:, i0 + 1] * f[None]
    noise = rng.normal(0.0, 0.03, size=(size, size, 3))
    return np.clip(base + smooth + noise, 0.0, 1.0).astype(np.float32)


def _shape_mask(cls: int, cy: float, cx: float, half: float, size: int) -> np.ndarray:
    """Boolean mask of a disc (class 0) or square (class 1) centred at (cy, cx)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if cls == 0:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= half**2
    return (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)


def _place(rng: np.random.Generator, halves: Sequence[float], size: int) -> list:
    """Random centres for shapes of the given half-extents, kept apart by a few pixels."""
    for _ in range(1000):
        centres = [tuple(rng.uniform(h + 1, size - h - 1, size=2)) for h in halves]
        ok = all(
            np.hypot(a[0] - b[0], a[1] - b[1]) > 1.5 * (ha + hb) + 3
            for i, (a, ha) in enumerate(zip(centres, halves))
            for b, hb in zip(centres[i + 1 :], halves[i + 1 :])
        )
        if ok:
            return centres
    raise RuntimeError("could not place the shapes without overlap; use a larger image")


def make_shapes_image(
    rng: np.random.Generator, classes: Sequence[int] = (0, 1), size: int = 64
) -> tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """Draw one image holding one shape of each class in ``classes``.

    Args:
        rng: source of randomness; the same generator state gives the same image.
        classes: classes to draw (0 = circle, 1 = square), each at most once; may be empty.
        size: side of the square image in pixels (at least 48 recommended).

    Returns:
        ``(image, masks, labels)``: the float32 (size, size, 3) RGB image in [0, 1]; a dict
        mapping each class index (0 and 1, absent ones included) to its (size, size) bool
        mask; and the float32 multi-hot label vector of length 2.
    """
    classes = [int(c) for c in classes]
    if any(c not in (0, 1) for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct values among 0 and 1; got {classes}")
    image = _background(rng, size)
    scale = size / 64.0
    halves = [rng.uniform(_MIN_HALF, _MAX_HALF) * scale for _ in classes]
    # A disc's visible area is smaller than a square's of the same half-side: balance a bit.
    halves = [h * 1.12 if c == 0 else h for h, c in zip(halves, classes)]
    masks = {c: np.zeros((size, size), dtype=bool) for c in range(len(DEMO_CLASSES))}
    labels = np.zeros(len(DEMO_CLASSES), dtype=np.float32)
    for cls, half, (cy, cx) in zip(classes, halves, _place(rng, halves, size)):
        mask = _shape_mask(cls, cy, cx, half, size)
        under = image[mask]
        for _ in range(100):
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            if np.linalg.norm(under - colour, axis=1).min() >= _MIN_CONTRAST:
                break
        else:  # fall back to the colour opposite the background's mean
            colour = np.where(under.mean(axis=0) > 0.5, 0.0, 1.0).astype(np.float32)
        shading = rng.normal(0.0, 0.02, size=(int(mask.sum()), 3)).astype(np.float32)
        image[mask] = np.clip(colour + shading, 0.0, 1.0)
        masks[cls] = mask
        labels[cls] = 1.0
    return image, masks, labels


def make_shapes_batch(
    rng: np.random.Generator,
    n: int,
    classes: Sequence[int] | None = None,
    size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw a batch of images ready for :class:`~pytorch_grad_cam.demo.model.DemoCNN`.

    Args:
        rng: source of randomness.
        n: number of images.
        classes: classes drawn in every image; None picks per image one of: neither shape
            (10%), only the circle (25%), only the square (25%), both (40%).
        size: side of the images in pixels.

    Returns:
        ``(images, labels, masks)``: float32 (n, 3, size, size) images in [0, 1], float32
        (n, 2) multi-hot labels and bool (n, 2, size, size) masks.
    """
    choices = [(), (0,), (1,), (0, 1)]
    images, labels, masks = [], [], []
    for _ in range(n):
        cls = classes if classes is not None else choices[rng.choice(4, p=[0.1, 0.25, 0.25, 0.4])]
        img, m, lab = make_shapes_image(rng, cls, size)
        images.append(img.transpose(2, 0, 1))
        labels.append(lab)
        masks.append(np.stack([m[0], m[1]]))
    return (
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(labels)),
        torch.from_numpy(np.stack(masks)),
    )

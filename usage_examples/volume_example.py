"""CAMs of a 3-D CNN (Conv3d) on a volume: the maps are volumes too.

Usage::

    python usage_examples/volume_example.py [--method gradcam] [--train-steps 300]
        [--size 24] [--seed 0] [--device auto] [--output-dir output]

How it works:

1. Volumes of ``--size`` voxels a side are generated: noise holding a bright ball, a bright cube or
   both. A small 3-D CNN (Conv3d blocks, global average pooling, two outputs: "ball", "cube")
   is trained on them for ``--train-steps`` steps (a few seconds on a CPU; 0 keeps random
   weights, and then the maps have no meaning).
2. A CAM method treats (B, C, D, H, W) inputs like images: the target layer's output is
   (B, C, D', H', W'), and the maps come back as (B, D, H, W), resized trilinearly.
3. One batch explains a volume holding both shapes twice: once for "ball", once for "cube".

Writes into ``--output-dir``: ``{method}_volume.jpg`` (per class, the three orthogonal slices
through that shape's centre, with the map) and ``{method}_maps.npy`` (the (2, D, H, W) maps).
Prints how much of each map lies on its shape. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from example_utils import (  # noqa: E402
    cam_methods,
    check_args,
    example_parser,
    fail,
    one_line,
    random_weights_note,
    save_rgb,
    titled,
)

CLASSES = ("ball", "cube")
PANEL = 128  # side of each slice in the picture


def make_volume(
    rng: np.random.Generator, kinds: Sequence[int], size: int
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A noisy (size, size, size) volume holding one shape per entry of ``kinds`` (0 = ball,
    1 = cube), and each shape's boolean mask."""
    volume = rng.normal(0.0, 0.15, (size,) * 3).astype(np.float32)
    z, y, x = np.mgrid[0:size, 0:size, 0:size] + 0.5
    masks, centres = {}, []
    for kind in kinds:
        radius = rng.uniform(0.13, 0.2) * size
        for _ in range(100):  # keep the shapes apart
            centre = rng.uniform(radius + 1, size - radius - 1, 3)
            if all(np.linalg.norm(centre - c) > 2 * radius + 0.15 * size for c in centres):
                break
        centres.append(centre)
        dz, dy, dx = z - centre[0], y - centre[1], x - centre[2]
        if kind == 0:
            mask = dz**2 + dy**2 + dx**2 <= radius**2
        else:  # a cube of about the ball's volume
            half = 0.8 * radius
            mask = (np.abs(dz) <= half) & (np.abs(dy) <= half) & (np.abs(dx) <= half)
        volume[mask] += rng.uniform(0.6, 1.0)
        masks[kind] = mask
    return volume, masks


def make_batch(rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training volumes (n, 1, size, size, size) and their multi-hot labels (n, 2)."""
    volumes, labels = [], np.zeros((n, 2), np.float32)
    for i in range(n):
        kinds = [[0], [1], [0, 1]][rng.integers(3)]
        volumes.append(make_volume(rng, kinds, size)[0])
        labels[i, kinds] = 1
    return torch.from_numpy(np.stack(volumes))[:, None], torch.from_numpy(labels)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU()
    )


class VolumeCNN(nn.Module):
    """Three Conv3d blocks, global average pooling and a linear layer: (B, 1, D, H, W) -> (B, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(1, 8), _block(8, 16, stride=2), _block(16, 32))
        self.classifier = nn.Linear(32, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3, 4)))


def train(model: VolumeCNN, steps: int, size: int, seed: int, device: str) -> None:
    """Fit ``model`` to generated volumes (multi-label: is there a ball, is there a cube)."""
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        x, y = make_batch(rng, 16, size)
        loss = F.binary_cross_entropy_with_logits(model(x.to(device)), y.to(device))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    methods = list(cam_methods())
    parser = example_parser(
        __doc__.splitlines()[0], methods, "gradcam", image=False, pretrained=False
    )
    parser.add_argument("--train-steps", type=int, default=300, help="0: random weights")
    parser.add_argument("--size", type=int, default=24, help="side of the volumes in voxels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the volumes and weights")
    args = parser.parse_args(argv)
    check_args(args, methods)
    if args.train_steps < 0 or args.size < 16:
        fail("--train-steps must be at least 0 and --size at least 16")
    return args


def slices(volume: np.ndarray, grayscale_cam: np.ndarray, centre: Sequence[int]) -> np.ndarray:
    """The three orthogonal slices through ``centre`` with the map over them, side by side."""
    low, high = volume.min(), volume.max()
    scaled = (volume - low) / (high - low + 1e-7)
    panels = []
    for axis, title in enumerate(("axial (z)", "coronal (y)", "sagittal (x)")):
        image = np.take(scaled, centre[axis], axis=axis)
        mask = np.take(grayscale_cam, centre[axis], axis=axis)
        image = cv2.resize(np.float32(image), (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
        mask = cv2.resize(np.float32(mask), (PANEL, PANEL), interpolation=cv2.INTER_LINEAR)
        rgb = np.repeat(image[..., None], 3, axis=2)
        panels.append(titled(show_cam_on_image(rgb, np.clip(mask, 0, 1), use_rgb=True), title))
    return np.hstack(panels)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the example; ``argv`` defaults to the command line.

    Returns the maps (2, D, H, W), the shapes' masks and each map's share on its shape.
    """
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model = VolumeCNN().to(args.device)
    if args.train_steps:
        print(f"training on generated volumes for {args.train_steps} steps")
        train(model, args.train_steps, args.size, args.seed, args.device)
    else:
        random_weights_note("--train-steps 0")
    model.eval()

    volume, masks = make_volume(np.random.default_rng(args.seed + 1), (0, 1), args.size)
    x = torch.from_numpy(volume)[None, None].repeat(2, 1, 1, 1, 1).to(args.device)
    targets = [ClassifierOutputTarget(k) for k in range(len(CLASSES))]
    try:
        with cam_methods()[args.method](model, [model.features[-1]]) as cam:
            maps = cam(x, targets=targets)  # (2, D, H, W)
            probabilities = torch.sigmoid(cam.outputs[0]).tolist()
    except (ValueError, TypeError, RuntimeError) as error:
        fail(f"--method {args.method} failed: {one_line(error)}")

    rows, shares = [], {}
    for k, name in enumerate(CLASSES):
        share = float(maps[k][masks[k]].sum() / (maps[k].sum() + 1e-7))
        shares[name] = share
        print(
            f"{name}: probability {probabilities[k]:.3f}; its map puts {share:.0%} of its mass "
            f"on the {name} ({masks[k].mean():.1%} of the volume)"
        )
        centre = [int(round(c.mean())) for c in np.nonzero(masks[k])]
        rows.append(titled(slices(volume, maps[k], centre), f"{args.method}: {name}"))
    save_rgb(args.output_dir, f"{args.method}_volume.jpg", np.vstack(rows))
    path = Path(args.output_dir) / f"{args.method}_maps.npy"
    np.save(path, maps)
    print(f"wrote {path}")
    return {"maps": maps, "masks": masks, "shares": shares}


if __name__ == "__main__":
    main()

"""Throughput of a dataset run of the ``grad-cam`` command against plain inference.

A folder of 256 generated JPEG images at 224 px, ResNet-50 (random weights), batch 32:

  * plain: a no-grad inference loop that only decodes (the same DataLoader, workers and
    preprocessing as the command) and classifies;
  * grad-cam: ``grad-cam --image-path DIR --method gradcam``, maps (16-bit PNG), overlays and
    thumbnails written, the manifest and the gallery;

measured interleaved (medians), as images per second and their ratio (the target is >= 0.8).
Then the same command under ``torchrun --nproc-per-node 2`` (one thread each) against one
process with two threads, in subprocesses.

    python benchmarks/bench_dataset.py [--threads 2] [--repeats 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.models import resnet50

from pytorch_grad_cam.cli import main as grad_cam
from pytorch_grad_cam.cli.dataset import ImageDataset, find_images
from pytorch_grad_cam.utils.image import IMAGENET_MEAN, IMAGENET_STD

IMAGES, BATCH = 256, 32


def make_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        img = np.full((224, 224, 3), rng.integers(0, 255, 3), np.uint8)
        centre = tuple(int(v) for v in rng.integers(40, 184, 2))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, centre, int(rng.integers(20, 60)), colour, -1)
        noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"img{i:03d}.jpg"), noisy)
    return root


def plain_loop(folder: Path, workers: int):
    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    images = find_images([str(folder)])

    def run() -> None:
        dataset = ImageDataset(images, 224, IMAGENET_MEAN, IMAGENET_STD)
        loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=list)
        with torch.no_grad():
            for batch in loader:
                model(torch.stack([b[1] for b in batch])).argmax(dim=1).tolist()

    return run


def command(folder: Path, out: Path, workers: int):
    args = ["--image-path", str(folder), "--model", "resnet50", "--weights", "none"]
    args += ["--batch-size", str(BATCH), "--workers", str(workers), "--no-progress"]

    def run() -> None:
        shutil.rmtree(out, ignore_errors=True)
        assert grad_cam([*args, "--output-dir", str(out)]) == 0

    return run


def medians(runners: dict, repeats: int) -> dict[str, float]:
    for run in runners.values():
        run()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def subprocess_seconds(
    folder: Path, out: Path, processes: int, threads: int, workers: int
) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTORCH_GRAD_CAM_OFFLINE": "1"}
    base = [sys.executable, "-m", "pytorch_grad_cam"]
    if processes > 1:
        base = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        base += ["--nproc-per-node", str(processes), "-m", "pytorch_grad_cam"]
    args = ["--image-path", str(folder), "--model", "resnet50", "--weights", "none"]
    args += ["--batch-size", str(BATCH), "--workers", str(workers), "--no-progress"]
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([*base, *args, "--output-dir", str(out)], check=True, env=env,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-torchrun", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "images")
        out = Path(tmp) / "out"
        times = medians(
            {
                "plain": plain_loop(folder, args.workers),
                "grad-cam": command(folder, out, args.workers),
            },
            args.repeats,
        )
        rate = {name: IMAGES / seconds for name, seconds in times.items()}
        print(
            f"CPU, {args.threads} threads, {args.workers} loader worker(s), median of "
            f"{args.repeats}: plain inference {rate['plain']:.1f} images/s; grad-cam dataset "
            f"run {rate['grad-cam']:.1f} images/s; ratio {rate['grad-cam'] / rate['plain']:.2f} "
            "(target >= 0.8)"
        )
        if args.skip_torchrun:
            return
        one = subprocess_seconds(folder, out, 1, args.threads, args.workers)
        two = subprocess_seconds(folder, out, 2, max(1, args.threads // 2), args.workers)
        print(
            f"whole command (startup included): 1 process x {args.threads} threads {one:.1f} s; "
            f"torchrun 2 processes x {max(1, args.threads // 2)} thread(s) {two:.1f} s; "
            f"ratio {one / two:.2f}"
        )


if __name__ == "__main__":
    main()

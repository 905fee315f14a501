"""Time and memory of the perturbation methods (ScoreCAM, AblationCAM).

Prints, measured interleaved in one run (medians):
  * ScoreCAM, ResNet-18 ``layer4[-1]``, 112 px, one image, ``batch_size=64``, over the time of
    512 plain ``torch.no_grad()`` forward passes in batches of 64 (the target is <= 1), with and
    without ``fast_scoring``;
  * AblationCAM, ResNet-50 ``layer4[-1]``, 224 px, one image, against a full forward pass per
    ablated channel (2048 channels in batches of ``batch_size``; the per-batch time is measured,
    ``--full-run`` also times the library's own full-pass fallback once);
  * ScoreCAM's peak resident memory above the loaded model (4 images, 112 px, ResNet-18
    ``layer4``, ``batch_size`` 16 (the default) and 64) over that of one plain no-grad forward
    pass of 64 such images (the target at ``batch_size=64`` is <= 1.2), each in a fresh
    subprocess. Twice: with glibc's default allocator settings (freed memory it keeps for reuse
    counts, so repeated batches inflate the figure) and with ``MALLOC_MMAP_THRESHOLD_=65536``
    (large blocks go back to the system when freed: the memory actually in use).

    python benchmarks/bench_perturbation.py [--threads 2] [--repeats 5] [--full-run]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
from bench_gradient_methods import _peak_rss_during  # (this folder is on sys.path)
from torchvision.models import resnet18, resnet50

from pytorch_grad_cam import AblationCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

TARGETS = [ClassifierOutputTarget(281)]


def median_times(runners: dict, repeats: int) -> dict:
    """Median seconds of each zero-argument callable, interleaved so noise hits all alike."""
    for run in runners.values():  # warm-up
        run()
    samples = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def forward_batches(model: torch.nn.Module, x: torch.Tensor, count: int):
    def run():
        with torch.no_grad():
            for _ in range(count):
                model(x)

    return run


def cam_runner(cam, x: torch.Tensor):
    def run():
        cam(x, TARGETS)
        cam.release()

    return run


def bench_score_cam(repeats: int) -> None:
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    x = torch.rand(1, 3, 112, 112)
    cam = ScoreCAM(model, [model.layer4[-1]], batch_size=64, progress=False)
    plain = ScoreCAM(model, [model.layer4[-1]], batch_size=64, progress=False, fast_scoring=False)
    times = median_times(
        {
            "ScoreCAM": cam_runner(cam, x),
            "plain": cam_runner(plain, x),
            "512 forwards": forward_batches(model, x.repeat(64, 1, 1, 1), 512 // 64),
        },
        repeats,
    )
    base = times["512 forwards"]
    print(
        f"ScoreCAM  ResNet-18 layer4[-1] 112px 1 image batch_size=64: {times['ScoreCAM']:.3f} s; "
        f"512 forwards (8 x 64): {base:.3f} s; ratio {times['ScoreCAM'] / base:.3f} "
        f"(target <= 1); with fast_scoring=False: ratio {times['plain'] / base:.3f}"
    )


def bench_ablation_cam(repeats: int, full_run: bool) -> None:
    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    x = torch.rand(1, 3, 224, 224)
    batch_size = 32
    cam = AblationCAM(model, [model.layer4[-1]], batch_size=batch_size, progress=False)
    batches = math.ceil(2048 / batch_size)
    times = median_times(
        {
            "AblationCAM": cam_runner(cam, x),
            "one forward batch": forward_batches(model, x.repeat(batch_size, 1, 1, 1), 1),
        },
        repeats,
    )
    naive = times["one forward batch"] * batches
    print(
        f"AblationCAM ResNet-50 layer4[-1] 224px 1 image batch_size={batch_size}: "
        f"{times['AblationCAM']:.3f} s ({cam.last_path} path); a full forward per channel: "
        f"{batches} x {times['one forward batch']:.3f} s = {naive:.1f} s; "
        f"speed-up {naive / times['AblationCAM']:.1f}x (target >= 100)"
    )
    if full_run:
        cam.split_model = False
        start = time.perf_counter()
        cam(x, TARGETS)
        cam.release()
        full = time.perf_counter() - start
        print(f"  library full-pass fallback, one run: {full:.1f} s ({cam.last_path} path)")


def peak_memory_mb(what: str) -> float:
    """Peak resident memory (MB) above the loaded model (sampled every 0.5 ms) of
    ``scorecam-<batch_size>`` (4 images) or ``forward-<n>`` (n no-grad forward passes of 64
    images in a row, inputs included)."""
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    if what.startswith("forward"):

        def run():
            with torch.no_grad():
                for _ in range(int(what.split("-")[1])):
                    model(torch.rand(64, 3, 112, 112))

        return _peak_rss_during(run) / 2**20
    x = torch.rand(4, 3, 112, 112)
    batch_size = int(what.split("-")[1])
    cam = ScoreCAM(model, [model.layer4], batch_size=batch_size, progress=False)
    return _peak_rss_during(lambda: cam(x, TARGETS)) / 2**20


def memory_in_subprocess(what: str, threads: int, mmap_threshold: bool) -> float:
    env = dict(os.environ)
    if mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, __file__, "--threads", str(threads), "--_memory-of", what]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-run", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--_memory-of", dest="memory_of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(peak_memory_mb(args.memory_of)))
        return
    print(f"CPU, {args.threads} threads, median of {args.repeats}")
    bench_score_cam(args.repeats)
    bench_ablation_cam(args.repeats, args.full_run)
    if args.skip_memory:
        return
    for mmap_threshold in (False, True):
        label = "MALLOC_MMAP_THRESHOLD_=65536" if mmap_threshold else "default allocator"
        forward = memory_in_subprocess("forward-1", args.threads, mmap_threshold)
        repeated = memory_in_subprocess("forward-32", args.threads, mmap_threshold)
        print(
            f"peak memory above ResNet-18 ({label}): one no-grad forward of 64 images at "
            f"112px {forward:.0f} MB; 32 of them in a row (what ScoreCAM runs at "
            f"batch_size=64) {repeated:.0f} MB = {repeated / forward:.2f}x"
        )
        for batch_size in (16, 64):
            peak = memory_in_subprocess(f"scorecam-{batch_size}", args.threads, mmap_threshold)
            print(
                f"  ScoreCAM layer4, 4 images 112px, batch_size={batch_size}: {peak:.0f} MB = "
                f"{peak / forward:.2f}x that forward"
                + (" (target <= 1.2)" if batch_size == 64 else "")
            )


if __name__ == "__main__":
    main()

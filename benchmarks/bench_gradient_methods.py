"""Time and memory of the gradient CAM methods against a plain no-grad forward pass.

Prints, for each method, median time / median time of ``torch.no_grad()`` forward on the same
model and batch (measured interleaved in one run), and the peak memory of batch 16 above the
model's inference peak (each measured in a fresh subprocess: CPU max-RSS, or CUDA
max_memory_allocated). "naive" is what the original library does: a forward pass with autograd
on and ``loss.backward()`` into every parameter. "numpy-override" is a GradCAM subclass written
against grad-cam's contract (``get_cam_weights`` in numpy): what the numpy bridge costs.

    python benchmarks/bench_gradient_methods.py [--device cpu|cuda] [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch
from torchvision.models import resnet50

import pytorch_grad_cam as pgc
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

METHODS = [
    "GradCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenCAM",
    "EigenGradCAM",
]


class NumpyGradCAM(pgc.GradCAM):
    """Grad-CAM weights written in numpy, as grad-cam users write overrides."""

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        return np.mean(grads, axis=(2, 3))


def make_runner(name: str, model: torch.nn.Module, x: torch.Tensor):
    """A zero-argument callable doing one measured unit of work."""
    targets = [ClassifierOutputTarget(281)]
    if name == "forward":

        def run():
            with torch.no_grad():
                model(x)

    elif name == "naive":

        def run():
            model.zero_grad(set_to_none=True)
            model(x)[:, 281].sum().backward()
            model.zero_grad(set_to_none=True)

    else:
        cls = NumpyGradCAM if name == "numpy-override" else getattr(pgc, name)
        cam = cls(model=model, target_layers=[model.layer4[-1]])

        def run():
            cam(input_tensor=x, targets=targets)
            cam.release()  # other runners share the model: leave no hooks behind

    return run


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_all(names, model, x, device, repeats):
    runners = {n: make_runner(n, model, x) for n in names}
    for run in runners.values():  # warm-up
        run()
    samples = {n: [] for n in names}
    for _ in range(repeats):
        for n, run in runners.items():  # interleaved, so machine noise hits all alike
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            samples[n].append(time.perf_counter() - start)
    return {n: statistics.median(s) for n, s in samples.items()}


def peak_memory(name: str, device: str, batch: int, size: int) -> float:
    """Peak memory (MB) of one unit of work above what was allocated before it."""
    model = resnet50(weights=None).to(device).eval()
    x = torch.rand(batch, 3, size, size, device=device)
    run = make_runner(name, model, x)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    run()  # warm-up, so one-off allocations do not count
    return _peak_rss_during(run) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_during(run) -> int:
    """Peak resident memory above the level before ``run`` (sampled every 0.5 ms)."""
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss() - base)
            time.sleep(0.0005)

    thread = threading.Thread(target=sample)
    thread.start()
    run()
    done.set()
    thread.join()
    return peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory-batch", type=int, default=16)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--_memory-of", dest="memory_of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(peak_memory(args.memory_of, args.device, args.memory_batch, args.size)))
        return

    torch.manual_seed(0)
    model = resnet50(weights=None).to(args.device).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    names = ["forward", "naive", *METHODS, "numpy-override"]
    times = time_all(names, model, x, args.device, args.repeats)
    print(
        f"ResNet-50, layer4[-1], batch {args.batch}, {args.size}px, {args.device}, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(f"{'method':<20}{'time s':>9}{'/ forward':>11}{'/ GradCAM':>11}")
    for n in names:
        print(
            f"{n:<20}{times[n]:>9.3f}{times[n] / times['forward']:>10.2f}x"
            f"{times[n] / times['GradCAM']:>10.2f}x"
        )
    if args.skip_memory:
        return
    kind = "CUDA allocated" if args.device == "cuda" else "resident memory"
    print(f"\npeak memory above the loaded model, batch {args.memory_batch} ({kind})")
    peaks = {}
    for n in ["forward", "naive", *METHODS]:
        cmd = [
            sys.executable,
            __file__,
            "--device",
            args.device,
            "--threads",
            str(args.threads),
            "--size",
            str(args.size),
            "--memory-batch",
            str(args.memory_batch),
            "--_memory-of",
            n,
        ]
        peaks[n] = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        )
        ratio = peaks[n] / max(peaks["forward"], 1e-9)
        print(f"{n:<20}{peaks[n]:>9.0f} MB{ratio:>9.2f}x forward")


if __name__ == "__main__":
    main()

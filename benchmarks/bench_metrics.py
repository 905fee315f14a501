"""Time of the faithfulness metrics against a plain no-grad forward pass of the same batch.

Uses ResNet-18 (random weights) and smooth random CAMs; prints the median time of one metric
call and its ratio to one forward pass of the batch (a metric needs several: ROAD combined
19, deletion/insertion n_steps + 1 per image).

    python benchmarks/bench_metrics.py [--device cpu|cuda] [--batch 8] [--size 224]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from pytorch_grad_cam.metrics import (
    CamMultImageConfidenceChange,
    DeletionCurve,
    InsertionCurve,
    ROADCombined,
    ROADMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(run, device: str, repeats: int) -> float:
    run()  # warm-up
    samples = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    model = resnet18(weights=None).to(device).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    coarse = torch.rand(args.batch, 1, 7, 7, device=device)
    cams = F.interpolate(coarse, size=(args.size, args.size), mode="bilinear")[:, 0]
    targets = [ClassifierOutputSoftmaxTarget(281)]

    def forward():
        with torch.no_grad():
            model(x)

    metrics = {
        "CamMultImageConfidenceChange": CamMultImageConfidenceChange(),
        "ROADMostRelevantFirst(80)": ROADMostRelevantFirst(80),
        "ROADCombined (9 percentiles)": ROADCombined(),
        "DeletionCurve(n_steps=50)": DeletionCurve(50),
        "InsertionCurve(n_steps=50)": InsertionCurve(50),
    }
    base = median_time(forward, device, args.repeats)
    print(f"ResNet-18, batch {args.batch}, {args.size}px, {device}, median of {args.repeats}")
    print(f"{'forward':<32}{base:>9.3f} s")
    for name, metric in metrics.items():
        t = median_time(lambda m=metric: m(x, cams, targets, model), device, args.repeats)
        print(f"{name:<32}{t:>9.3f} s{t / base:>9.1f}x forward")


if __name__ == "__main__":
    main()

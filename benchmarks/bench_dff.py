"""Deep Feature Factorization: the torch NMF against scikit-learn's NMF on the same activations.

Activations of ResNet-50 (random weights) at ``layer4[-1]`` and ``layer3[-1]`` for a batch,
one row per channel (as DFF factorises them); for each, the torch ``nmf`` (on ``--device``)
and ``sklearn.decomposition.NMF(init="random", random_state=0)`` (grad-cam 1.5.7's settings,
CPU, as many BLAS threads as torch has) are timed interleaved (medians of ``--repeats``), and
their reconstruction errors ||A - W H||_F compared.

    python benchmarks/bench_dff.py [--device cpu|cuda] [--batches 4 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.decomposition import NMF
from threadpoolctl import threadpool_limits
from torchvision.models import resnet50

from pytorch_grad_cam.feature_factorization.deep_feature_factorization import nmf


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def layer_rows(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's activations as (channels, images x positions), shifted non-negative."""
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    rows = seen[0].transpose(0, 1).flatten(1)
    return rows - rows.amin(dim=1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # scikit-learn's BLAS: the same number of threads
    torch.manual_seed(0)
    device = args.device
    model = resnet50(weights=None).to(device).eval()
    print(
        f"ResNet-50, {args.size}px, {args.threads} threads, torch on {device}, sklearn on the CPU"
    )
    print(f"{'batch':<6}{'layer':<11}{'A':>11}{'k':>4}{'torch s':>9}{'sklearn s':>10}", end="")
    print(f"{'speed-up':>9}{'error ratio':>12}")
    layers = [("layer4[-1]", model.layer4[-1]), ("layer3[-1]", model.layer3[-1])]
    for batch, (name, layer) in [(b, entry) for b in args.batches for entry in layers]:
        x = torch.rand(batch, 3, args.size, args.size, device=device)
        rows = layer_rows(model, layer, x)
        host = rows.cpu().numpy()
        for k in (5, 16):
            times: dict[str, list[float]] = {"torch": [], "sklearn": []}
            errors = {}
            for _ in range(args.repeats + 1):  # the first round is a warm-up
                sync(device)
                start = time.perf_counter()
                w, h = nmf(rows, k)
                sync(device)
                times["torch"].append(time.perf_counter() - start)
                errors["torch"] = float((rows - w @ h).norm())
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
                    reference = NMF(n_components=k, init="random", random_state=0)
                    w_ref = reference.fit_transform(host)
                times["sklearn"].append(time.perf_counter() - start)
                errors["sklearn"] = float(np.linalg.norm(host - w_ref @ reference.components_))
            t_torch = statistics.median(times["torch"][1:])
            t_sklearn = statistics.median(times["sklearn"][1:])
            shape = "x".join(str(n) for n in rows.shape)
            print(
                f"{batch:<6}{name:<11}{shape:>11}{k:>4}{t_torch:>9.3f}{t_sklearn:>10.3f}"
                f"{t_sklearn / t_torch:>8.1f}x{errors['torch'] / errors['sklearn']:>12.4f}"
            )


if __name__ == "__main__":
    main()

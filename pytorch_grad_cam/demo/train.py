"""Train the demo CNN (:class:`~pytorch_grad_cam.demo.model.DemoCNN`) from scratch on shapes.

Usage: ``python -m pytorch_grad_cam.demo.train [--out PATH] [--steps N] [--seed S]``.

The task is multi-label (``BCEWithLogitsLoss``): each image holds a disc, a square, both or
neither, so logit k learns "shape k is present". A second loss term, weighted by
``presence_weight``, asks the same of every position: the classifier applied to the feature
vector at a position (the class activation map, of which the logit is the mean) must say
whether shape k covers that position (from the generator's masks). So the model decides from
the shapes themselves, and a class-k CAM lights up shape k: a demo whose right answer is
known. Fresh images are drawn for every step; a run takes a couple of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytorch_grad_cam.demo.model import WEIGHTS_PATH, DemoCNN
from pytorch_grad_cam.demo.shapes import make_shapes_batch


@torch.no_grad()
def presence_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose every label (shape present or not) is predicted right."""
    model.eval()
    pred = torch.cat([model(x) for x in images.split(256)]) > 0
    return (pred == labels.bool()).all(dim=1).float().mean().item()


def train(
    steps: int = 600,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-3,
    presence_weight: float = 0.5,
) -> DemoCNN:
    """Train a fresh model; returns it in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DemoCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for step in range(steps):
        model.train()
        x, y, masks = make_shapes_batch(rng, batch_size)
        features = model.features(x)
        logits = model.classifier(model.pool(features).flatten(1))
        loss = F.binary_cross_entropy_with_logits(logits, y)
        if presence_weight:
            head = model.classifier
            class_map = torch.einsum("bchw,kc->bkhw", features, head.weight)
            class_map = class_map + head.bias[None, :, None, None]
            covered = F.adaptive_avg_pool2d(masks.float(), features.shape[-2:]) > 0.5
            presence = F.binary_cross_entropy_with_logits(class_map, covered.float())
            loss = loss + presence_weight * presence
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    return model.eval()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train the demo CNN from scratch on generated shapes."
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="state_dict path")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.perf_counter()
    model = train(steps=args.steps, seed=args.seed)
    elapsed = time.perf_counter() - start
    x_tr, y_tr, _ = make_shapes_batch(np.random.default_rng(args.seed + 1), 1000)
    x_va, y_va, _ = make_shapes_batch(np.random.default_rng(args.seed + 2), 1000)
    print(f"trained in {elapsed:.0f} s")
    print(f"train accuracy {presence_accuracy(model, x_tr, y_tr):.3f}")
    print(f"val accuracy   {presence_accuracy(model, x_va, y_va):.3f}")
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
